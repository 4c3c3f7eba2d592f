"""The command line against a real agent: its exit codes, each through the real `xlb`
(scripts tell "no agent" (3) from "not allowed" (4) from "refused" (5) from any other
error (1) and from a command line that cannot be done as written (2)); and weight 0,
which asks first like a drain."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from tests.agent.test_agent import NOBODY, AgentProc, agent, backends  # noqa: F401
from tests.helpers import REPO


def cli(a: AgentProc, *args: str, socket: bool = True,
        as_user: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xlb", *args,
                           *(("--socket", a.socket) if socket else ())], capture_output=True,
                          text=True, env=a.env, timeout=60, stdin=subprocess.DEVNULL,
                          preexec_fn=as_user, cwd=REPO)


def nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def exits(r: subprocess.CompletedProcess[Any], code: int, text: str) -> None:
    assert r.returncode == code and text in r.stderr, r
    assert "Traceback" not in r.stderr


def test_each_exit_code_through_the_cli(agent: AgentProc) -> None:  # noqa: F811
    a = agent
    assert cli(a, "vips").returncode == 0
    # 1: an error that is none of the others (a config rule)
    exits(cli(a, "vip", "add", "bad", "10.100.0.21", "80", "sctp"), 1, "is not 'tcp' or 'udp'")
    # 2: usage: argparse, and a drain that needs --yes with no terminal to ask on
    exits(cli(a, "drain"), 2, "the following arguments are required: address")
    exits(cli(a, "drain", "10.0.1.2", "--vip", "web"), 2, "add --yes to confirm")
    exits(cli(a, "weight", "10.0.1.2", "x"), 2, "invalid int value")
    # 3: no agent answers on that socket
    exits(cli(a, "vips", "--socket", os.path.join(a.tmp, "none.sock"), socket=False), 3,
          "none.sock")
    # 4: not permitted: a read-only caller; a command that needs privileges it lacks
    exits(cli(a, "drain", "10.0.1.2", "--vip", "web", "--yes", as_user=nobody), 4, "read-only")
    exits(cli(a, "dataplane", "unload", "--instance", "agt", socket=False, as_user=nobody), 4,
          "needs root")
    closed = os.path.join(a.tmp, "closed.sock")  # root's alone (0600): nobody may not open it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(closed)
        os.chmod(closed, 0o600)
        s.listen(1)
        exits(cli(a, "vips", "--socket", closed, socket=False, as_user=nobody), 4,
              "not in the agent's socket group")
    # 5: refused: the last healthy backend of a VIP; another owner of the data plane
    exits(cli(a, "drain", "10.0.1.1", "--vip", "dns", "--yes"), 5, "without a healthy backend")
    exits(cli(a, "weight", "10.0.1.1", "0", "--vip", "dns", "--yes"), 5,
          "without a healthy backend")
    exits(cli(a, "dataplane", "unload", "--instance", "agt", socket=False), 5,
          "is run by its agent")
    with a.client() as c:  # none of the failures changed anything
        assert {b["state"] for b in backends(c).values()} == {"active"}
        assert backends(c, "dns")["10.0.1.1"]["weight"] == 1
        assert all(e["result"] != "ok" for e in c.call("audit"))


def on_terminal(a: AgentProc, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`xlb ARGS` with a terminal as stdin that answers `answer` to a question."""
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode() + b"\n")
        return subprocess.run([sys.executable, "-m", "xlb", *args, "--socket", a.socket],
                              stdin=follower, capture_output=True, text=True, env=a.env,
                              timeout=60)
    finally:
        os.close(leader)
        os.close(follower)


def test_weight_zero_asks_like_a_drain(agent: AgentProc) -> None:  # noqa: F811
    question = ("Set weight 0 of 10.0.1.2 in VIP web? New connections avoid it; established "
                "ones stay. [y/N]")
    r = on_terminal(agent, "n", "weight", "10.0.1.2", "0", "--vip", "web")
    assert r.returncode == 1 and question in r.stdout and "nothing changed" in r.stdout, r
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["weight"] == 3 and c.call("audit") == []
    r = on_terminal(agent, "y", "weight", "10.0.1.2", "0", "--vip", "web")
    assert r.returncode == 0 and question in r.stdout, r
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["weight"] == 0
    r = on_terminal(agent, "n", "weight", "10.0.1.2", "4", "--vip", "web")  # not asked
    assert r.returncode == 0 and "[y/N]" not in r.stdout, r
    r = on_terminal(agent, "n", "undrain", "10.0.1.2", "--vip", "web")
    assert r.returncode == 0 and "[y/N]" not in r.stdout, r
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["weight"] == 4
