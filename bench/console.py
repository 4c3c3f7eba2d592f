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
with `xlb lab up` and some traffic). Prints figures; asserts nothing.

    .venv/bin/python bench/console.py [--seconds 20] [--lab] [--trace-only]
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


def start_console(socket_path: str, session: str, conf: str) -> psutil.Process:
    xlb = str(Path(sys.executable).with_name("xlb"))
    cmd = f"env XDG_CONFIG_HOME={conf} {xlb} console --socket {socket_path}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(SIZE[0]), "-y",
                    str(SIZE[1]), cmd], check=True)
    pane_pid = int(subprocess.run(["tmux", "list-panes", "-t", session, "-F", "#{pane_pid}"],
                                  capture_output=True, text=True, check=True).stdout.split()[0])
    return psutil.Process(pane_pid)


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


def measure(socket_path: str, seconds: float, label: str) -> None:
    session = f"xlb-bench-{os.getpid()}"
    conf = tempfile.mkdtemp(prefix="xlb-bench-")
    try:
        proc = start_console(socket_path, session, conf)
        time.sleep(4.0)  # start-up (imports, first snapshot) is not the steady state
        rss = proc.memory_info().rss
        for view, key in VIEW_KEYS.items():
            subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
            time.sleep(2.0)
            t0, c0 = time.monotonic(), proc.cpu_times()
            time.sleep(seconds)
            t1, c1 = time.monotonic(), proc.cpu_times()
            cpu = (c1.user - c0.user) + (c1.system - c0.system)
            print(f"{label:<34} {view:<9} {cpu / (t1 - t0) * 100:6.2f} % of a core   "
                  f"({cpu * 1000 / (t1 - t0):6.1f} ms per 1 s snapshot)", flush=True)
        rss = max(rss, proc.memory_info().rss)
        print(f"{label:<34} {'memory':<9} {rss / 2**20:6.1f} MiB RSS", flush=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        shutil.rmtree(conf, ignore_errors=True)


def measure_trace(d: AgentDouble, seconds: float, label: str) -> None:
    """The Flows view (key 5) while the double traces at its rate."""
    session = f"xlb-bench-trace-{os.getpid()}"
    conf = tempfile.mkdtemp(prefix="xlb-bench-")
    try:
        proc = start_console(d.path, session, conf)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window per view")
    ap.add_argument("--lab", action="store_true", help="also measure against the lab's agent")
    ap.add_argument("--trace-only", action="store_true", help="only the Flows view rows")
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("bench/console.py needs tmux (scripts/bootstrap installs it)")
    print(f"xlb console CPU, {SIZE[0]}x{SIZE[1]} terminal (tmux), one snapshot per second, "
          f"{args.seconds:.0f} s per view", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for label, rate, forward in (("flows: 10,000 events/s, all forwarded", 10_000, 0),
                                     ("flows: 10,000 events/s, forwarded 1,000/s", 10_000,
                                      1000)):
            d = AgentDouble(os.path.join(tmp, "trace.sock"), tick=1.0).start()
            d.tracer.rate, d.tracer.forward_rate = float(rate), forward
            d.tracer.start("", 3600, "bench")
            try:
                measure_trace(d, args.seconds, label)
            finally:
                d.stop()
        if args.trace_only:
            return
        for label, backends, queues in (("double: 3 backends, 4 queues", 3, 4),
                                        ("double: 1000 backends, 64 queues", 1000, 64)):
            d = AgentDouble(os.path.join(tmp, f"{backends}.sock"), backends=backends,
                            queues=queues, cpus=2, tick=1.0).start()
            try:
                measure(d.path, args.seconds, label)
            finally:
                d.stop()
    if args.lab:
        from xlb.paths import default_socket

        measure(default_socket("lb1"), args.seconds, "lab: the real lb1 agent")


if __name__ == "__main__":
    main()
