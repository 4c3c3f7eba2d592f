"""The agent against hostile local users and faults underneath it: descriptor exhaustion,
connection floods, slow and idle clients, huge audit reads, a full disk under the audit
log, state files and the metrics endpoint that must not leak to other users.

Real agent processes (tests/agent/test_agent.py's fixture) in private namespaces; the
read-only user is `nobody`.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.test_agent import NOBODY, AgentProc, answer, as_nobody, running_agent, state
from tests.helpers import REPO, scrape, wait_for
from xlb.agent.metrics import SCRAPE_TIMEOUT
from xlb.errors import XlbError

# -- connections: limits, idle, slow readers, descriptors ----------------------------------

HOLD = """
import json, select, socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
socks, unconnected = [], 0
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        socks.append(s)
    except OSError:
        unconnected += 1
        s.close()
time.sleep(0.5)  # the agent has taken or turned away each of them

def ask(s):
    # what the agent does with this connection: turned it away (its error line), closed
    # it, or answers a request on it
    p = select.poll()
    p.register(s, select.POLLIN)
    s.settimeout(10)
    try:
        if not p.poll(0):
            s.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "vips"}\\n')
        line = s.makefile("rb").readline()
    except OSError:
        line = b""
    if not line:
        return "closed"
    msg = json.loads(line)
    if "result" in msg:
        return "answered"
    return f"{msg['error']['code']}: {msg['error']['message']}"

while True:
    kinds = {"unconnected": unconnected}
    for s in socks:
        kind = ask(s)
        kinds[kind] = kinds.get(kind, 0) + 1
    print(json.dumps(kinds), flush=True)
    if not sys.stdin.readline():  # a line: look again; end of input: let them go
        break
