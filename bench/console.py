"""Console CPU use: `xlb console` in a real terminal (tmux), per view, at two sizes.

Runs the console as a separate process against AgentDouble (the test double
of the agent, tests/agent_double.py) at one snapshot per second, and reads
the console process's CPU time with psutil over a window, per view:

  lab size:   3 backends x 2 VIPs, 4 RX queues
  large:      1000 backends x 2 VIPs, 64 RX queues

With --lab it also measures against the running lab's real agent (start it
with `xlb lab up` and some traffic). Prints figures; asserts nothing.

    .venv/bin/python bench/console.py [--seconds 20] [--lab]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.agent_double import AgentDouble  # noqa: E402

VIEW_KEYS = {"overview": "1", "backends": "2", "drops": "3", "probes": "6"}
SIZE = (160, 48)


def measure(socket_path: str, seconds: float, label: str) -> None:
    session = f"xlb-bench-{os.getpid()}"
    xlb = str(Path(sys.executable).with_name("xlb"))
    conf = tempfile.mkdtemp(prefix="xlb-bench-")
    cmd = f"env XDG_CONFIG_HOME={conf} {xlb} console --socket {socket_path}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(SIZE[0]), "-y",
                    str(SIZE[1]), cmd], check=True)
    try:
        pane_pid = int(subprocess.run(["tmux", "list-panes", "-t", session, "-F",
                                       "#{pane_pid}"], capture_output=True, text=True,
                                      check=True).stdout.split()[0])
        proc = psutil.Process(pane_pid)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window per view")
    ap.add_argument("--lab", action="store_true", help="also measure against the lab's agent")
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("bench/console.py needs tmux (scripts/bootstrap installs it)")
    print(f"xlb console CPU, {SIZE[0]}x{SIZE[1]} terminal (tmux), one snapshot per second, "
          f"{args.seconds:.0f} s per view", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
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
