"""Numbers for people: one spelling of k/M/G everywhere (CLI, demo, console)."""

from __future__ import annotations


def human(n: float) -> str:
    """12 -> "12", 1234 -> "1.2k", 5.6e6 -> "5.6M"."""
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"
