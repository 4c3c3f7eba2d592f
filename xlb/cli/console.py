"""The live operations console (Textual): every agent found, or the sockets given.

It only talks to agents through their API; quitting never changes the load
balancer. --web serves the same app to a browser (textual-serve, in the optional
`xlb[web]` extra): read-only, on 127.0.0.1, unless asked otherwise. --web-operator
gives browsers operator rights, behind a secret printed at start (loopback only).

examples:
  xlb console
  xlb console --socket /run/xlb/lb1.sock --socket /run/xlb/lb2.sock
  xlb console --read-only --theme xlb-high-contrast
  xlb console --web --port 8000
  xlb console --web --web-operator
  xlb console --web --web-remote --host 0.0.0.0
"""

from __future__ import annotations

import argparse

from xlb.cli import completion
from xlb.errors import UsageError

WEB_HOST, WEB_PORT = "127.0.0.1", 8000


def add_arguments(p: argparse.ArgumentParser) -> None:
    completion.attach(p.add_argument(
        "--socket", action="append", metavar="PATH",
        help="agent socket; repeat for a fleet (default: every one in /run/xlb)"),
        completion.sockets)
    p.add_argument("--read-only", action="store_true", help="show everything, change nothing")
    p.add_argument("--theme", help="xlb-dark (default), xlb-light, xlb-high-contrast")
    p.add_argument("--web", action="store_true",
                   help="serve the console to a browser instead, read-only (needs xlb[web])")
    p.add_argument("--web-operator", action="store_true",
                   help="with --web: let browsers drain, undrain and set weights; each must "
                        "give the secret printed at start (loopback --host only)")
    p.add_argument("--web-remote", action="store_true",
                   help="with --web: allow a --host that is not a loopback address "
                        "(read-only; no TLS)")
    p.add_argument("--host", help=f"with --web (default {WEB_HOST})")
    p.add_argument("--port", type=int, help=f"with --web (default {WEB_PORT})")


def run(args: argparse.Namespace) -> int:
    from console.main import run as run_console  # the only place xlb imports the console

    if not args.web:
        given = [o for o, v in (("--web-operator", args.web_operator), ("--web-remote",
                 args.web_remote), ("--host", args.host), ("--port", args.port)) if v]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --web")
        return run_console(args.socket, args.read_only, args.theme, False)
    return run_console(args.socket, args.read_only, args.theme, True, args.host or WEB_HOST,
                       WEB_PORT if args.port is None else args.port, args.web_operator,
                       args.web_remote)


def open_console(sockets: list[str], theme: str | None) -> None:
    """The console on `sockets` in this terminal, until it quits (for `xlb demo`)."""
    from console.main import run as run_console

    run_console(sockets, False, theme, False)
