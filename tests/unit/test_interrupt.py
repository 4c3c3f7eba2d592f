"""Ctrl-C that lands where Python ignores exceptions (an at-fork hook, as when pyroute2
forks during the lab's build) is not lost and prints no traceback. Run in a child
process: pytest replaces the hook that prints such exceptions."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

SCRIPT = """
import os, signal, sys
from xlb.errors import Interrupted
from xlb.lab import interrupt

armed = False

def signal_inside_the_hook():  # SIGINT while logging's after-fork hook runs
    if armed:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):  # the handler runs at one of these bytecodes, in the hook
            pass

os.register_at_fork(after_in_parent=signal_inside_the_hook)

class Broken:
    def __del__(self):
        raise ValueError("not a signal")

with interrupt.stopping():
    armed = True
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    armed = False
    os.waitpid(pid, 0)
    Broken()  # other ignored exceptions are still reported
    try:
        interrupt.check()
    except Interrupted as e:
        print("check:", e)
"""


def test_ctrl_c_in_an_at_fork_hook_is_kept_and_not_printed() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                       text=True, timeout=30)
    assert r.stdout == "check: interrupted (SIGINT)\n", (r.stdout, r.stderr)
    assert "signal_inside_the_hook" not in r.stderr, r.stderr
    assert "Interrupted" not in r.stderr, r.stderr
    assert "not a signal" in r.stderr  # only the unrelated one is reported