"""


class Holder:
    """A read-only user (nobody) holding `n` connections to the agent; `look()` says what
    became of them."""

    def __init__(self, agent: AgentProc, n: int):
        def drop() -> None:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)

        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, agent.socket, str(n)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, preexec_fn=drop, env=agent.env, cwd=REPO)
        self.first = self._read()

    def _read(self) -> dict[str, int]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the holder died"
        return json.loads(line)  # type: ignore[no-any-return]

    def look(self) -> dict[str, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("again\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def holding(agent: AgentProc, n: int) -> Iterator[Holder]:
    h = Holder(agent, n)
    try:
        yield h
    finally:
        h.close()


def ticking(agent: AgentProc) -> None:
    """The agent answers an operator (root) and its snapshots move on."""
    with agent.client() as c:
        first = c.call("status")["time"]
        wait_for(lambda: c.call("status")["time"] > first, "a new snapshot", timeout=10)


def open_fds(agent: AgentProc) -> int:
    assert agent.proc is not None
    return len(os.listdir(f"/proc/{agent.proc.pid}/fd"))


@pytest.fixture
def plain(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """An agent with the default limits and no health checks."""
    yield from running_agent(roots, "none")


@pytest.fixture
def limited(roots: tuple[str, str]) -> Iterator[AgentProc]:
    yield from running_agent(roots, "none", "max_clients_per_user = 8\n"
                                            "client_idle_timeout = 2.0\n"
                                            "client_send_timeout = 1.0\n")


def test_a_read_only_user_gets_a_bounded_number_of_connections(limited: AgentProc) -> None:
    """40 connections of one read-only user: 8 served (max_clients_per_user), 32 turned
    away with a clear error; root is still served; silent ones close after the timeout."""
    agent = limited
    for h in holding(agent, 40):
        turned_away = {k: v for k, v in h.first.items() if k.startswith("-32005")}
        assert h.first.get("answered") == 8, h.first
        assert sum(turned_away.values()) == 32, h.first
        assert any("the limit per user (max_clients_per_user)" in k for k in turned_away)
        ticking(agent)
        time.sleep(3)  # client_idle_timeout = 2
        assert h.look() == {"unconnected": 0, "closed": 40}
    assert "turned away a connection of nobody (uid 65534)" in agent.log()


@pytest.fixture
def unlimited(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """Limits too large for the descriptor limit the test gives the agent."""
    yield from running_agent(roots, "none", "max_clients = 5000\n"
                                            "max_clients_per_user = 5000\n")


def test_descriptor_exhaustion_cannot_stop_the_agent(unlimited: AgentProc) -> None:
    """With 160 descriptors (RLIMIT_NOFILE) and 300 connections of a read-only user, the
    agent keeps descriptors for itself: it ticks, answers root, turns the rest away."""
    agent = unlimited
    assert agent.proc is not None
    _soft, hard = resource.prlimit(agent.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(agent.proc.pid, resource.RLIMIT_NOFILE, (160, hard))
    for h in holding(agent, 300):
        kinds = h.first
        turned_away = sum(v for k, v in kinds.items() if k.startswith("-32005"))
        assert 0 < kinds.get("answered", 0) < 160 and turned_away > 0, kinds
        assert agent.proc.poll() is None, agent.log()
        ticking(agent)
        assert open_fds(agent) < 160
    assert agent.proc.poll() is None
    with agent.client() as c:
        assert c.call("status")["tick_failures"] == 0
    assert "EMFILE" not in agent.log() and "Too many open files" not in agent.log()


def test_a_failed_tick_does_not_end_the_agent(limited: AgentProc) -> None:
    """No descriptor left at all (the limit at the lowest free one): the tick fails; the
    agent logs it, counts it and carries on, and ticks again once descriptors are back."""
    agent = limited
    proc = agent.proc
    assert proc is not None
    pid = proc.pid
    with agent.client() as c:  # opened before: no new descriptor is needed to ask
        used = set(range(1 << 16))
        for _ in range(5):  # the ones held all along, not one the tick opened for a moment
            used &= {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
            time.sleep(0.05)
        lowest_free = min(set(range(len(used) + 1)) - used)
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, hard))
        try:
            wait_for(lambda: "tick failed" in agent.log() or proc.poll() is not None,
                     "a failed tick", timeout=10)
            time.sleep(1)
            assert proc.poll() is None, f"the agent exited:\n{agent.log()}"
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        wait_for(lambda: "the tick works again" in agent.log(), "a tick again", timeout=10)
        assert c.call("status")["tick_failures"] >= 1
    ticking(agent)
    log = agent.log()
    assert "tick failed, the agent carries on: [Errno 24] Too many open files" in log, log


def test_a_client_that_does_not_read_is_cut_off(limited: AgentProc) -> None:
    """Requests sent without ever reading the answers: the agent holds at most about one
    answer for it and disconnects it after client_send_timeout (1 s here)."""
    agent = limited
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(agent.socket)
    request = b'{"jsonrpc": "2.0", "id": 1, "method": "backends"}\n'
    s.settimeout(5)
    sent = 0
    try:
        for _ in range(5000):
            s.sendall(request)
            sent += 1
    except OSError:
        pass  # the agent stopped reading, then hung up
    time.sleep(2)
    answers = 0
    with s.makefile("rb") as reader:
        try:
            while reader.readline():
                answers += 1
        except OSError:
            pass
    s.close()
    assert answers < sent, "every answer waited for the reader: it was never cut off"
    assert "cut off root (uid 0): it left what it was sent unread for 1 s" in agent.log()
    ticking(agent)


def test_a_subscriber_that_does_not_read_is_cut_off(limited: AgentProc) -> None:
    """Snapshots pile up in its socket, then in the agent's buffer (64 KiB at most);
    a second later (client_send_timeout) it is cut off."""
    agent = limited
    with agent.client() as c:  # bigger snapshots: its buffers fill sooner
        for v in range(2):
            c.call("add_vip", name=f"big{v}", address=f"10.100.1.{v}", port=80,
                   protocol="tcp", backends=[{"address": f"10.0.{2 + v}.{b}"}
                                             for b in range(1, 8)])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(agent.socket)
    s.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "subscribe"}\n')
    try:
        wait_for(lambda: "cut off root (uid 0)" in agent.log(), "the subscriber cut off",
                 timeout=120, every=0.5)
    finally:
        s.close()
    ticking(agent)


def test_idle_metrics_connections_cannot_pile_up(limited: AgentProc) -> None:
    """The exporter serves a few scrapes at once and closes the rest: 200 idle TCP
    connections to it cost the agent no more than a handful of descriptors."""
    agent = limited
    with agent.client() as c:
        port = c.call("status")["metrics_port"]
    before = open_fds(agent)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
    try:
        time.sleep(1)
        assert open_fds(agent) <= before + 12, (before, open_fds(agent))
        ticking(agent)
    finally:
        for s in socks:
            s.close()
    # once the flood is gone the exporter serves again (the slots of the closed
    # connections free as their threads see the end of them: a moment on a busy machine)
    wait_for(lambda: "\nxlb_tick_failures_total 0.0" in served(port),
             "a scrape served after the flood", timeout=SCRAPE_TIMEOUT + 10, every=0.5)


def served(port: int) -> str:
    """The exposition, or "" when the exporter turns the connection away."""
    try:
        return scrape(port)
    except (OSError, http.client.HTTPException):
        return ""


# -- the audit log: reading it ------------------------------------------------------------

def record(i: int, pad: int = 0) -> bytes:
    entry = {"action": "weight", "after": {"web": {"address": "10.0.1.2", "weight": i % 7,
                                                   "state": "active"}},
             "before": {"web": {"address": "10.0.1.2", "weight": 1, "state": "active"}},
             "params": {"address": "10.0.1.2", "vip": "web", "weight": i % 7, "force": False,
                        **({"pad": "x" * pad} if pad else {})},
             "result": "ok", "time": 1.7e9 + i, "uid": 0, "user": "root"}
    return json.dumps(entry, sort_keys=True).encode() + b"\n"


def peak_rss_kib(agent: AgentProc) -> int:
    """The most memory the agent ever had resident (VmHWM)."""
    assert agent.proc is not None
    with open(f"/proc/{agent.proc.pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])


def test_a_huge_audit_log_is_read_from_its_end(plain: AgentProc) -> None:
    """n is bounded (1000), and the last n records of a 64 MB log are read from its end:
    the agent's memory hardly grows, whatever the size of the log."""
    agent = plain
    one = record(0)
    count = (64 << 20) // len(one)
    with open(os.path.join(agent.tmp, "audit.jsonl"), "wb") as f:
        f.write(b"".join(record(i) for i in range(count)))
    before = peak_rss_kib(agent)
    with agent.client() as c:
        for _ in range(3):
            entries = c.call("audit", n=1000)
    assert len(entries) == 1000
    assert [e["time"] for e in entries] == [1.7e9 + i for i in range(count - 1000, count)]
    grown = peak_rss_kib(agent) - before
    assert grown < 16 * 1024, f"the agent's peak memory grew by {grown} KiB for 1000 records"


