"""Benchmark the weighted Maglev table builder: build time, balance and disruption.

Run from anywhere as ``python bench/maglev.py`` (``--json`` for machine-readable output). For
M = 65537 and N = 10, 100, 1000 backends, with equal weights and with seeded random weights
1..100, it reports:

* build time: median of 7 builds, after one warm-up build (which also fills the per-ring-size
  caches of the clock, the visiting order and the log tables), wall clock and this thread's
  CPU time (on a shared machine the wall clock also counts waiting for a CPU), and the minor
  page faults per build (fresh numpy temporaries faulting in: a large, history-dependent
  share of the CPU time, as glibc's malloc adapts its mmap threshold as it goes);
* share error: the largest |share - w/W| / (w/W) over the backends, in percent, and the
  largest |entries - M*w/W| in entries (always < 1). The percentage is large only where the
  ideal itself is small: with N = 1000 and weights 1..100 a weight-1 backend's ideal is ~1.3
  entries, so rounding to 1 is already 23%;
* disruption: the fraction of entries whose backend changes when one backend is removed. The
  least possible is the removed backend's own share: 1/N with equal weights, w/W otherwise.
  Five backends spread through the list are removed in turn; the row shows the removal with the
  largest excess over its minimum.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlb.dataplane.maglev import (  # noqa: E402  (needs the sys.path line above)
    DEFAULT_RING_SIZE,
    build_table,
    disruption,
)

SIZES = (10, 100, 1000)
RUNS = 7
REMOVALS = 5


def backend_key(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def measure(n: int, weighting: str, m: int = DEFAULT_RING_SIZE) -> dict[str, object]:
    keys = [backend_key(i) for i in range(n)]
    if weighting == "equal":
        weights = [1] * n
    else:
        rng = random.Random(n)
        weights = [rng.randint(1, 100) for _ in range(n)]
    pool = list(zip(keys, weights, strict=True))

    table = build_table(pool, m)  # warm-up
    times, cpu, faults = [], [], []
    for _ in range(RUNS):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0, c0 = time.perf_counter(), time.thread_time()
        build_table(pool, m)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)

    total = sum(weights)
    held = [0] * n
    for i in table.tolist():
        held[i] += 1
    share_err = max(
        abs(h / m - w / total) / (w / total) for h, w in zip(held, weights, strict=True)
    )
    entry_err = max(abs(h - m * w / total) for h, w in zip(held, weights, strict=True))

    worst: dict[str, float] | None = None
    for victim in sorted({round(k * (n - 1) / (REMOVALS - 1)) for k in range(REMOVALS)}):
        rest = pool[:victim] + pool[victim + 1 :]
        moved = disruption(keys, table, [k for k, _ in rest], build_table(rest, m))
        floor = held[victim] / m
        if worst is None or moved - floor > worst["excess"]:
            worst = {"victim": victim, "moved": moved, "floor": floor, "excess": moved - floor}
    assert worst is not None

    return {
        "ring_size": m,
        "backends": n,
        "weights": weighting,
        "build_ms": statistics.median(times) * 1e3,
        "build_ms_min": min(times) * 1e3,
        "build_cpu_ms": statistics.median(cpu) * 1e3,
        "page_faults": statistics.median(faults),
        "max_share_error_pct": share_err * 100,
        "max_share_error_entries": entry_err,
        "removed_backend": worst["victim"],
        "disruption_pct": worst["moved"] * 100,
        "one_over_n_pct": 100 / n,
        "removed_share_pct": worst["floor"] * 100,
        "excess_pct": worst["excess"] * 100,
    }


def render(rows: list[dict[str, object]]) -> str:
    head = (
        f"{'N':>5}  {'weights':<11} {'build ms':>8}  {'cpu ms':>6}  {'faults':>6}  "
        f"{'share err %':>11}  "
        f"{'(entries)':>9}  "
        f"{'disrupt %':>9}  {'1/N %':>7}  {'min %':>7}  {'excess %':>8}"
    )
    lines = [
        f"Maglev table, M = {rows[0]['ring_size']}: build = median of {RUNS} (warm), wall "
        "and CPU; "
        f"disruption = worst excess of {REMOVALS} single removals",
        "(entries = worst |count - M*w/W|; min = removed backend's own share, the least any table",
        " can move, which is 1/N for equal weights; excess = disrupt - min)",
        "",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r['backends']:>5}  {r['weights']:<11} {r['build_ms']:>8.2f}  "
            f"{r['build_cpu_ms']:>6.2f}  {r['page_faults']:>6.0f}  "
            f"{r['max_share_error_pct']:>11.3f}  {r['max_share_error_entries']:>9.3f}  "
            f"{r['disruption_pct']:>9.3f}  "
            f"{r['one_over_n_pct']:>7.3f}  {r['removed_share_pct']:>7.3f}  "
            f"{r['excess_pct']:>8.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    rows = [measure(n, w) for n in SIZES for w in ("equal", "random1-100")]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
