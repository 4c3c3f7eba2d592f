"""SIGTERM ends the agent's loop even when the loop's wake-up pipe is full.

asyncio's own signal handling learns of a signal through a byte written to the loop's
self-pipe; a burst of wake-ups from other threads (thousands of health events for the
subscribers) fills that pipe, and the byte, so the signal, is lost: the agent ignored
SIGTERM. The loop of xlb/agent/main.py runs here, in a process of its own, around a
stand-in agent (the loop is what is tested, not the data plane).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO

LOOP = r"""
import asyncio, os, signal, socket, sys, tempfile, threading, time
from types import SimpleNamespace
from xlb.agent import main

tmp = tempfile.mkdtemp()
settings = SimpleNamespace(socket=os.path.join(tmp, "a.sock"), socket_group="root",
                           operator_group="root", metrics="", tick=0.2, max_clients=16,
                           max_clients_per_user=4, client_idle_timeout=60.0,
                           client_send_timeout=10.0)
agent = SimpleNamespace(settings=settings, name="sig", listeners=[], metrics_port=0,
                        desired=SimpleNamespace(backend_addresses=lambda: (), vips=[]),
                        load_result={},
                        tick_failures=0, last={},
                        stopping=threading.Event(), health_targets=lambda: {},
                        report_health=lambda *a: None, close=lambda: None,
                        tick=lambda: {}, emit=lambda kind, doc: None)

async def fill_then_signal():
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    csock = loop._csock  # the write end of the loop's self-pipe
    try:
        while True:
            csock.send(b"\0")
    except BlockingIOError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)  # its wake-up byte finds the pipe full
    print("signalled", flush=True)

async def both():
    asyncio.get_running_loop().create_task(fill_then_signal())
    await main.run(agent)

asyncio.run(both())
print("stopped", agent.stopping.is_set(), flush=True)
"""


@pytest.mark.root
def test_sigterm_ends_the_loop_when_the_wakeup_pipe_is_full() -> None:
    started = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-c", LOOP], capture_output=True, text=True,
                           timeout=20, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"SIGTERM was lost: the loop still ran after 20 s\n{e.stdout!r}"
                             f"\n{e.stderr!r}") from None
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["signalled", "stopped True"], (r.stdout, r.stderr)
    assert time.monotonic() - started < 15
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # this process: untouched
