"""How long `xlb --help`, each command's `-h` and one TAB take: the command line's start-up.

Run as ``python bench/cli.py`` (``--runs N``, ``--json``). Every figure is the wall time of
the real `xlb` command (the console script beside this interpreter, or ``python -m xlb``)
in a fresh process, next to the floor of a bare ``python -c pass``. The commands are run
round-robin, N rounds, so a machine whose load changes meanwhile skews them all alike;
the median and the minimum (the cost without interference) are printed. A TAB is `xlb`
answering the completion script for a command line, with no agent to ask. The target is
under 0.1 s for `xlb --help`; tests/unit/test_cli_help.py checks that no heavy library
(textual, numpy, bcc, pyroute2, prometheus_client) is imported to get there.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.unit.test_cli_help import command_paths  # noqa: E402  (after the sys.path line)

SCRIPT = Path(sys.executable).parent / "xlb"
XLB = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "xlb"]
TABS = ("xlb dr", "xlb drain --vip ")


def tab(line: str, run_root: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one TAB (the answer goes to fd 8, as in bash)."""
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line)), "_ARGCOMPLETE": "1",
           "_ARGCOMPLETE_SHELL": "bash", "XLB_RUN_ROOT": run_root}
    return ["bash", "-c", f"{shlex.join(XLB)} 8>/dev/null 9>/dev/null >/dev/null 2>&1"], env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="rounds (default 7)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as empty:
        runs: dict[str, tuple[list[str], dict[str, str] | None]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], None),
            "xlb --help": ([*XLB, "--help"], None)}
        paths = command_paths()
        for path in paths[1:]:
            runs[f"xlb {' '.join(path)} -h"] = ([*XLB, *path, "-h"], None)
        for line in TABS if ["completion"] in paths else ():  # (an xlb without completion)
            runs[f"TAB after {line!r}"] = tab(line, empty)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.runs):
            for name, (argv, env) in runs.items():
                start = time.perf_counter()
                subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=True)
                times[name].append(time.perf_counter() - start)
    figures = {name: {"median_ms": round(statistics.median(t) * 1000, 1),
                      "min_ms": round(min(t) * 1000, 1)} for name, t in times.items()}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"{args.runs} rounds ({' '.join(XLB)}; load average {os.getloadavg()[0]:.1f})")
    print(f"  {'':<30} {'median':>8} {'min':>8}")
    for name, f in figures.items():
        print(f"  {name:<30} {f['median_ms']:6.1f} ms {f['min_ms']:5.1f} ms")
    helps = [f["median_ms"] for name, f in figures.items() if name.endswith(("-h", "--help"))]
    print(f"slowest help (median): {max(helps):.1f} ms (target < 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