def test_the_audit_log_is_read_off_the_event_loop(tmp_path: Any, monkeypatch: Any) -> None:
    """While an audit read is stuck (a slow disk), other requests are answered."""
    import asyncio
    import threading

    from tests.agent.test_agent import config
    from xlb.agent import core
    from xlb.agent.server import Server
    from xlb.agent.settings import load

    monkeypatch.setattr(core, "run_dir", lambda name: str(tmp_path))
    path = tmp_path / "agent.toml"
    path.write_text(config(str(tmp_path), "none"))
    agent = core.Agent(load(str(path)))
    release = threading.Event()
    threading.Timer(10, release.set).start()  # never a deadlock, even before the fix

    def slow_tail(n: int) -> list[Any]:
        release.wait()
        return []

    agent.audit.tail = slow_tail  # type: ignore[method-assign,assignment]
    server = Server(agent)
    root = core.Caller(0, "root", True)

    def line(method: str) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()

    async def main() -> bool:
        reading = asyncio.create_task(answer(server, line("audit"), root))
        await asyncio.sleep(0.2)
        reply = await answer(server, line("vips"), root)
        answered_while_stuck = not release.is_set()
        release.set()
        await reading
        assert reply is not None and "result" in reply
        return answered_while_stuck

    try:
        assert asyncio.run(main()), "the audit read held the event loop"
    finally:
        release.set()
        server.close()


