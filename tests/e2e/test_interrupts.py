"""Ctrl-C with real signals against real processes: the lab build (`xlb lab up`, `xlb demo`)
stops at once and leaves nothing behind, and the demo's first Ctrl-C stops its traffic and
prints the summary even while lb1's agent hangs.

Ctrl-C is SIGINT sent to the `xlb` process, with SIGINT at its default as in a terminal's
foreground job. This process is made a child subreaper while a command runs, so whatever
the command started and left behind becomes our child and is seen here.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from pyroute2 import netns

from tests.helpers import REPO
from xlb.lab import run, topology
from xlb.paths import PIN_ROOT

PR_SET_CHILD_SUBREAPER = 36
STOP_WITHIN = 10.0  # seconds from Ctrl-C to the command's exit, cleanup included


@contextmanager
def subreaper() -> Iterator[None]:
    """Orphans of our children's descendants become our children while this runs."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def orphans() -> dict[int, str]:
    """Live processes that became our children (pid -> command line); zombies reaped."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(fields[1]) != os.getpid():
            continue
        if fields[0] == "Z":
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass
            continue
        out[int(entry)] = cmd
    return out


def lab_left() -> list[str]:
    """What of the lab exists: namespaces, the LBs' pins, the lab's state file."""
    lab = topology.Lab()
    left = [ns for ns in lab.namespaces() if ns in netns.listnetns()]
    left += [p for p in (*(os.path.join(PIN_ROOT, lb) for lb in lab.lbs), run.STATE)
             if os.path.exists(p)]
    return left


def terminal_job(*argv: str) -> subprocess.Popen[str]:
    """`xlb ARGS` as a terminal's foreground job would run it: SIGINT at its default."""
    return subprocess.Popen(
        [sys.executable, "-m", "xlb", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


class Lines:
    """A pipe read line by line in a thread, so a test can wait for a line."""

    def __init__(self, pipe: object) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: object) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            self.lines.append(line)

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "".join(self.lines)

    def wait_for(self, needle: str, proc: subprocess.Popen[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(needle in line for line in self.lines):
            assert proc.poll() is None, f"exited before printing {needle!r}: {self.lines}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout} s"
            time.sleep(0.05)


def lab_state() -> dict:
    try:
        with open(run.STATE) as f:
            return json.load(f)  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


STAGES: dict[str, Callable[[], bool]] = {
    # namespaces and links being made (topology)
    "namespaces": lambda: topology.CLIENT in netns.listnetns(),
    # BIRD started in the router (its PID recorded in the lab's state)
    "router": lambda: bool(lab_state().get("bird")),
    # the backends' servers started (recorded in the lab's state)
    "servers": lambda: bool(lab_state().get("pids")),
    # the LBs' agents started, loading the data planes: the last steps before traffic
    "agent": lambda: bool(lab_state().get("agents")),
}


@contextmanager
def no_lab_left() -> Iterator[None]:
    """Whatever happens, the lab and every process a command left behind end here."""
    run.down()  # from a clean slate
    try:
        with subreaper():
            yield
    finally:
        for pid in orphans():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        run.down()


def interrupt_during_build(argv: list[str], stage: str) -> tuple[int, float, str, str]:
    """Start `xlb ARGV`, send SIGINT once the build reaches `stage`; (exit code, seconds
    from SIGINT to exit, stdout, stderr)."""
    proc = terminal_job(*argv)
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        deadline = time.monotonic() + 120
        while not STAGES[stage]():
            assert proc.poll() is None, f"exited before {stage}: {err.text()}"
            assert time.monotonic() < deadline, f"the build never reached {stage}"
            time.sleep(0.01)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = -1
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, took, out.text(), err.text()


@pytest.mark.root
@pytest.mark.parametrize("stage", list(STAGES))
def test_ctrl_c_stops_lab_up_and_leaves_nothing(stage: str) -> None:
    with no_lab_left():
        code, took, _out, err = interrupt_during_build(["lab", "up"], stage)
        print(f"lab up, Ctrl-C at {stage}: exited {took:.2f} s later")
        assert code == 130, err
        assert "Traceback" not in err
        assert "interrupted (SIGINT)" in err and "removed" in err, err
        assert took < STOP_WITHIN, f"stopped {took:.1f} s after Ctrl-C"
        assert lab_left() == []
        assert orphans() == {}


@pytest.mark.root
def test_ctrl_c_during_the_demos_build_starts_no_traffic() -> None:
    with no_lab_left():
        code, took, out, err = interrupt_during_build(["demo", "--no-console"], "agent")
        print(f"demo, Ctrl-C at agent: exited {took:.2f} s later")
        assert code == 130, (out, err)
        assert "Traceback" not in err
        assert "interrupted (SIGINT)" in err and "removed" in err, err
        assert "Traffic:" not in out and "traffic over" not in out, out
        assert took < STOP_WITHIN, f"stopped {took:.1f} s after Ctrl-C"
        assert lab_left() == []
        assert orphans() == {}


@pytest.mark.root
def test_first_ctrl_c_stops_the_demo_with_a_hung_agent_and_prints_the_summary() -> None:
    """lb1's agent stopped (SIGSTOP: it accepts nothing and answers nothing) while the demo
    waits for its next snapshot; the data plane keeps forwarding."""
    agent = 0
    with no_lab_left():
        proc = terminal_job("demo", "--no-console", "--rate", "20")
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        try:
            out.wait_for("new conn/s", proc, timeout=120)
            agent = lab_state()["agents"]["lb1"]
            os.kill(agent, signal.SIGSTOP)
            time.sleep(1.5)  # the demo now waits on a snapshot that never comes
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)  # impatient: a second one loses nothing
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                code = -1
            took = time.monotonic() - sent
        finally:
            if agent:
                os.kill(agent, signal.SIGCONT)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stdout, stderr = out.text(), err.text()
        print(f"demo with a hung agent: exited {took:.2f} s after the first Ctrl-C")
        assert code == 0, (stdout, stderr)
        assert "Traceback" not in stderr, stderr
        assert took < 5.0, f"stopped {took:.1f} s after Ctrl-C"
        assert "traffic over" in stdout and "connections per backend" in stdout, stdout
        assert "lab is still running" in stdout


# The same Ctrl-C, landing at the exact step where pyroute2 cannot be cut in half: in its
# asyncio loop while it sets up a netlink socket in a namespace (the task it leaves there is
# garbage-collected after the loop: "RuntimeError: Event loop is closed"), or while its
# forked helper makes a namespace (the helper goes on and makes it after the cleanup).
# In a child process: pytest replaces the hook that prints what Python ignores.
STEP_SCRIPT = """
import gc, os, signal, sys, time
from pyroute2 import netns as pyroute2_netns, process
from pyroute2.netlink import core
from xlb.errors import Interrupted
from xlb.lab import interrupt, netns

where, name = sys.argv[1], sys.argv[2]
armed = True

def ctrl_c():  # SIGINT to this process, once; its handler runs at one of the next bytecodes
    global armed
    if armed:
        armed = False
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):
            pass

if where == "loop":  # pyroute2's loop runs the new netlink socket's first callback
    made = core.CoreDatagramProtocol.connection_made
    def connection_made(self, transport):
        ctrl_c()
        made(self, transport)
    core.CoreDatagramProtocol.connection_made = connection_made
elif where == "helper":  # pyroute2 waits for its forked helper, which makes the namespace
    communicate = process.ChildProcess.communicate
    def waiting(self, *args, **kwargs):
        ctrl_c()
        return communicate(self, *args, **kwargs)
    process.ChildProcess.communicate = waiting
else:  # "group": as in a terminal, the helper gets the Ctrl-C too, as it starts
    os.register_at_fork(after_in_parent=ctrl_c, after_in_child=ctrl_c)

started = time.monotonic()
with interrupt.stopping():
    try:
        netns.create(name)
        print("not interrupted")
    except Interrupted:
        print("interrupted")
    made = name in pyroute2_netns.listnetns()  # what the cleanup would see and remove
    took = time.monotonic() - started
    gc.collect()  # what pyroute2 left is collected now, not at some later point
try:
    os.waitpid(-1, os.WNOHANG)
    print("a helper is left")
except ChildProcessError:
    pass
print(f"made: {made}")
print(f"within a second: {took < 1.0}")
"""


@pytest.mark.root
@pytest.mark.parametrize("where", ["loop", "helper", "group"])
def test_ctrl_c_inside_pyroute2_waits_for_the_step_and_prints_nothing(where: str) -> None:
    name = f"xlbic-{os.getpid()}-{where}"
    try:
        r = subprocess.run([sys.executable, "-c", STEP_SCRIPT, where, name], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    finally:
        if name in netns.listnetns():
            netns.remove(name)
    assert (r.returncode, r.stdout) == (0, "interrupted\nmade: True\nwithin a second: True\n"), \
        (r.stdout, r.stderr)
    assert r.stderr == "", r.stderr
