"""The lab with real traffic, then the console on both LBs' agents (the README's main command).

Quitting the console stops the traffic and prints its summary; the lab keeps
running (`xlb console` opens it again, `xlb lab down` removes it). Without a
terminal (or with --no-console) it prints both LBs' figures every second instead.

examples:
  xlb demo
  xlb demo --rate 50 --duration 60 --no-console
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=0.0, help="seconds (0: until Ctrl-C)")
    p.add_argument("--rate", type=float, default=100.0, help="new TCP connections per second")
    p.add_argument("--no-console", action="store_true",
                   help="print live figures instead of opening the console")
    p.add_argument("--theme", help="console theme")


def run(args: argparse.Namespace) -> int:
    from xlb.cli.console import open_console
    from xlb.lab.demo import run_demo

    return run_demo(duration=args.duration, rate=args.rate,
                    console=None if not args.no_console else False, theme=args.theme,
                    open_console=open_console)
