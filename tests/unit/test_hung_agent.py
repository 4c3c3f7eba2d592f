"""An agent that does not answer: every `xlb` command that asks it prints one clear line and
exits 1 within its timeout, never a traceback and never a hang, whichever way it fails
(connect, send, read, or an answer that makes no sense).

The fake agents are real processes on real Unix sockets.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO
from xlb.api.client import AgentClient
from xlb.errors import AgentUnavailable

FAKE_AGENT = r"""
import json, socket, sys, time
path, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(0)
print("ready", flush=True)
held = []
if mode == "no-accept":   # hung before accept: the listen queue fills up
    time.sleep(3600)
while True:
    c, _ = s.accept()
    held.append(c)
    if mode == "silent":     # reads nothing, answers nothing
        continue
    c.makefile("rb").readline()
    if mode == "chatty":     # never answers, but streams notifications
        while True:
            c.sendall(b'{"jsonrpc": "2.0", "method": "snapshot", "params": {}}\n')
            time.sleep(0.2)
    answer = {"bad-error": {"jsonrpc": "2.0", "id": 1, "error": "boom"},
              "no-result": {"jsonrpc": "2.0", "id": 1}}[mode]
    c.sendall(json.dumps(answer).encode() + b"\n")
"""

COMMANDS = [["vips"], ["backends", "--json"], ["audit"], ["drain", "10.0.1.1", "--yes"]]
TIMEOUT = 10.0  # the client's


@pytest.fixture
def fake_agent(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    path = str(tmp_path / "agent.sock")
    proc = subprocess.Popen([sys.executable, "-c", FAKE_AGENT, path, request.param],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        if request.param == "no-accept":  # fill the queue: the next connect finds it full
            fillers = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(4)]
            for f in fillers:
                f.setblocking(False)
                try:
                    f.connect(path)
                except BlockingIOError:
                    pass
        yield path
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("fake_agent", ["silent", "no-accept", "chatty", "bad-error",
                                        "no-result"], indirect=True)
def test_every_command_says_one_line_when_the_agent_does_not_answer(fake_agent: str) -> None:
    started = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "xlb", *cmd, "--socket", fake_agent],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
             for cmd in COMMANDS]
    try:
        results = [p.communicate(timeout=TIMEOUT + 20) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert time.monotonic() - started < TIMEOUT + 10
    for cmd, p, (_out, err) in zip(COMMANDS, procs, results, strict=True):
        assert p.returncode == 3, (cmd, err)  # agent unreachable
        assert "Traceback" not in err, (cmd, err)
        assert err.count("\n") == 1 and err.startswith("xlb: "), (cmd, err)
        assert fake_agent in err, (cmd, err)


def call_within(seconds: float, path: str, method: str, **params: Any) -> BaseException:
    """What `AgentClient(path, timeout=1).call(...)` raised; fails if it takes longer than
    `seconds` (in a thread, so a client that never returns fails the test, not hangs it)."""
    raised: list[BaseException] = []

    def call() -> None:
        try:
            with AgentClient(path, timeout=1.0) as c:
                c.call(method, **params)
        except BaseException as e:  # the test looks at it
            raised.append(e)

    t = threading.Thread(target=call, daemon=True)  # the fixture's kill ends a stuck one
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{method} did not end within {seconds} s"
    assert raised, f"{method} answered"
    return raised[0]


@pytest.mark.parametrize("fake_agent", ["silent"], indirect=True)
def test_a_request_the_agent_does_not_read_times_out(fake_agent: str) -> None:
    """The send path: a request larger than the socket's buffers, to an agent that reads
    nothing, ends within the timeout as AgentUnavailable."""
    e = call_within(5, fake_agent, "add_vip", name="x", address="10.9.9.9", port=1,
                    protocol="tcp", backends=[{"address": "10.0.0.1"}] * 200_000)
    assert isinstance(e, AgentUnavailable), repr(e)
    assert "within 1 s" in str(e) and fake_agent in str(e)


@pytest.mark.parametrize("fake_agent", ["chatty"], indirect=True)
def test_a_call_ends_within_its_timeout_while_notifications_keep_coming(
        fake_agent: str) -> None:
    e = call_within(3, fake_agent, "status")
    assert isinstance(e, AgentUnavailable), repr(e)
    assert "no answer" in str(e) and "within 1 s" in str(e)
