"""The options of the lab's traffic generator, spelled once: `xlb lab traffic` shows and
checks them (help and completion without a lab), and the generator, run inside the
client namespace, parses the same. No imports beyond argparse, so `xlb --help` stays
fast."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(kind: Callable[[str], float], low: float,
            above: bool = False) -> Callable[[str], float]:
    """An argparse type: `kind(text)`, at least `low` (above it if `above`)."""
    def check(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if above else '>='} {low}")
        return value
    return check


# (option, type, default, help); every one but --json takes a value
VALUED: tuple[tuple[str, Callable[[str], float], float, str], ...] = (
    ("--rate", _number(float, 0, above=True), 50.0, "new TCP connections per second (default 50)"),
    ("--concurrency", _number(int, 1), 32, "connections open at once, at most (default 32)"),
    ("--duration", _number(float, 0), 0.0, "seconds (default 0: until stopped)"),
    ("--udp-every", _number(int, 0), 1, "a UDP query every N connections (default 1; 0: none)"),
    ("--v6-every", _number(int, 0), 4,
     "every Nth connection (and its UDP query) over IPv6 (default 4; 0: none)"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    for option, kind, default, help_ in VALUED:
        p.add_argument(option, type=kind, default=default, metavar="N", help=help_)
    p.add_argument("--json", action="store_true", help="only the final summary, as JSON")


def to_argv(args: argparse.Namespace) -> list[str]:
    """The generator's command line for options parsed by `add_arguments`."""
    out = [f"{option}={getattr(args, option[2:].replace('-', '_'))}"
           for option, *_ in VALUED]
    return out + (["--json"] if args.json else [])
