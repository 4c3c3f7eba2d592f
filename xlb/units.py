"""Numbers for people: one spelling of k/M/G and of ages everywhere (CLI, demo, console)."""

from __future__ import annotations


def human(n: float) -> str:
    """12 -> "12", 1234 -> "1.2k", 5.6e6 -> "5.6M"."""
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def ago(seconds: float) -> str:
    """A short age: 42s, 5m, 3h, 2d."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