# -- the audit log: a full disk ---------------------------------------------------------------

AUDIT_FS = "audit-fs"


def small_disk(tmp: str) -> None:
    """A 64 KiB tmpfs for the audit log, holding one old record that ends 100 bytes
    before a page boundary (so the next record is cut short by a full disk)."""
    mount = os.path.join(tmp, AUDIT_FS)
    os.makedirs(mount)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "xlb-test", mount],
                   check=True)
    base = len(record(0))
    with open(os.path.join(mount, "audit.jsonl"), "wb") as f:
        f.write(record(0, pad=4096 - 100 - base - len(', "pad": ""')))
    assert os.path.getsize(os.path.join(mount, "audit.jsonl")) == 4096 - 100


@pytest.fixture
def small_audit_disk(roots: tuple[str, str]) -> Iterator[AgentProc]:
    yield from running_agent(roots, "none", before_start=small_disk,
                             audit_log=f"{{tmp}}/{AUDIT_FS}/audit.jsonl")


def fill(directory: str) -> str:
    """Fill the file system of `directory` to the last byte; the filler's path."""
    path = os.path.join(directory, "filler")
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return path


def test_a_change_is_audited_or_not_made_on_a_full_disk(small_audit_disk: AgentProc) -> None:
    agent = small_audit_disk
    disk = os.path.join(agent.tmp, AUDIT_FS)
    log_path = os.path.join(disk, "audit.jsonl")
    before = state(agent)
    size = os.path.getsize(log_path)
    filler = fill(disk)
    # the record fits only in part: the change is not made, and no torn line is left
    with agent.client() as c, pytest.raises(XlbError) as e:  # AuditError
        c.call("drain", address="10.0.1.2", vip="web")
    assert e.value.rpc_code == -32004, e.value
    assert str(e.value) == (f"drain 10.0.1.2 not applied: its audit record could not be "
                            f"written to {log_path} (No space left on device); nothing "
                            "changed")
    assert state(agent) == before
    assert os.path.getsize(log_path) == size
    with open(os.path.join(agent.env["XLB_RUN_ROOT"], "agt", "agent.json")) as f:
        saved = json.load(f)["desired"]
    assert saved["vip"][0]["backend"][1]["state"] == "active", "the intent moved on"
    # the CLI says the same in one line: never "refused", never done
    r = subprocess.run([sys.executable, "-m", "xlb", "weight", "10.0.1.2", "5", "--socket",
                        agent.socket], capture_output=True, text=True, env=agent.env,
                       timeout=60)
    assert r.returncode == 1 and "weight 10.0.1.2 not applied" in r.stderr, r
    assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
    assert state(agent) == before
    # space again: the change is made and audited in full
    os.unlink(filler)
    with agent.client() as c:
        c.call("drain", address="10.0.1.2", vip="web")
        entries = c.call("audit")
    assert [e["action"] for e in entries] == ["weight", "drain"]
    assert entries[-1]["after"]["web"]["state"] == "drained"


def test_a_torn_line_does_not_hide_later_records(plain: AgentProc) -> None:
    """A record cut short by a crash: the next one starts on a line of its own and shows
    in `xlb audit`; a record an older agent glued to a torn line is recovered too."""
    agent = plain
    log_path = os.path.join(agent.tmp, "audit.jsonl")
    with agent.client() as c:
        c.call("drain", address="10.0.1.2", vip="web")
        with open(log_path, "ab") as f:
            f.write(record(1)[:57])  # the agent died mid-write
        c.call("undrain", address="10.0.1.2", vip="web")
        assert [e["action"] for e in c.call("audit")] == ["drain", "undrain"]
        with open(log_path, "ab") as f:
            f.write(record(2)[:40] + record(3))  # glued by an agent without this fix
        assert [e["action"] for e in c.call("audit")] == ["drain", "undrain", "weight"]
    with open(log_path, "rb") as f:
        lines = f.read().split(b"\n")
    assert lines[1] == record(1)[:57], "the torn line stays as it was, on its own"
    r = subprocess.run([sys.executable, "-m", "xlb", "audit", "--socket", agent.socket],
                       capture_output=True, text=True, env=agent.env, timeout=60)
    assert r.returncode == 0 and "root (uid 0) undrain 10.0.1.2: web: state drained → active" in (
        r.stdout), r


