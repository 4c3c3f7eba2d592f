"""How long `xlb --help` and each command's `-h` take: the command line's start-up cost.

Run as ``python bench/cli.py`` (``--runs N``, ``--json``). Each figure is the median wall
time of N runs of the real `xlb` command (the console script beside this interpreter, or
``python -m xlb``) in a fresh process, next to the floor of a bare ``python -c pass``. The
target is under 0.1 s for `xlb --help`; tests/unit/test_cli_help.py checks that no heavy
library (textual, numpy, bcc, pyroute2, prometheus_client) is imported to get there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.unit.test_cli_help import command_paths  # noqa: E402  (after the sys.path line)

SCRIPT = Path(sys.executable).parent / "xlb"
XLB = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "xlb"]


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per figure (median)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    figures = {"python -c pass": median_seconds([sys.executable, "-c", "pass"], args.runs),
               "xlb --help": median_seconds([*XLB, "--help"], args.runs)}
    for path in command_paths()[1:]:
        figures[f"xlb {' '.join(path)} -h"] = median_seconds([*XLB, *path, "-h"], args.runs)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"median of {args.runs} runs each ({' '.join(XLB)})")
    for name, seconds in figures.items():
        print(f"  {name:<28} {seconds * 1000:6.1f} ms")
    print(f"slowest -h: {max(list(figures.values())[1:]) * 1000:.1f} ms (target < 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
