"""Console CPU use: `xlb console` in a real terminal (tmux), per view, at two sizes.

Runs the console as a separate process against AgentDouble (the test double
of the agent, tests/agent_double.py) at one snapshot per second, and reads
the console process's CPU time with psutil over a window, per view:

  lab size:   3 backends x 2 VIPs, 4 RX queues
  large:      1000 backends x 2 VIPs, 64 RX queues

Then the Flows view under a flow trace of 10,000 events/s, every one of them
forwarded to the console (no agent rate limit: the worst case), and again with
the agent's default forwarding limit of 1,000/s: the console's CPU, its memory
at the start and the end of the window (bounded: it must not grow), how far
behind the newest row on screen is (its time against the clock, read from
the terminal), the rate the view says it shows, and how long `?` takes to
open the help over it.

With --lab it also measures against the running lab's real agent (start it
with `xlb lab up` and some traffic). With --soak-minutes N it then runs the
console for N minutes at the large size (cycling through the views, or on one
with --soak-view) and prints its RSS and CPU every minute: memory must stay flat.

The console runs from this bench's source tree (PYTHONPATH), whatever the venv's
editable install points at; --tree DIR (repeatable) runs another checkout's
console instead, alternating the trees run by run (--runs) to compare commits
on a noisy machine. Prints figures; asserts nothing.

    .venv/bin/python bench/console.py [--seconds 20] [--lab] [--trace-only | --views-only]
        [--sizes lab,large] [--runs N] [--tree DIR ...] [--soak-minutes 10]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.agent_double import AgentDouble  # noqa: E402

VIEW_KEYS = {"overview": "1", "backends": "2", "drops": "3", "bgp": "4", "probes": "6"}
SIZE = (160, 48)
HERE = Path(__file__).resolve().parent.parent
# name: (backends per VIP, RX queues); 2 VIPs, 2 CPUs
SIZES = {"lab": (3, 4), "large": (1000, 64)}


def start_console(socket_path: str, session: str, conf: str,
                  tree: Path = HERE) -> psutil.Process:
    """`xlb console` of `tree` in a tmux session; its Python process."""
    cmd = (f"env XDG_CONFIG_HOME={conf} PYTHONPATH={tree} {sys.executable} -m xlb console "
           f"--socket {socket_path}")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(SIZE[0]), "-y",
                    str(SIZE[1]), "-c", str(tree), cmd], check=True)
    pane_pid = int(subprocess.run(["tmux", "list-panes", "-t", session, "-F", "#{pane_pid}"],
                                  capture_output=True, text=True, check=True).stdout.split()[0])
    pane = psutil.Process(pane_pid)
    for _ in range(50):  # the shell may run it as a child rather than exec it
        for p in (pane, *pane.children(recursive=True)):
            if "xlb" in p.cmdline():
                return p
        time.sleep(0.1)
    return pane


def screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True, check=True).stdout


ROW = re.compile(r"^\s*(\d\d):(\d\d):(\d\d)\.(\d{3})\s", re.MULTILINE)


def lag(text: str) -> float | None:
    """Seconds between now and the newest (first) row's time on screen (UTC)."""
    m = ROW.search(text)
    if m is None:
        return None
    now = datetime.datetime.now(datetime.UTC)
    shown = now.replace(hour=int(m[1]), minute=int(m[2]), second=int(m[3]),
                        microsecond=int(m[4]) * 1000)
    return (now - shown).total_seconds() % 86400