class SavingFails:
    """A data plane that applies, whose agent then cannot save its state."""

    def __init__(self) -> None:
        self.applied: list[Any] = []

    def stage(self, cfg: Any, stop: Any = None) -> int:
        return 0  # writes nothing a packet sees

    def apply(self, cfg: Any) -> None:
        self.applied.append(cfg)


def test_a_change_whose_state_cannot_be_saved_is_undone(tmp_path: Any, monkeypatch: Any) -> None:
    """The maps took the change but agent.json could not be written (a full /run): the
    maps are put back, the answer says so, and the audit record is taken back."""
    import asyncio

    from tests.agent.test_agent import config
    from xlb.agent import core
    from xlb.agent.server import Server
    from xlb.agent.settings import load

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    monkeypatch.setattr(core, "run_dir", lambda name: str(blocked / "run"))  # ENOTDIR
    path = tmp_path / "agent.toml"
    path.write_text(config(str(tmp_path), "none"))
    agent = core.Agent(load(str(path)))
    dp = SavingFails()
    agent.dp = dp  # type: ignore[assignment]
    desired = agent.desired
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "drain",
                       "params": {"address": "10.0.1.2", "vip": "web"}}).encode()
    reply = asyncio.run(answer(Server(agent), line, core.Caller(0, "root", True)))
    assert reply is not None and reply["error"]["code"] == -32003, reply
    assert reply["error"]["message"] == (f"not applied: the state could not be saved in "
                                         f"{blocked}/run (Not a directory); the data plane "
                                         "is as it was")
    assert [str(c.vip("web").backend("10.0.1.2").state) for c in dp.applied] == [
        "drained", "active"], "applied, then put back"
    assert agent.desired is desired
    assert agent.audit.tail() == []


# -- what other users can read ----------------------------------------------------------------

def test_state_files_are_not_world_readable(plain: AgentProc) -> None:
    agent = plain
    with agent.client() as c:
        c.call("drain", address="10.0.1.2", vip="web")
    run = os.path.join(agent.env["XLB_RUN_ROOT"], "agt")
    for name in ("agent.json", "applied.json", "dataplane.json"):
        mode = stat.S_IMODE(os.stat(os.path.join(run, name)).st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"
    r = as_nobody(agent, "import sys, os\n"
                         "for n in ('agent.json', 'applied.json', 'dataplane.json'):\n"
                         "    try:\n"
                         "        open(os.path.join(sys.argv[2], n)).read()\n"
                         "        print('read', n)\n"
                         "    except PermissionError:\n"
                         "        print('denied', n)\n", run)
    assert r.stdout.split("\n")[:3] == ["denied agent.json", "denied applied.json",
                                        "denied dataplane.json"]


@pytest.fixture
def private_metrics(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """Metrics on a Unix socket, and a socket group nobody is not in."""
    yield from running_agent(roots, "none", metrics="unix:{tmp}/metrics.sock",
                             socket_group="root")


def scrape_unix(path: str) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
    out = b""
    while chunk := s.recv(1 << 16):
        out += chunk
    s.close()
    return out


SCRAPE_AS_NOBODY = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[2])
    print("connected")
except PermissionError:
    print("denied")
"""


def test_metrics_can_be_kept_to_the_socket_group(private_metrics: AgentProc) -> None:
    agent = private_metrics
    path = os.path.join(agent.tmp, "metrics.sock")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, 0)
    text = scrape_unix(path)
    assert text.startswith(b"HTTP/1.0 200")
    assert b'xlb_load_balancer_info{interface="xlb0",name="agt"} 1.0' in text
    assert as_nobody(agent, SCRAPE_AS_NOBODY, path).stdout.strip() == "denied"
    with agent.client() as c:
        assert c.call("status")["metrics_port"] == 0
    agent.stop()
    assert not os.path.exists(path), "the agent removes its metrics socket when it stops"
