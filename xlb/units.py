"""Numbers for people: one spelling of k/M/G and of ages everywhere (CLI, demo, console)."""

from __future__ import annotations


def human(n: float) -> str:
    """12 -> "12", 1234 -> "1.2k", 5.6e6 -> "5.6M"; 999.96 -> "1.0k" (the unit is chosen
    after rounding, so a number never shows as "1000" or "1000.0k")."""
    for unit in ("", "k", "M", "G", "T"):
        digits = 0 if unit == "" else 1
        if abs(round(n, digits)) < 1000:
            return f"{n:.{digits}f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def ago(seconds: float) -> str:
    """A short age: 42s, 5m, 3h, 2d."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"
