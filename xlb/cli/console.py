"""The live operations console (Textual): every agent found, or the sockets given.

It only talks to agents through their API; quitting never changes the load
balancer. --web serves the same app to a browser (textual-serve).

examples:
  xlb console
  xlb console --socket /run/xlb/lb1.sock --socket /run/xlb/lb2.sock
  xlb console --read-only --theme xlb-high-contrast
  xlb console --web --port 8000
"""

from __future__ import annotations

import argparse

from xlb.cli import completion


def add_arguments(p: argparse.ArgumentParser) -> None:
    completion.attach(p.add_argument(
        "--socket", action="append", metavar="PATH",
        help="agent socket; repeat for a fleet (default: every one in /run/xlb)"),
        completion.sockets)
    p.add_argument("--read-only", action="store_true", help="show everything, change nothing")
    p.add_argument("--theme", help="xlb-dark (default), xlb-light, xlb-high-contrast")
    p.add_argument("--web", action="store_true",
                   help="serve the console to a browser instead (textual-serve)")
    p.add_argument("--host", default="127.0.0.1", help="with --web (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="with --web (default 8000)")


def run(args: argparse.Namespace) -> int:
    from console.main import run as run_console  # the only place xlb imports the console

    return run_console(args.socket, args.read_only, args.theme, args.web, args.host, args.port)


def open_console(sockets: list[str], theme: str | None) -> None:
    """The console on `sockets` in this terminal, until it quits (for `xlb demo`)."""
    from console.main import run as run_console

    run_console(sockets, False, theme, False)
