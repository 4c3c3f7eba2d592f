"""End to end, as a person: the README's main command in a real terminal (tmux).

`xlb demo` builds the lab, starts traffic and opens the console on both LBs' agents (the
fleet: lb1 and lb2 behind the router's BGP/ECMP route).

Keys are typed with `tmux send-keys`, the screen is read with `capture-pane`,
and what the console claims is checked against the agent itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xlb.api.client import AgentClient
from xlb.lab import run
from xlb.paths import default_socket

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (bootstrap)")

SESSION = f"xlb-e2e-{os.getpid()}"


def screen() -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", SESSION], capture_output=True,
                          text=True, check=True).stdout


def keys(*k: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", SESSION, *k], check=True)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen()}")
        time.sleep(0.2)


def backend_state(address: str) -> str:
    with AgentClient(default_socket("lb1")) as c:
        (web,) = c.call("backends", vip="web")
    return next(str(b["state"]) for b in web["backends"] if b["address"] == address)


def trace_running() -> bool:
    with AgentClient(default_socket("lb1")) as c:
        return bool(c.call("trace_status")["running"])


@pytest.fixture
def demo_in_tmux(tmp_path: Path) -> Iterator[None]:
    """The README's main command (scripts/run = bootstrap + `xlb demo`): lab, traffic, console."""
    xlb = str(Path(sys.executable).with_name("xlb"))
    cmd = (f"env XDG_CONFIG_HOME={tmp_path} TERM=xterm-256color {xlb} demo --rate 50; "
           "echo DEMO-EXITED $?; sleep 60")
    subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", cmd],
                   check=True)
    try:
        yield
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
        run.down()


def test_main_command_lands_in_a_live_console_and_keys_drain(demo_in_tmux: None) -> None:
    wait_for(lambda: "lb1 ● live" in screen() and "q0" in screen(), "the live overview",
             timeout=90)
    wait_for(lambda: " 0 pps" not in screen().split("Traffic", 1)[-1].splitlines()[0],
             "traffic in the overview")
    keys("2", "v")  # typed at once, as people do: the v must not be lost in the switch
    wait_for(lambda: "VIP dns" in screen(), "the next VIP")
    keys("V")
    first = "198.18.2.11"  # be1: the first row, sorted by address
    wait_for(lambda: "VIP web " in screen() and first in screen() and "Distribution" in screen(),
             "the Backends view of web")
    assert backend_state(first) == "active"
    keys("d")
    wait_for(lambda: "Drain backend" in screen(), "the confirmation")
    assert first in screen() and "stay" in screen()
    keys("y")
    wait_for(lambda: backend_state(first) in ("draining", "drained"), "the agent to drain it")
    wait_for(lambda: "draining" in screen() or "○ drained" in screen(), "the table to show it")
    keys("u")
    wait_for(lambda: backend_state(first) == "active", "the agent to undrain it")
    keys("6")  # the agent attached its default probes: the drops probe is one of them
    wait_for(lambda: "Probes of the agent" in screen() and any(  # fleet: named lb1/drops
        ln.split()[:1] == ["lb1/drops"] and "attached" in ln for ln in screen().splitlines()),
        "the drops probe attached in the Probes view",
        timeout=180)  # the agent compiles its probes in the background: slow on a busy host
    keys("4")  # BGP: both LBs' sessions (v4 and v6 each) up with the router
    wait_for(lambda: screen().count("Established") >= 4 and "lb2" in screen(),
             "both LBs' BGP sessions Established in the BGP view")
    keys("3")
    wait_for(lambda: "Kernel drops by reason" in screen(), "the kernel half of Drops")
    keys("5", "/")  # Flows: a trace of the web VIP's TCP, typed into the filter box
    wait_for(lambda: "Enter starts" in screen(), "the filter box")
    keys("-l", "vip web and proto tcp")
    keys("Enter")
    wait_for(lambda: any("198.19.0.10" in ln and "198.18.2." in ln and ("hit" in ln or "new" in ln)
                         for ln in screen().splitlines()), "traced packets of web in Flows")
    keys("x")  # stop the trace before leaving: a trace left on costs until it expires
    wait_for(lambda: not trace_running(), "the trace to stop")
    keys("q")
    wait_for(lambda: "DEMO-EXITED 0" in screen(), "the demo to end with the console")
    assert "TCP connections ok" in screen() and "lab is still running" in screen()
    assert backend_state(first) == "active"  # quitting changed nothing; the agent still answers
