"""`xlb`: the command line. One module per command in this package; its docstring is
the command's help (with examples), `add_arguments` its grammar and `run` its body
(group commands such as `xlb lab` have one function per action instead).

One grammar everywhere (common.py spells each option once): what a command acts on
is positional (a backend's ADDRESS, a VIP's NAME); the VIP a backend is in is
`--vip NAME`; commands that ask the agent take `--socket PATH` and `--json`; a
drain or a removal asks first unless `--yes`; `--force` overrides the guard that
keeps a VIP from losing its last healthy backend.

Command modules import what they need inside `run`, so `xlb --help` stays fast (and
needs no agent or lab). Shell completion (completion.py) is argcomplete on this parser:
imported only when a shell asks.
Every failure xlb knows is an XlbError: printed as one line on stderr (never a
traceback) with the error's exit code (xlb.errors.ExitCode: 1 error, 2 usage, 3 agent
unreachable, 4 not permitted, 5 refused). Ctrl-C ends a command with 130 (an operation
that cleaned up after it says what it undid, as Interrupted).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from xlb import __version__, paths
from xlb.cli import common, completion
from xlb.errors import ConfigError, Interrupted, XlbError

# in the order `xlb --help` lists them
COMMANDS = ("demo", "console", "status", "vips", "backends", "drops", "explain", "drain",
            "undrain", "weight", "backend", "vip", "mode", "xdp-mode", "bgp", "audit", "probes",
            "trace", "agent", "dataplane", "lab", "completion")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xlb", description="XDP load balancer and its console",
                                epilog="`xlb COMMAND --help` shows a command's options and "
                                       f"examples.\n\n{paths.help_text()}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"xlb {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="one of these (`xlb COMMAND -h` for its options):")
    for name in COMMANDS:
        mod = importlib.import_module(f"xlb.cli.{name.replace('-', '_')}")
        cp = common.parser_for(sub, name, mod.__doc__, getattr(mod, "run", None))
        mod.add_arguments(cp)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    completion.answer(parser)  # a shell asking for completions: answered, and the end
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except XlbError as e:
        print(f"xlb: {report(e)}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:  # it says what it undid
        print(f"xlb: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        return 130


def report(e: XlbError) -> str:
    """The error as people read it: a ConfigError lists every problem on its own line."""
    return f"invalid config:\n{e}" if isinstance(e, ConfigError) else str(e)