def measure(socket_path: str, seconds: float, label: str, tree: Path = HERE) -> None:
    session = f"xlb-bench-{os.getpid()}"
    conf = tempfile.mkdtemp(prefix="xlb-bench-")
    try:
        proc = start_console(socket_path, session, conf, tree)
        time.sleep(4.0)  # start-up (imports, first snapshot) is not the steady state
        rss = proc.memory_info().rss
        for view, key in VIEW_KEYS.items():
            subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
            time.sleep(2.0)
            t0, c0 = time.monotonic(), proc.cpu_times()
            time.sleep(seconds)
            t1, c1 = time.monotonic(), proc.cpu_times()
            cpu = (c1.user - c0.user) + (c1.system - c0.system)
            print(f"{label:<52} {view:<9} {cpu / (t1 - t0) * 100:6.2f} % of a core   "
                  f"({cpu * 1000 / (t1 - t0):6.1f} ms per 1 s snapshot)", flush=True)
        rss = max(rss, proc.memory_info().rss)
        print(f"{label:<52} {'memory':<9} {rss / 2**20:6.1f} MiB RSS", flush=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        shutil.rmtree(conf, ignore_errors=True)


def measure_trace(d: AgentDouble, seconds: float, label: str, tree: Path = HERE) -> None:
    """The Flows view (key 5) while the double traces at its rate."""
    session = f"xlb-bench-trace-{os.getpid()}"
    conf = tempfile.mkdtemp(prefix="xlb-bench-")
    try:
        proc = start_console(d.path, session, conf, tree)
        time.sleep(4.0)
        subprocess.run(["tmux", "send-keys", "-t", session, "5"], check=True)
        time.sleep(3.0)
        t0, c0 = time.monotonic(), proc.cpu_times()
        lags: list[float] = []
        rss = [proc.memory_info().rss]
        while time.monotonic() - t0 < seconds:
            value = lag(screen(session))
            if value is not None:
                lags.append(value)
            time.sleep(0.25)
            if time.monotonic() - t0 > len(rss) * seconds / 3:
                rss.append(proc.memory_info().rss)
        t1, c1 = time.monotonic(), proc.cpu_times()
        rss.append(proc.memory_info().rss)
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        text = screen(session)
        shown = re.search(r"([\d.]+k?)/s shown here", text)
        keys = []
        for _ in range(5):
            k0 = time.monotonic()
            subprocess.run(["tmux", "send-keys", "-t", session, "?"], check=True)
            while "Esc or ? closes" not in screen(session) and time.monotonic() - k0 < 10:
                time.sleep(0.01)
            keys.append(time.monotonic() - k0)
            subprocess.run(["tmux", "send-keys", "-t", session, "Escape"], check=True)
            time.sleep(0.5)
        lags.sort()
        mid = lags[len(lags) // 2] if lags else float("nan")
        worst = lags[-1] if lags else float("nan")
        print(f"{label:<44} {cpu / (t1 - t0) * 100:6.2f} % of a core, shown "
              f"{shown[1] if shown else '?'}/s, newest row {mid * 1000:4.0f} ms behind "
              f"(median; worst {worst * 1000:.0f} ms), RSS "
              f"{' -> '.join(f'{r / 2**20:.1f}' for r in rss)} MiB over {t1 - t0:.0f} s, "
              "`?` opens in "
              f"{min(keys) * 1000:.0f}-{max(keys) * 1000:.0f} ms", flush=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        shutil.rmtree(conf, ignore_errors=True)


def soak(socket_path: str, minutes: float, view: str, tree: Path = HERE) -> None:
    """The console for `minutes` at one snapshot per second, cycling through the views
    (view "cycle": 10 s each) or on one: RSS and CPU every minute, after a warm-up that
    has shown every view once (its widgets and caches made)."""
    session = f"xlb-bench-soak-{os.getpid()}"
    conf = tempfile.mkdtemp(prefix="xlb-bench-")
    keys = list(VIEW_KEYS.values()) if view == "cycle" else [VIEW_KEYS[view]]
    try:
        proc = start_console(socket_path, session, conf, tree)
        time.sleep(4.0)
        for key in VIEW_KEYS.values():
            subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
            time.sleep(2.0)
        t0, c0, rss0 = time.monotonic(), proc.cpu_times(), proc.memory_info().rss
        print(f"soak ({view}, {minutes:g} min)   minute  0: RSS {rss0 / 2**20:6.1f} MiB",
              flush=True)
        rss = [rss0]
        k, last, lc = 0, t0, c0
        while time.monotonic() - t0 < minutes * 60:
            subprocess.run(["tmux", "send-keys", "-t", session, keys[k % len(keys)]],
                           check=True)
            k += 1
            time.sleep(10.0)
            now = time.monotonic()
            if now - last >= 60 - 1e-3:
                c = proc.cpu_times()
                cpu = (c.user - lc.user) + (c.system - lc.system)
                rss.append(proc.memory_info().rss)
                print(f"soak ({view}, {minutes:g} min)   minute {(now - t0) / 60:2.0f}: RSS "
                      f"{rss[-1] / 2**20:6.1f} MiB, CPU {cpu / (now - last) * 100:5.2f} % of a "
                      "core", flush=True)
                last, lc = now, c
        c1 = proc.cpu_times()
        t1 = time.monotonic()
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        print(f"soak ({view}, {minutes:g} min)   RSS start {rss0 / 2**20:.1f} MiB, end "
              f"{rss[-1] / 2**20:.1f} MiB (min {min(rss) / 2**20:.1f}, max "
              f"{max(rss) / 2**20:.1f}), CPU {cpu / (t1 - t0) * 100:.2f} % of a core overall",
              flush=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        shutil.rmtree(conf, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window per view")
    ap.add_argument("--lab", action="store_true", help="also measure against the lab's agent")
    ap.add_argument("--trace-only", action="store_true", help="only the Flows view rows")
    ap.add_argument("--views-only", action="store_true", help="no Flows view (trace) rows")
    ap.add_argument("--sizes", default="lab,large", help="of " + ", ".join(
        f"{k} ({b} backends x 2 VIPs, {q} queues)" for k, (b, q) in SIZES.items()))
    ap.add_argument("--runs", type=int, default=1, help="repeat everything, alternating trees")
    ap.add_argument("--tree", action="append", type=Path,
                    help="the source tree whose console runs (repeat: alternate; default: "
                         "this bench's)")
    ap.add_argument("--soak-minutes", type=float, default=0.0,
                    help="then run the console this long at the large size, RSS every minute")
    ap.add_argument("--soak-view", default="cycle", choices=["cycle", *VIEW_KEYS],
                    help="cycle through the views (default) or stay on one")
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("bench/console.py needs tmux (scripts/bootstrap installs it)")
    trees = [t.resolve() for t in args.tree or [HERE]]
    print(f"xlb console CPU, {SIZE[0]}x{SIZE[1]} terminal (tmux), one snapshot per second, "
          f"{args.seconds:.0f} s per view", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for tree in trees:
                tag = "" if len(trees) == 1 and args.runs == 1 else (
                    f"[{tree.name} #{run + 1}] ")
                one_run(tmp, args, tree, tag)
        if args.soak_minutes > 0:
            backends, queues = SIZES["large"]
            d = AgentDouble(os.path.join(tmp, "soak.sock"), backends=backends, queues=queues,
                            cpus=2, tick=1.0).start()
            try:
                soak(d.path, args.soak_minutes, args.soak_view, trees[-1])
            finally:
                d.stop()


def one_run(tmp: str, args: argparse.Namespace, tree: Path, tag: str) -> None:
    if not args.views_only:
        for label, rate, forward in (("flows: 10,000 events/s, all forwarded", 10_000, 0),
                                     ("flows: 10,000 events/s, forwarded 1,000/s", 10_000,
                                      1000)):
            d = AgentDouble(os.path.join(tmp, "trace.sock"), tick=1.0).start()
            d.tracer.rate, d.tracer.forward_rate = float(rate), forward
            d.tracer.start("", 3600, "bench")
            try:
                measure_trace(d, args.seconds, tag + label, tree)
            finally:
                d.stop()
    if not args.trace_only:
        for size in args.sizes.split(","):
            backends, queues = SIZES[size]
            d = AgentDouble(os.path.join(tmp, f"{backends}.sock"), backends=backends,
                            queues=queues, cpus=2, tick=1.0).start()
            try:
                measure(d.path, args.seconds, f"{tag}double: {backends} backends, {queues} "
                        "queues", tree)
            finally:
                d.stop()
    if args.lab:
        from xlb.paths import default_socket

        measure(default_socket("lb1"), args.seconds, tag + "lab: the real lb1 agent", tree)


if __name__ == "__main__":
    main()
