"""Text drawing for the views: bars and sparklines as plain characters.

One Static of text lines is far cheaper to redraw than one widget per queue
or per backend, which matters at 64 queues and thousands of backends.
"""

from __future__ import annotations

from collections.abc import Sequence

from xlb.units import ago

# ago: one spelling, xlb.units
__all__ = ["ago", "bar", "clip", "endpoint", "one_line", "pct", "spark"]

SPARKS = "▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉█"


def spark(values: Sequence[float], width: int, top: float | None = None) -> str:
    """The last `width` values as a sparkline, scaled to `top` (default: their maximum)."""
    vals = list(values)[-width:] if width > 0 else []
    if not vals:
        return " " * max(width, 0)
    hi = max(vals) if top is None else top
    if hi <= 0:
        line = SPARKS[0] * len(vals)
    else:
        last = len(SPARKS) - 1
        line = "".join(SPARKS[min(last, max(0, round(v / hi * last)))] for v in vals)
    return line.rjust(width)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar `fraction` (0..1) of `width` cells, in eighths of a cell."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    out = "█" * full + (EIGHTHS[part] if part else "")
    return out.ljust(width)


def pct(x: float) -> str:
    return f"{x * 100:5.1f}%"


def endpoint(addr: str, port: int | None) -> str:
    """An address and port as people write them: 10.0.0.1:80, [fd00::1]:80 (no port: the
    address alone)."""
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port}" if port else host


def clip(text: str, n: int) -> str:
    """`text` in at most `n` cells: cut with an ellipsis when longer."""
    return text if len(text) <= n else text[: n - 1] + "…"


def one_line(text: str) -> str:
    """An error as one line: the first line of what the agent said."""
    return text.strip().splitlines()[0] if text.strip() else "failed"
