"""The agent as a well-kept daemon, as a real process: what it logs (and at which
level), systemd's notify protocol seen on a socket the test binds, and running as a
user that is not root, with capabilities only."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.test_agent import NOBODY, NS, AgentProc, backends, config, running_agent
from tests.helpers import AGENT_CAPS, REPO, setpriv, wait_for
from xlb.api.client import AgentClient
from xlb.dataplane import xdp
from xlb.errors import PrivilegeError, RefusedError

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) xlb\.")


an_agent = contextlib.contextmanager(running_agent)  # with an_agent(...) as agent:


def levels(agent: AgentProc) -> set[str]:
    lines = agent.log().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    return {LINE.match(line).group(1) for line in lines}  # type: ignore[union-attr]


# -- logging ---------------------------------------------------------------------------------
@pytest.fixture
def failing(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """Health checks that find both backends down (unreachable); no fail-open."""
    yield from running_agent(roots, "tcp", "health_panic_threshold = 0")


def test_the_log_tells_changes_health_refusals_and_stop_never_ticks(failing: AgentProc) -> None:
    wait_for(lambda: "backend 10.0.1.2 is down" in failing.log(), "the health transition",
             timeout=15)
    time.sleep(0.5)  # transitions of the same tick
    quiet = failing.log()
    time.sleep(2.5)  # ten ticks of 0.25 s: nothing to say
    assert failing.log() == quiet, "lines were logged while nothing happened"
    with failing.client() as c:
        c.call("weight", address="10.0.1.2", vip="web", weight=5)
        with pytest.raises(RefusedError):
            c.call("drain", address="10.9.9.9")
    failing.stop()
    text = failing.log()
    for expected in (
            r"WARNING xlb\.agent\.core: backend 10\.0\.1\.1 is down \(tcp connect 10\.0\.1\.1:80: ",
            r"INFO xlb\.agent\.core: root \(uid 0\) weight 10\.0\.1\.2: web: weight 3 → 5",
            r"INFO xlb\.agent\.server: refused drain 10\.9\.9\.9 from root \(uid 0\): backend "
            r"10\.9\.9\.9 is not in any VIP",
            r"INFO xlb\.agent: SIGTERM received: stopping",
            r"INFO xlb\.agent: agent agt stopped; the data plane keeps running"):
        assert re.search(expected, text), f"{expected!r} not in the log:\n{text}"
    assert levels(failing) == {"INFO", "WARNING"}


@pytest.mark.parametrize(("level", "want"), [("warning", set()), ("debug", {"DEBUG", "INFO"})])
def test_log_level(roots: tuple[str, str], level: str, want: set[str]) -> None:
    """--log-level warning: only problems (none here); debug: each request too."""
    with an_agent(roots, "none", args=("--log-level", level)) as agent:
        with agent.client() as c:
            c.call("drain", address="10.0.1.2", vip="web")
        agent.stop()
        assert levels(agent) == want
        if level == "debug":
            assert re.search(r"DEBUG xlb\.agent\.server: drain from root \(uid 0\)", agent.log())


# -- the journal ----------------------------------------------------------------------------
JOURNAL_WRAPPER = r"""set -e
mount -t tmpfs tmpfs /run/systemd
mkdir /run/systemd/journal
mount --bind "$1" /run/systemd/journal
shift
export JOURNAL_STREAM="$(stat -L -c %d:%i /proc/self/fd/2)"
exec "$@"
"""


def journal_fields(datagram: bytes) -> dict[str, str]:
    """One entry of journald's native protocol: KEY=value lines, or KEY, a 64-bit length
    and the value for a value with newlines."""
    out: dict[str, str] = {}
    rest = datagram
    while rest:
        line, _, rest = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            out[key.decode()] = value.decode()
        else:
            n = int.from_bytes(rest[:8], "little")
            out[line.decode()] = rest[8:8 + n].decode()
            rest = rest[8 + n + 1:]
    return out


def test_under_systemd_the_log_goes_to_the_journal_with_priorities(
        roots: tuple[str, str]) -> None:
    """stderr is the journal's stream (JOURNAL_STREAM, as systemd sets it): each record
    goes to the journal's socket, with its priority, and nothing to stderr. The agent runs
    in a mount namespace of its own where the test's socket is journald's."""
    where = tempfile.mkdtemp(prefix="xlb-journal-")
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(os.path.join(where, "socket"))
    journal.settimeout(0.2)
    prefix = ("unshare", "--mount", "--propagation", "private", "sh", "-c", JOURNAL_WRAPPER,
              "sh", where)
    entries: list[dict[str, str]] = []

    def read() -> None:
        while True:
            try:
                entries.append(journal_fields(journal.recv(65536)))
            except TimeoutError:
                return

    try:
        with an_agent(roots, "none", prefix=prefix, socket_group="xlb-test-no-group") as agent:
            with agent.client() as c:
                c.call("drain", address="10.0.1.2", vip="web")
                with pytest.raises(RefusedError):
                    c.call("drain", address="10.0.1.1", vip="dns")  # its last healthy one
            agent.stop()
            read()
            assert agent.log() == "", "log lines went to stderr as well"
    finally:
        journal.close()
        shutil.rmtree(where, ignore_errors=True)
    by_text = {e.get("MESSAGE", ""): e for e in entries}
    assert {e["SYSLOG_IDENTIFIER"] for e in entries} == {"xlb-agent"}, entries
    for text, priority in (("xlb.agent: agent agt starting", "6"),
                           ("xlb.agent.core: root (uid 0) drain 10.0.1.2: web: state active → "
                            "drained", "6"),
                           ("xlb.agent.server: refused drain 10.0.1.1 from root (uid 0)", "6"),
                           ("xlb.statefile: group 'xlb-test-no-group' does not exist", "4"),
                           ("xlb.agent: agent agt stopped", "6")):
        found = [e for t, e in by_text.items() if t.startswith(text)]
        assert found and found[0]["PRIORITY"] == priority, (text, list(by_text))


# -- systemd's notify protocol ---------------------------------------------------------------
class NotifySocket:
    """What systemd listens on (NOTIFY_SOCKET): each message, and at READY=1 whether the
    API answered and the program was attached."""

    def __init__(self, path: str, api: str, netns: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.api, self.netns = api, netns
        self.messages: list[str] = []
        self.at_ready: dict[str, Any] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.done.is_set():
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            if msg.startswith("READY=1"):
                with AgentClient(self.api) as c:
                    self.at_ready["vips"] = len(c.call("status")["vips"])
                self.at_ready["prog_id"] = xdp.query("xlb0", self.netns).prog_id
            self.messages.append(msg)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.sock.close()


def test_systemd_hears_ready_watchdog_and_stopping(roots: tuple[str, str]) -> None:
    where = tempfile.mkdtemp(prefix="xlb-notify-")
    notify = None

    def listen(agent_tmp: str) -> None:
        nonlocal notify
        notify = NotifySocket(os.path.join(where, "notify"), os.path.join(agent_tmp,
                                                                          "agent.sock"), NS)

    env = {"NOTIFY_SOCKET": os.path.join(where, "notify"), "WATCHDOG_USEC": "5000000"}
    try:
        with an_agent(roots, "none", before_start=listen, env=env) as agent:
            assert notify is not None
            heard = notify.messages
            wait_for(lambda: heard.count("WATCHDOG=1") >= 3, "three WATCHDOG=1", timeout=10)
            ready = [m for m in heard if m.startswith("READY=1")]
            assert len(ready) == 1 and heard[0] == ready[0], heard
            assert re.fullmatch(r"READY=1\nSTATUS=native XDP on xlb0, 2 VIPs; API on "
                                r"\S+agent.sock", ready[0]), ready
            # at READY=1 the API answered and the program was on the interface
            assert notify.at_ready["vips"] == 2 and notify.at_ready["prog_id"] > 0
            agent.stop()
            assert agent.proc is not None and agent.proc.returncode == 0
            wait_for(lambda: any(m.startswith("STOPPING=1") for m in heard), "STOPPING=1")
            assert heard[-1].startswith("STOPPING=1"), heard
    finally:
        if notify is not None:
            notify.close()
        shutil.rmtree(where, ignore_errors=True)


# -- capabilities, not uid 0 -----------------------------------------------------------------
CAPS = AGENT_CAPS


@pytest.fixture
def user_roots(roots: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """A pin root and a run root that nobody owns (under systemd: the unit's
    ExecStartPre= and RuntimeDirectory=)."""
    pin_root = os.path.join(roots[0], "nobody")
    run_root = tempfile.mkdtemp(prefix="xlb-run-nobody-")
    os.makedirs(pin_root, exist_ok=True)
    for d in (pin_root, run_root):
        os.chown(d, NOBODY, NOBODY)
    try:
        yield pin_root, run_root
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)
        shutil.rmtree(run_root, ignore_errors=True)


def to_nobody(tmp: str) -> None:
    os.chown(tmp, NOBODY, NOBODY)  # its socket and audit log


def test_agent_runs_as_a_user_with_capabilities_and_drains(
        user_roots: tuple[str, str]) -> None:
    with an_agent(user_roots, "tcp", "health_panic_threshold = 0", before_start=to_nobody,
                  prefix=setpriv(CAPS)) as agent:
        assert agent.proc is not None
        with open(f"/proc/{agent.proc.pid}/status") as f:
            uids = re.search(r"^Uid:\s+(.*)$", f.read(), re.M)
        assert uids and uids.group(1).split() == [str(NOBODY)] * 4
        with agent.client() as c:
            c.call("drain", address="10.0.1.2", vip="web")
            assert backends(c)["10.0.1.2"]["state"] in ("drained", "draining")
            assert backends(c)["10.0.1.2"]["ring_share"] == 0
            (entry,) = c.call("audit")
            assert (entry["action"], entry["result"]) == ("drain", "ok")
            # the health checks open their sockets in the instance's namespace
            wait_for(lambda: backends(c)["10.0.1.1"]["health"] != "up", "a health verdict",
                     timeout=15)
            assert "tcp connect 10.0.1.1:80" in backends(c)["10.0.1.1"]["health"]
        pins = os.path.join(user_roots[0], "agt")
        assert {os.stat(os.path.join(pins, n)).st_uid for n in os.listdir(pins)} == {NOBODY}
        agent.stop()
        assert agent.proc.returncode == 0, agent.log()
        agent.start()  # adopts its own pins
        with agent.client() as c:
            assert backends(c)["10.0.1.2"]["state"] in ("drained", "draining")


def test_missing_capabilities_and_directories_are_named(user_roots: tuple[str, str]) -> None:
    """One clear line each, exit code of PrivilegeError, nothing loaded."""
    tmp = tempfile.mkdtemp(prefix="xlb-agent-nobody-")  # nobody reads its config there
    os.chmod(tmp, 0o755)
    to_nobody(tmp)
    try:
        check_named(user_roots, tmp, NS)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_named(user_roots: tuple[str, str], tmp: str, ns: str) -> None:
    path = os.path.join(tmp, "agent.toml")
    with open(path, "w") as f:
        f.write(config(tmp, "none"))
    env = {**os.environ, "XLB_PIN_ROOT": user_roots[0], "XLB_RUN_ROOT": user_roots[1],
           "XLB_STATE_ROOT": tmp}

    def agent(caps: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*setpriv(caps), sys.executable, "-m", "xlb", "agent", "--config",
                               path], capture_output=True, text=True, env=env, timeout=60,
                              cwd=REPO)

    r = agent("+bpf,+net_admin")
    assert r.returncode == PrivilegeError.exit_code and "Traceback" not in r.stderr, r.stderr
    assert ("missing: CAP_PERFMON, CAP_SYS_ADMIN" in r.stderr
            and f"network namespace '{ns}'" in r.stderr), r.stderr
    os.chown(user_roots[0], 0, 0)  # pins that are root's
    r = agent(CAPS)
    assert r.returncode == PrivilegeError.exit_code and "Traceback" not in r.stderr, r.stderr
    assert f"nobody cannot write {user_roots[0]};" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(user_roots[0], "agt"))
