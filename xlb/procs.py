"""Processes xlb started (the lab's servers, agents and BIRD; an agent's ExaBGP) ended by
their PIDs, never by name.

One copy of "is it still there", "wait for it to end" and "SIGTERM, then SIGKILL", used
for every kind of process xlb starts, so none is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


def alive(pid: int) -> bool:
    try:  # reap it if it is our child (a zombie still answers kill 0)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ended(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` s for process `pid` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop(pid: int, timeout: float = 5.0) -> bool:
    """SIGTERM to `pid`, SIGKILL if it has not ended after `timeout` s (one that does not
    stop is not left behind); whether it was running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not ended(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        ended(pid, timeout)
    return True


def end(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM to a child we hold, SIGKILL if it has not ended after `timeout` s; reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
