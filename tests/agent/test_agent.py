"""The agent over its API: operations, audit, read-only peers, bad requests, restarts.

A real agent process runs against a veth pair in a namespace made here, with
private pin/run/state roots; everything is removed afterwards.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers import NOBODY, REPO
from tests.helpers import wait_for as wait_until
from xlb.api import protocol as P
from xlb.api.client import AgentClient
from xlb.dataplane import bpfsys, lifecycle, xdp
from xlb.dataplane import structs as S
from xlb.dataplane.manager import Dataplane, key_label
from xlb.errors import AgentUnavailable, ApplyError, InvalidParams, RefusedError, XlbError
from xlb.lab import netns

NS = f"xlbag-{os.getpid()}"


# The probes cost seconds of clang per agent start: off unless a test is about them
# (tests/probes/ runs agents with them on).
PROBES_OFF = "[probes]\n" + "".join(f'{n} = "off"\n' for n in P.PROBES)


def config(tmp: str, health: str = "tcp", extra: str = "", instance: str = "",
           audit_log: str = "", metrics: str = "127.0.0.1:0",
           socket_group: str = "nogroup", probes: str = PROBES_OFF) -> str:
    return f"""
{probes}
[agent]
socket = "{tmp}/agent.sock"
tick = 0.25
audit_log = "{audit_log or tmp + '/audit.jsonl'}"
operator_group = "xlb-test-operators-none"
socket_group = "{socket_group}"
metrics = "{metrics}"
health = "{health}"
{extra}

[instance]
name = "agt"
interface = "xlb0"
netns = "{NS}"
max_vips = 4
max_backends = 16
max_connections = 4096
{instance}

[[vip]]
name = "web"
address = "10.100.0.10"
port = 80
protocol = "tcp"
[[vip.backend]]
address = "10.0.1.1"
[[vip.backend]]
address = "10.0.1.2"
weight = 3

[[vip]]
name = "dns"
address = "10.100.0.10"
port = 53
protocol = "udp"
[[vip.backend]]
address = "10.0.1.1"
"""


class AgentProc:
    """An agent process; its stdout and stderr (the log) go to agent.log in `tmp`.
    `prefix` runs it through another command (setpriv), `args` are more options."""

    def __init__(self, tmp: str, env: dict[str, str], prefix: tuple[str, ...] = (),
                 args: tuple[str, ...] = ()):
        self.tmp, self.env, self.prefix, self.args = tmp, env, prefix, args
        self.path = os.path.join(tmp, "agent.toml")
        self.socket = os.path.join(tmp, "agent.sock")
        self.log_path = os.path.join(tmp, "agent.log")
        self.proc: subprocess.Popen[str] | None = None

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def start(self, *options: str) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "xlb", "agent",
                                          "--config", self.path, *self.args, *options],
                                         env=self.env, text=True, stdout=log, stderr=log,
                                         cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited:\n{self.log()}")
            try:
                with AgentClient(self.socket) as c:
                    if c.call("status").get("vips"):
                        return
            except AgentUnavailable:
                pass
            time.sleep(0.1)
        raise AssertionError("agent did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def client(self) -> AgentClient:
        return AgentClient(self.socket)


@pytest.fixture
def checking(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """An agent with TCP health checks. The backends are not reachable from the namespace:
    they are found down after about 1.5 s (health_fall 2, 1 s apart). No fail-open: a VIP
    whose backends are all down has none."""
    yield from running_agent(roots, "tcp", "health_panic_threshold = 0")


@pytest.fixture
def alarming(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """An agent that only raises alarms when its program or pins are taken away."""
    yield from running_agent(roots, "none", 'tamper = "alarm"')


@pytest.fixture
def agent(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """An agent without health checks: every backend counts as healthy however long the
    test takes (on a slow machine too), so the last-healthy guard is deterministic."""
    yield from running_agent(roots, "none")


@pytest.fixture
def moving(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """Health checks that find every backend down, with health_down_flows = "move" (the
    default) and no fail-open."""
    yield from running_agent(roots, "tcp", 'health_down_flows = "move"\n'
                             "health_panic_threshold = 0")


@pytest.fixture
def staying(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """Health checks that find every backend down; TCP flows stay; no fail-open."""
    yield from running_agent(roots, "tcp", 'health_down_flows = "stay"\n'
                             "health_panic_threshold = 0")


def running_agent(roots: tuple[str, str], health: str, extra: str = "",
                  before_start: Callable[[str], None] | None = None,
                  prefix: tuple[str, ...] = (), args: tuple[str, ...] = (),
                  env: dict[str, str] | None = None, **settings: str) -> Iterator[AgentProc]:
    """An agent of `config(tmp, health, extra, **settings)` ("{tmp}" in a setting is
    its directory); `before_start(tmp)` runs first (it may mount things under tmp: they
    are unmounted at the end); `prefix`, `args` and `env` (more variables) as AgentProc
    takes them."""
    pin_root, run_root = roots
    tmp = tempfile.mkdtemp(prefix="xlb-agent-test-")  # 0755 below: the read-only peer
    os.chmod(tmp, 0o755)                              # (nobody) must reach the socket
    settings = {k: v.replace("{tmp}", tmp) for k, v in settings.items()}
    env = {**os.environ, "XLB_PIN_ROOT": pin_root, "XLB_RUN_ROOT": run_root,
           "XLB_STATE_ROOT": tmp, **(env or {})}
    netns.create(NS)
    a = AgentProc(tmp, env, prefix, args)
    try:
        netns.veth(NS, "xlb0", NS, "peer0", queues=4)
        with open(a.path, "w") as f:
            f.write(config(tmp, health, extra, **settings))
        if before_start is not None:
            before_start(tmp)
        a.start()
        yield a
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        if os.path.isdir(os.path.join(pin_root, "agt")):
            lifecycle.unload_instance("agt", remove_pins=True, pin_root=pin_root,
                                      run_root=run_root)
        netns.remove(NS)
        unmount_under(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def unmount_under(path: str) -> None:
    """Unmount whatever a test mounted below `path` (deepest first)."""
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(path + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def backends(c: AgentClient, vip: str = "web") -> dict[str, dict[str, Any]]:
    (v,) = c.call("backends", vip=vip)
    return {b["address"]: b for b in v["backends"]}


def test_status_reports_the_instance(agent: AgentProc) -> None:
    with agent.client() as c:
        st = c.call("status")
        assert st["instance"] == "agt" and st["xdp_mode"] == "native"
        assert st["caller"] == {"user": "root", "operator": True}
        web = backends(c)
        assert abs(web["10.0.1.2"]["ring_share"] - 0.75) < 0.001
        assert {v["name"] for v in c.call("vips")} == {"web", "dns"}


def test_drain_is_applied_audited_and_undone(agent: AgentProc) -> None:
    with agent.client() as c:
        r = c.call("drain", address="10.0.1.2", vip="web")
        assert r["after"]["web"]["state"] == "drained"
        web = backends(c)
        assert web["10.0.1.2"]["ring_share"] == 0 and web["10.0.1.1"]["ring_share"] == 1.0
        (entry,) = c.call("audit", n=5)
        assert (entry["uid"], entry["user"], entry["action"]) == (0, "root", "drain")
        assert entry["before"]["web"]["state"] == "active"
        assert entry["after"]["web"]["state"] == "drained"
        c.call("undrain", address="10.0.1.2")
        assert backends(c)["10.0.1.2"]["ring_share"] > 0.7
        c.call("weight", address="10.0.1.2", weight=1, vip="web")
        assert abs(backends(c)["10.0.1.2"]["ring_share"] - 0.5) < 0.001
        assert [e["action"] for e in c.call("audit", n=5)] == ["drain", "undrain", "weight"]


def test_last_healthy_backend_needs_force(agent: AgentProc) -> None:
    with agent.client() as c:
        with pytest.raises(RefusedError, match="without a healthy backend") as e:
            c.call("drain", address="10.0.1.1", vip="dns")
        assert e.value.rpc_code == -32002
        assert backends(c, "dns")["10.0.1.1"]["ring_share"] == 1.0
        c.call("drain", address="10.0.1.1", vip="dns", force=True)
        assert backends(c, "dns")["10.0.1.1"]["ring_share"] == 0


READONLY = """
import json, sys
from xlb.api.client import AgentClient
from xlb.errors import XlbError
c = AgentClient(sys.argv[1])
out = {"status": c.call("status")["caller"]}
try:
    c.call("drain", address="10.0.1.2", vip="web")
    out["drain"] = "allowed"
except XlbError as e:
    out["drain"] = [e.rpc_code, str(e)]
print(json.dumps(out))
"""


def as_nobody(agent: AgentProc, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script as nobody (a read-only peer), with the agent's socket as argv[1]."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    r = subprocess.run([sys.executable, "-c", script, agent.socket, *args], capture_output=True,
                       text=True, preexec_fn=drop, env=agent.env, timeout=60,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r


def test_read_only_peer_sees_but_cannot_change(agent: AgentProc) -> None:
    """...and the attempt is audited: who tried what, and that it was refused."""
    out = json.loads(as_nobody(agent, READONLY).stdout)
    assert out["status"] == {"user": "nobody", "operator": False}
    assert out["drain"][0] == -32001 and "read-only" in out["drain"][1]
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["state"] == "active"
        (entry,) = c.call("audit")
    assert P.conforms(entry, P.AuditEntry) == []
    assert (entry["uid"], entry["user"], entry["action"], entry["result"]) == (
        NOBODY, "nobody", "drain", "refused: read-only")
    assert entry["params"] == {"address": "10.0.1.2", "vip": "web", "force": False}
    assert entry["before"] == entry["after"] == {}
    r = subprocess.run([sys.executable, "-m", "xlb", "audit", "--socket", agent.socket],
                       capture_output=True, text=True, env=agent.env, timeout=60)
    assert r.returncode == 0 and "nobody (uid 65534) drain 10.0.1.2: refused: read-only" in (
        r.stdout), r


REFUSALS = """
import sys
from xlb.api.client import AgentClient
from xlb.errors import ReadOnlyError
with AgentClient(sys.argv[1]) as c:
    for _ in range(int(sys.argv[2])):
        try:
            c.call("drain", address="10.0.1.2", vip="web")
        except ReadOnlyError:
            pass
"""


def test_refused_attempts_cannot_flood_the_audit_log(agent: AgentProc) -> None:
    """A read-only user's attempts are recorded at a bounded pace (10 a minute); the
    next record says how many were not."""
    from xlb.agent.audit import REFUSALS_PER_MINUTE

    as_nobody(agent, REFUSALS, "200")
    with agent.client() as c:
        entries = c.call("audit", n=1000)
    assert len(entries) == REFUSALS_PER_MINUTE
    assert {e["result"] for e in entries} == {"refused: read-only"}
    assert agent.log().count("refused drain from nobody") == REFUSALS_PER_MINUTE


def strict_json(line: bytes) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON."""
    def refuse(text: str) -> None:
        raise ValueError(f"{text} is not JSON")
    return json.loads(line, parse_constant=refuse)


async def answer(server: Any, line: bytes, caller: Any) -> Any:
    """What an in-process Server (xlb.agent.server) writes back for one request line,
    decoded (an array for a batch); None if it writes nothing."""
    out: list[bytes] = []

    async def send(data: bytes) -> None:
        out.append(data)

    await server._handle(line, caller, send)
    return json.loads(b"".join(out)) if out else None


def raw(path: str, data: bytes) -> dict[str, Any]:
    """Send `data`, read one answer line (strict JSON). The connection stays usable: a
    second request on it is answered too."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(data)
    reader = s.makefile("rb")
    line = reader.readline()
    assert line, "the agent closed the connection without an answer"
    s.sendall(b'{"jsonrpc": "2.0", "id": "again", "method": "vips"}\n')
    again = strict_json(reader.readline())
    assert again["id"] == "again" and "result" in again, again
    s.close()
    return strict_json(line)  # type: ignore[no-any-return]


@pytest.mark.parametrize("data,code", [
    (b"not json\n", -32700),
    (b'{"method": "status"}\n', -32600),
    (b'[]\n', -32600),  # an empty batch: one error, not an array
    (b'{"jsonrpc": "2.0", "id": 1, "method": "reboot"}\n', -32601),
    (b'{"jsonrpc": "2.0", "id": 2, "method": "drain", "params": {}}\n', -32602),
    (b'{"jsonrpc": "2.0", "id": 3, "method": "weight", "params": '
     b'{"address": "10.0.1.2", "weight": "heavy"}}\n', -32602),
    (b'{"jsonrpc": "2.0", "id": 4, "method": "weight", "params": '
     b'{"address": "10.0.1.2", "weight": 70000}}\n', -32602),
    (b'{"jsonrpc": "2.0", "id": 5, "method": "drain", "params": {"address": "10.9.9.9"}}\n',
     -32002),
    (b'{"jsonrpc": "2.0", "id": 6, "method": "drain", "params": [1]}\n', -32602),
    (b'{"jsonrpc": "2.0", "id": 7, "method": "snapshot"}\n', -32601),  # no undocumented alias
    (b"[" * 30000 + b"\n", -32700),  # deeper than Python's recursion limit
    (b"[" * 40 + b"]" * 40 + b"\n", -32700),  # deeper than the agent takes
    (b'{"jsonrpc": "2.0", "id": 8, "method": "audit", "params": {"n": 1000000000}}\n',
     -32602),
    (b'{"jsonrpc": "2.0", "id": 9, "method": "weight", "params": '
     b'{"address": "10.0.1.2", "weight": NaN}}\n', -32602),
])
def test_malformed_requests_get_clear_errors_and_change_nothing(agent: AgentProc, data: bytes,
                                                                code: int) -> None:
    reply = raw(agent.socket, data)
    assert reply["error"]["code"] == code and reply["error"]["message"]
    with agent.client() as c:
        web = backends(c)
        assert web["10.0.1.2"]["weight"] == 3 and web["10.0.1.2"]["state"] == "active"
        assert c.call("audit") == []


@pytest.mark.parametrize("rid", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"true",
                                 b"[1]", b'{"a": 1}'])
def test_an_id_that_cannot_be_echoed_is_answered_with_null(agent: AgentProc,
                                                           rid: bytes) -> None:
    """JSON-RPC ids are strings, numbers or null; NaN and Infinity are not JSON at all.
    Such an id is never echoed (the answer would not be JSON): -32600 with id null."""
    reply = raw(agent.socket, b'{"jsonrpc": "2.0", "id": ' + rid + b', "method": "status"}\n')
    assert reply["id"] is None and reply["error"]["code"] == -32600, reply
    assert "id must be" in reply["error"]["message"]


def test_deep_nesting_is_a_parse_error_not_a_crash(agent: AgentProc) -> None:
    reply = raw(agent.socket, b'{"a": ' * 10000 + b"\n")  # objects, this time
    assert reply["error"]["code"] == -32700 and "nested deeper" in reply["error"]["message"]
    with agent.client() as c:
        assert c.call("vips")
    log = agent.log()
    assert "RecursionError" not in log and "never retrieved" not in log, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_restart_keeps_data_plane_and_intent(agent: AgentProc, sig: int) -> None:
    with agent.client() as c:
        c.call("drain", address="10.0.1.2", vip="web")
    prog = xdp.query("xlb0", NS).prog_id
    agent.stop(sig)
    state = xdp.query("xlb0", NS)
    assert state.mode == "native" and state.prog_id == prog, "the data plane must keep running"
    agent.start()
    with agent.client() as c:
        web = backends(c)
        assert web["10.0.1.2"]["state"] in ("drained", "draining")
        assert web["10.0.1.2"]["ring_share"] == 0
        assert len(c.call("audit")) == 1


def test_the_log_says_what_the_agent_did(agent: AgentProc) -> None:
    """Start, loading, every change with who and what, refused callers, stop: timestamped."""
    with agent.client() as c:
        c.call("drain", address="10.0.1.2", vip="web")
    r = as_nobody(agent, READONLY)
    assert r.returncode == 0, r.stderr
    agent.stop()
    lines = agent.log().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) xlb\.")
    assert lines and all(stamp.match(line) for line in lines), lines
    text = "\n".join(lines)
    for expected in ("agent agt starting", "loaded agt: native XDP on xlb0",
                     "agent agt running: API on",
                     "root (uid 0) drain 10.0.1.2: web: state active → drained",
                     "refused drain from nobody",
                     "agent agt stopped; the data plane keeps running"):
        assert expected in text, f"{expected!r} not in the log:\n{text}"


def test_subscription_streams_snapshots(agent: AgentProc) -> None:
    with agent.client() as c:
        stream = c.subscribe()
        kinds = [next(stream)[0] for _ in range(3)]
        assert kinds == ["snapshot"] * 3


def test_every_answer_and_notification_has_the_protocol_shape(agent: AgentProc) -> None:
    """The agent answers exactly what xlb/api/protocol.py writes down (no field more or
    less), as the test double does (tests/unit/test_protocol.py)."""
    with agent.client() as c:
        for name in ("status", "vips", "backends", "audit", "subscribe"):
            assert P.conforms(c.call(name), P.METHODS[name].result) == [], name
        change = c.call("drain", address="10.0.1.2", vip="web")
        assert P.conforms(change, P.ChangeResult) == []
        assert P.conforms(change["after"]["web"], P.BackendConfig) == []
        assert P.conforms(c.call("audit"), list[P.AuditEntry]) == []
    with agent.client() as c:
        stream = c.subscribe()
        kind, doc = next(stream)  # subscribed: notifications from here on reach the stream
        seen = {kind}
        with agent.client() as c2:
            c2.call("undrain", address="10.0.1.2", vip="web")
        while True:
            assert P.conforms(doc, P.NOTIFICATIONS[kind]) == [], kind
            if seen == {"snapshot", "event"}:
                break
            kind, doc = next(stream)
            seen.add(kind)


def test_cli_clients(agent: AgentProc) -> None:
    def xlb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "xlb", *args, "--socket",
                               agent.socket], capture_output=True, text=True, env=agent.env,
                              timeout=60)
    r = xlb("backends", "--json")
    assert r.returncode == 0 and {b["address"] for v in json.loads(r.stdout)
                                  for b in v["backends"]} == {"10.0.1.1", "10.0.1.2"}
    r = xlb("drain", "10.0.1.2")
    assert r.returncode == 2 and "--yes" in r.stderr
    r = xlb("drain", "10.0.1.1", "--vip", "dns", "--yes")
    assert r.returncode == 5 and "refused" in r.stderr and "Traceback" not in r.stderr
    r = xlb("drain", "10.0.1.2", "--yes")
    assert r.returncode == 0, r.stderr
    r = xlb("audit", "--json")
    assert [e["action"] for e in json.loads(r.stdout)] == ["drain"]
    r = xlb("drops", "--json")
    drops = json.loads(r.stdout)["dataplane"]  # then the kernel's, from the probes
    assert r.returncode == 0 and {d["reason"] for d in drops} == {x.label for x in S.Reason}
    assert all(d["kind"] in ("drop", "pass", "tx") and d["total"] >= 0 for d in drops)
    assert drops[0]["kind"] == "drop"  # drops first, as the console shows them


# -- add/remove backends and VIPs ------------------------------------------------------------

def pinned(agent: AgentProc) -> dict[str, Any]:
    """What the pinned maps hold: VIP keys, valid backend addresses, VIP addresses."""
    with Dataplane("agt", agent.env["XLB_PIN_ROOT"], agent.env["XLB_RUN_ROOT"]) as dp:
        return {"vips": {key_label(k) for k, _ in dp.vip_entries().values()},
                "backends": {str(S.unpack_addr(b.addr, b.family))
                             for b in dp.backend_entries().values()},
                "vip_addrs": len(dp.maps["vip_addrs"].keys())}


def state(agent: AgentProc) -> dict[str, Any]:
    """Everything an add/remove changes: the API's view, the audit and the pinned maps."""
    with agent.client() as c:
        vips = [(v["name"], v["vip"], [(b["address"], b["weight"], b["state"], b["ring_share"])
                                       for b in v["backends"]]) for v in c.call("backends")]
        return {"vips": vips, "audit": c.call("audit"), "pinned": pinned(agent)}


def test_add_and_remove_backend_change_the_data_plane(agent: AgentProc) -> None:
    with agent.client() as c:
        r = c.call("add_backend", vip="web", address="10.0.1.9", weight=2)
        assert r == {"vips": ["web"], "before": {"web": None},
                     "after": {"web": {"address": "10.0.1.9", "weight": 2, "state": "active"}}}
        shares = {a: b["ring_share"] for a, b in backends(c).items()}
        assert shares.keys() == {"10.0.1.1", "10.0.1.2", "10.0.1.9"}
        assert abs(shares["10.0.1.9"] - 2 / 6) < 0.001 and abs(shares["10.0.1.2"] - 0.5) < 0.001
        assert "10.0.1.9" in pinned(agent)["backends"]

        r = c.call("remove_backend", vip="web", address="10.0.1.9")
        assert r["before"]["web"]["weight"] == 2 and r["after"] == {"web": None}
        assert "10.0.1.9" not in backends(c)
        assert "10.0.1.9" not in pinned(agent)["backends"], "in no VIP: invalidated"

        c.call("remove_backend", vip="web", address="10.0.1.1")  # dns still has it
        assert {a: b["ring_share"] for a, b in backends(c).items()} == {"10.0.1.2": 1.0}
        assert backends(c, "dns")["10.0.1.1"]["ring_share"] == 1.0
        assert "10.0.1.1" in pinned(agent)["backends"]

        c.call("add_backend", vip="dns", address="fd00:0::5", state="drained")
        assert backends(c, "dns")["fd00::5"]["state"] == "drained"
        assert backends(c, "dns")["fd00::5"]["ring_share"] == 0

        audit = c.call("audit")
        assert [e["action"] for e in audit] == ["add_backend", "remove_backend",
                                                "remove_backend", "add_backend"]
        assert all((e["uid"], e["user"]) == (0, "root") for e in audit)
        assert audit[0]["params"] == {"vip": "web", "address": "10.0.1.9", "weight": 2,
                                      "state": "active"}
        assert audit[0]["before"] == {"web": None} and audit[0]["after"]["web"]["weight"] == 2
        assert audit[2]["before"]["web"]["address"] == "10.0.1.1"
        assert audit[2]["after"] == {"web": None}
        assert audit[3]["after"]["dns"] == {"address": "fd00::5", "weight": 1,
                                            "state": "drained"}


def test_add_and_remove_vip_change_the_data_plane(agent: AgentProc) -> None:
    assert pinned(agent)["vip_addrs"] == 1
    with agent.client() as c:
        r = c.call("add_vip", name="api", address="10.100.0.20", port=443, protocol="tcp",
                   backends=[{"address": "10.0.1.5", "weight": 2}, {"address": "10.0.1.1"}])
        assert r["vips"] == ["api"] and r["before"] == {"api": None}
        assert r["after"]["api"]["backend"] == [
            {"address": "10.0.1.5", "weight": 2, "state": "active"},
            {"address": "10.0.1.1", "weight": 1, "state": "active"}]
        assert {v["name"]: v["vip"] for v in c.call("vips")}["api"] == "10.100.0.20:443/tcp"
        api = backends(c, "api")
        assert abs(api["10.0.1.5"]["ring_share"] - 2 / 3) < 0.001
        p = pinned(agent)
        assert "10.100.0.20:443/tcp" in p["vips"] and "10.0.1.5" in p["backends"]
        assert p["vip_addrs"] == 2

        c.call("add_vip", name="bare", address="2001:db8::30", port=0, protocol="udp")
        assert backends(c, "bare") == {}
        assert "[2001:db8::30]:0/udp" in pinned(agent)["vips"]

        r = c.call("remove_vip", name="api")
        assert r["before"]["api"]["address"] == "10.100.0.20" and r["after"] == {"api": None}
        assert {v["name"] for v in c.call("vips")} == {"web", "dns", "bare"}
        p = pinned(agent)
        assert "10.100.0.20:443/tcp" not in p["vips"], "its packets now pass to the host"
        assert p["vip_addrs"] == 2, "10.100.0.20 is no VIP address any more"
        assert "10.0.1.5" not in p["backends"] and "10.0.1.1" in p["backends"]

        c.call("remove_vip", name="dns")  # web keeps the address: only the service goes
        p = pinned(agent)
        assert "10.100.0.10:53/udp" not in p["vips"] and "10.100.0.10:80/tcp" in p["vips"]
        audit = c.call("audit")
        assert [e["action"] for e in audit] == ["add_vip", "add_vip", "remove_vip",
                                                "remove_vip"]
        assert audit[0]["params"]["backends"][0] == {"address": "10.0.1.5", "weight": 2}
        assert audit[0]["before"] == {"api": None}
        assert audit[0]["after"]["api"]["port"] == 443
        assert audit[2]["before"]["api"]["protocol"] == "tcp" and audit[2]["after"] == {
            "api": None}


def test_removing_the_last_healthy_backend_needs_force(agent: AgentProc) -> None:
    before = state(agent)
    with agent.client() as c:
        with pytest.raises(RefusedError, match="remove_backend 10.0.1.1 would leave VIP dns "
                                               "without a healthy backend") as e:
            c.call("remove_backend", vip="dns", address="10.0.1.1")
        assert e.value.rpc_code == -32002
        assert state(agent) == before
        c.call("drain", address="10.0.1.2", vip="web")
        with pytest.raises(RefusedError, match="VIP web without a healthy backend"):
            c.call("remove_backend", vip="web", address="10.0.1.1")  # 10.0.1.2 is drained
        r = c.call("remove_backend", vip="dns", address="10.0.1.1", force=True)
        assert r["after"] == {"dns": None}
        assert backends(c, "dns") == {}
        assert [e["action"] for e in c.call("audit")] == ["drain", "remove_backend"]
        assert c.call("audit")[-1]["params"]["force"] is True


READONLY_CHANGES = """
import json, sys
from xlb.api.client import AgentClient
from xlb.errors import XlbError
c = AgentClient(sys.argv[1])
out = []
for method, params in json.loads(sys.argv[2]):
    try:
        c.call(method, **params)
        out.append("allowed")
    except XlbError as e:
        out.append([e.rpc_code, str(e)])
print(json.dumps(out))
"""


def test_read_only_peer_cannot_add_or_remove(agent: AgentProc) -> None:
    before = state(agent)
    calls = [("add_backend", {"vip": "web", "address": "10.0.1.9"}),
             ("remove_backend", {"vip": "web", "address": "10.0.1.2"}),
             ("add_vip", {"name": "api", "address": "10.100.0.20", "port": 443,
                          "protocol": "tcp"}),
             ("remove_vip", {"name": "web"})]
    r = as_nobody(agent, READONLY_CHANGES, json.dumps(calls))
    for code, message in json.loads(r.stdout):
        assert code == -32001 and "read-only" in message
    after = state(agent)
    assert {**after, "audit": []} == before
    assert [(e["user"], e["action"], e["result"], e["params"].get("name")
             or e["params"].get("address")) for e in after["audit"]] == [
        ("nobody", "add_backend", "refused: read-only", "10.0.1.9"),
        ("nobody", "remove_backend", "refused: read-only", "10.0.1.2"),
        ("nobody", "add_vip", "refused: read-only", "api"),
        ("nobody", "remove_vip", "refused: read-only", "web")]


@pytest.mark.parametrize("method,params,code,message", [
    ("add_backend", {"vip": "nope", "address": "10.0.1.9"}, -32002, "no VIP named 'nope'"),
    ("add_backend", {"vip": "web", "address": "10.0.1.2"}, -32602,
     "VIP 'web' already has backend 10.0.1.2"),
    ("add_backend", {"vip": "web", "address": "10.0.1.300"}, -32602,
     "add_backend: parameter 'address': '10.0.1.300' is not an IP address"),
    ("add_backend", {"vip": "web", "address": "127.0.0.1"}, -32602, "is a loopback address"),
    ("add_backend", {"vip": "web", "address": "10.100.0.10"}, -32602, "is a VIP address"),
    ("add_backend", {"vip": "web", "address": "10.0.1.9", "weight": 70000}, -32602,
     "70000 is out of range 0..65535"),
    ("add_backend", {"vip": "web", "address": "10.0.1.9", "weight": "heavy"}, -32602,
     "parameter 'weight' must be an integer"),
    ("add_backend", {"vip": "web", "address": "10.0.1.9", "state": "gone"}, -32602,
     "'gone' is not 'active' or 'drained'"),
    ("add_backend", {"vip": "web"}, -32602, "missing parameter 'address'"),
    ("add_backend", {"vip": None, "address": "10.0.1.9"}, -32602, "missing parameter 'vip'"),
    ("add_backend", {"vip": "web", "address": 167772425}, -32602,
     "parameter 'address' must be a string"),
    ("remove_backend", {"vip": "web", "address": "10.0.1.9"}, -32002,
     "VIP 'web' has no backend '10.0.1.9'"),
    ("remove_backend", {"vip": "nope", "address": "10.0.1.2"}, -32002, "no VIP named 'nope'"),
    ("remove_backend", {"vip": "web", "address": "bogus"}, -32602, "not an IP address"),
    ("remove_backend", {"vip": "web", "address": "10.0.1.2", "force": "yes"}, -32602,
     "parameter 'force' must be true or false"),
    ("add_vip", {"name": "api", "address": "10.100.0.20", "port": 443, "protocol": "sctp"},
     -32602, "vip['api'].protocol: 'sctp' is not 'tcp' or 'udp'"),
    ("add_vip", {"name": "web", "address": "10.100.0.20", "port": 443, "protocol": "tcp"},
     -32602, "a VIP named 'web' exists already"),
    ("add_vip", {"name": "web2", "address": "10.100.0.10", "port": 80, "protocol": "tcp"},
     -32602, "vip['web2']: 10.100.0.10:80/tcp duplicates vip['web']"),
    ("add_vip", {"name": "api", "address": "10.0.1.1", "port": 80, "protocol": "tcp"},
     -32602, "10.0.1.1 is a VIP address"),
    ("add_vip", {"name": "api", "address": "::1", "port": 80, "protocol": "tcp"},
     -32602, "vip['api'].address: ::1 is a loopback address"),
    ("add_vip", {"name": "api", "address": "10.100.0.20", "port": "443", "protocol": "tcp"},
     -32602, "parameter 'port' must be an integer"),
    ("add_vip", {"name": "api", "address": "10.100.0.20", "protocol": "tcp"}, -32602,
     "missing parameter 'port'"),
    ("add_vip", {"name": "api", "address": "10.100.0.20", "port": 443, "protocol": "tcp",
                 "backends": "10.0.1.5"}, -32602, "parameter 'backends' must be an array"),
    ("add_vip", {"name": "api", "address": "10.100.0.20", "port": 443, "protocol": "tcp",
                 "backends": [{"address": "10.0.1.5", "wieght": 2}, "10.0.1.6"]}, -32602,
     "vip['api'].backend[0]: unknown key 'wieght'\nvip['api'].backend[1]: expected a table"),
    ("remove_vip", {"name": "nope"}, -32002, "no VIP named 'nope' (known: 'web', 'dns')"),
    ("remove_vip", {}, -32602, "missing parameter 'name'"),
    ("remove_vip", {"name": "dns", "force": True}, -32602,
     "remove_vip: unknown parameter(s) force; it takes name"),
])
def test_bad_topology_changes_get_clear_errors_and_change_nothing(
        agent: AgentProc, method: str, params: dict[str, Any], code: int,
        message: str) -> None:
    before = state(agent)
    with agent.client() as c, pytest.raises(XlbError) as e:
        c.call(method, **params)
    assert e.value.rpc_code == code and message in str(e.value), str(e.value)
    assert state(agent) == before


def test_too_many_vips_is_refused_and_changes_nothing(agent: AgentProc) -> None:
    with agent.client() as c:
        for i in (1, 2):
            c.call("add_vip", name=f"v{i}", address=f"10.100.0.{20 + i}", port=80,
                   protocol="tcp")
        before = state(agent)
        with pytest.raises(InvalidParams, match=r"5 VIPs exceed instance.max_vips \(4\)") as e:
            c.call("add_vip", name="v3", address="10.100.0.23", port=80, protocol="tcp")
        assert e.value.rpc_code == -32602
    assert state(agent) == before


def test_topology_intent_survives_a_restart(agent: AgentProc) -> None:
    with agent.client() as c:
        c.call("add_backend", vip="web", address="10.0.1.9", weight=2)
        c.call("remove_backend", vip="web", address="10.0.1.1")
        c.call("add_vip", name="api", address="10.100.0.20", port=443, protocol="tcp",
               backends=[{"address": "10.0.1.5"}])
        c.call("remove_vip", name="dns")
    before = state(agent)
    agent.stop()
    agent.start()
    after = state(agent)
    assert after == before
    assert [v[0] for v in after["vips"]] == ["web", "api"]
    assert {b[0] for b in after["vips"][0][2]} == {"10.0.1.2", "10.0.1.9"}
    assert after["pinned"]["backends"] == {"10.0.1.2", "10.0.1.9", "10.0.1.5"}


def test_health_checks_follow_added_and_removed_backends(checking: AgentProc) -> None:
    """An added backend is checked (here: found down, the namespace has no route to it);
    a removed one is no longer, and its verdict goes with it."""
    agent = checking
    def health(c: AgentClient) -> str:
        return str(backends(c)["10.0.1.9"]["health"])

    with agent.client() as c:
        c.call("add_backend", vip="web", address="10.0.1.9")
        deadline = time.monotonic() + 10
        while health(c) == "up" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert health(c) == "tcp connect 10.0.1.9:80: Network is unreachable"
        assert backends(c)["10.0.1.9"]["ring_share"] == 0
        c.call("remove_backend", vip="web", address="10.0.1.9", force=True)
        c.call("add_backend", vip="web", address="10.0.1.9")
        assert health(c) == "up", "a new check starts from healthy, as at the agent's start"


def test_cli_adds_and_removes_backends_and_vips(agent: AgentProc) -> None:
    def xlb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "xlb", *args, "--socket",
                               agent.socket], capture_output=True, text=True,
                              env=agent.env, timeout=60, stdin=subprocess.DEVNULL)

    def fails(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
        assert r.returncode == code and text in r.stderr, r
        assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1

    r = xlb("backend", "add", "10.0.1.9", "--vip", "web", "--weight", "2", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["after"]["web"] == {"address": "10.0.1.9", "weight": 2,
                                                    "state": "active"}
    r = xlb("backend", "add", "fd00::9", "--vip", "dns", "--drained")
    assert r.returncode == 0 and "added backend fd00::9 to VIP dns: weight 1, drained" in (
        r.stdout)
    fails(xlb("backend", "add", "10.0.1.9", "--vip", "web"), 1, "already has backend 10.0.1.9")
    fails(xlb("backend", "add", "10.0.1.10", "--vip", "nope"), 5, "no VIP named 'nope'")
    fails(xlb("backend", "remove", "10.0.1.9", "--vip", "web"), 2,
          "remove backend 10.0.1.9 from VIP web: add --yes to confirm")
    r = xlb("backend", "remove", "10.0.1.9", "--vip", "web", "--yes", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["after"] == {"web": None}, r.stderr
    fails(xlb("backend", "remove", "10.0.1.1", "--vip", "dns", "--yes"), 5,
          "without a healthy backend: refused (use --force")

    r = xlb("vip", "add", "api", "10.100.0.20", "443", "tcp", "--backend", "10.0.1.5:2",
            "--backend", "10.0.1.1", "--json")
    assert r.returncode == 0, r.stderr
    assert [(b["address"], b["weight"]) for b in json.loads(r.stdout)["after"]["api"][
        "backend"]] == [("10.0.1.5", 2), ("10.0.1.1", 1)]
    fails(xlb("vip", "add", "v6", "2001:db8::20", "80", "tcp", "--backend", "[fd00::1]:x"), 2,
          "expected ADDR[:WEIGHT] ([ADDR]:WEIGHT for IPv6)")
    fails(xlb("vip", "add", "bad", "10.100.0.21", "80", "sctp"), 1,
          "vip['bad'].protocol: 'sctp' is not 'tcp' or 'udp'")
    fails(xlb("vip", "remove", "api"), 2, "remove VIP api: add --yes to confirm")
    r = xlb("vip", "remove", "api", "--yes")
    assert r.returncode == 0 and r.stdout.strip() == (
        "removed VIP api (10.100.0.20:443/tcp): its packets now pass to the host"), r.stderr
    r = xlb("audit")
    assert r.returncode == 0 and "remove_vip api:" in r.stdout
    r = xlb("audit", "--json")
    assert [e["action"] for e in json.loads(r.stdout)] == [
        "add_backend", "add_backend", "remove_backend", "add_vip", "remove_vip"]


def test_cli_asks_on_a_terminal_what_a_removal_does(agent: AgentProc) -> None:
    def ask(answer: str, *args: str) -> subprocess.CompletedProcess[str]:
        leader, follower = pty.openpty()
        try:
            os.write(leader, answer.encode() + b"\n")
            return subprocess.run([sys.executable, "-m", "xlb", *args, "--socket",
                                   agent.socket], stdin=follower, capture_output=True,
                                  text=True, env=agent.env, timeout=60)
        finally:
            os.close(leader)
            os.close(follower)

    r = ask("n", "vip", "remove", "web")
    assert r.returncode == 1 and "nothing changed" in r.stdout
    assert ("Remove VIP web? Its traffic will no longer be balanced: packets to "
            "10.100.0.10:80/tcp pass to this host's own network stack (XDP_PASS)") in r.stdout
    r = ask("y", "backend", "remove", "10.0.1.1", "--vip", "web")
    assert r.returncode == 0, r.stderr
    assert "VIP dns still has it, so its established flows stay, as if drained" in r.stdout
    r = ask("yes", "backend", "remove", "10.0.1.2", "--vip", "web", "--force")
    assert r.returncode == 0, r.stderr
    assert "No other VIP has it, so it is invalidated: its established flows move" in r.stdout
    for args, message in ((("vip", "remove", "nope"), "no VIP named 'nope' (known: 'web', "
                           "'dns')"),
                          (("backend", "remove", "10.0.1.9", "--vip", "web"),
                           "VIP 'web' has no backend '10.0.1.9'")):
        r = ask("y", *args)  # nothing to confirm: refused before asking
        assert r.returncode == 5 and message in r.stderr and "[y/N]" not in r.stdout, r
    with agent.client() as c:
        assert backends(c) == {} and {v["name"] for v in c.call("vips")} == {"web", "dns"}


class FailingDataplane:
    """Refuses every apply as the real one does (ApplyError), or with a bug of its own."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def stage(self, cfg: Any, stop: Any = None) -> int:
        return 0  # writes nothing a packet sees: the apply is what fails

    def apply(self, cfg: Any) -> None:
        raise self.error


@pytest.mark.parametrize("error,code,message", [
    (ApplyError("applying the config failed ([Errno 28] No space left on device); previous "
                "state restored"), -32003,
     "applying the config failed ([Errno 28] No space left on device); previous state "
     "restored"),
    (ZeroDivisionError("a bug"), -32603, "internal error in {method}: the agent logged it; "
                                         "nothing was applied"),
])
def test_a_data_plane_failure_changes_nothing(tmp_path: Any, monkeypatch: Any,
                                              caplog: pytest.LogCaptureFixture,
                                              error: Exception, code: int,
                                              message: str) -> None:
    """The data plane's refusal is -32003 with its reason; anything unexpected is -32603,
    logged with its traceback, never "the data plane refused". Either way the intent, the
    audit log and the listeners saw nothing."""
    import asyncio

    from xlb.agent import core
    from xlb.agent.server import Server
    from xlb.agent.settings import load

    monkeypatch.setattr(core, "run_dir", lambda name: str(tmp_path))
    path = tmp_path / "agent.toml"
    path.write_text(config(str(tmp_path), "none"))
    agent = core.Agent(load(str(path)))
    agent.dp = FailingDataplane(error)  # type: ignore[assignment]
    events: list[Any] = []
    agent.listeners.append(lambda kind, doc: events.append(doc))
    desired = agent.desired
    server = Server(agent)
    root = core.Caller(0, "root", True)
    for method, params in (("add_backend", {"vip": "web", "address": "10.0.1.9"}),
                           ("remove_backend", {"vip": "web", "address": "10.0.1.2"}),
                           ("add_vip", {"name": "api", "address": "10.100.0.20", "port": 443,
                                        "protocol": "tcp"}),
                           ("remove_vip", {"name": "dns"})):
        line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        reply = asyncio.run(answer(server, line.encode(), root))
        assert reply is not None
        assert reply["error"] == {"code": code, "message": message.format(method=method)}
        assert agent.desired is desired and agent.down == {}
        if code == -32603:
            assert "ZeroDivisionError: a bug" in caplog.text, "the bug is logged with its cause"
    assert agent.audit.tail() == [] and events == []
    assert not os.path.exists(tmp_path / "agent.json")


def test_bad_agent_settings_are_one_clear_error(tmp_path: Any) -> None:
    """Every problem of the file (agent, instance and VIPs), one per line, each with the
    path and its location, in one style; no traceback, nothing started."""
    path = os.path.join(str(tmp_path), "bad.toml")
    with open(path, "w") as f:
        f.write('[agent]\nmetrics = "nowhere"\ntick = 0.01\nhealth = "ping"\n'
                'health_down_flows = "drop"\nhealth_rise = 0\ntikc = 1\n'
                '[instance]\nname = "x"\ninterface = "eth0"\nmtu = 100\n'
                '[[vip]]\naddress = "10.0.0.1"\nport = 80\nprotocol = "sctp"\n')
    r = subprocess.run([sys.executable, "-m", "xlb", "agent", "--config", path],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == "xlb: invalid config:"
    assert lines[1:] == [f"{path}: {e}" for e in (
        "instance.mtu: 100 is out of range 576..3522",
        "vip[0].protocol: 'sctp' is not 'tcp' or 'udp'",
        "agent: unknown key 'tikc'",
        "agent.tick: 0.01 is out of range 0.25..10",
        "agent.metrics: 'nowhere' is not host:port or unix:PATH (\"\" turns it off)",
        "agent.health: 'ping' is not 'tcp', 'http' or 'none'",
        "agent.health_rise: 0 must be >= 1",
        "agent.health_down_flows: 'drop' is not 'move' or 'stay'")]


def test_active_connections_reach_snapshot_cli_and_metrics(agent: AgentProc) -> None:
    """The agent reports the data plane's active-flow count of the last complete epoch."""
    import urllib.request

    from xlb.dataplane import structs as S
    from xlb.dataplane.manager import Dataplane, activity_epoch

    with Dataplane("agt", agent.env["XLB_PIN_ROOT"], agent.env["XLB_RUN_ROOT"]) as dp:
        (bid,) = [i for i, b in dp.backend_entries().items()
                  if str(S.unpack_addr(b.addr, b.family)) == "10.0.1.2"]
        m = dp.maps["backend_stats"]
        epoch = activity_epoch(time.monotonic_ns())
        vals = (S.BackendStats * m.ncpu)()
        # what the data plane leaves after 7 flows in each of the last two epochs
        # (both, so that an epoch boundary during the test does not matter)
        for e in (epoch - 1, epoch):
            vals[0].active[e & 1], vals[0].active_epoch[e & 1] = 7, e
        m.set(bid, vals)
    deadline = time.monotonic() + 10
    with agent.client() as c:
        while True:
            (web,) = c.call("backends", vip="web")
            if web["active_connections"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        rows = {b["address"]: b["active_connections"] for b in web["backends"]}
        assert rows == {"10.0.1.1": 0, "10.0.1.2": 7} and web["active_connections"] == 7
        port = c.call("status")["metrics_port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'xlb_backend_active_connections{backend="10.0.1.2"} 7.0' in text
    assert 'xlb_vip_active_connections{vip="web"} 7.0' in text
    r = subprocess.run([sys.executable, "-m", "xlb", "backends", "--vip", "web",
                        "--socket", agent.socket], capture_output=True, text=True,
                       env=agent.env, timeout=60)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "10.0.1.2" in x)
    assert "      7 active" in line and "7 active," in r.stdout


def _until_down(agent: AgentProc, address: str) -> None:
    deadline = time.monotonic() + 15
    with agent.client() as c:
        while backends(c)[address]["health"] == "up":
            assert time.monotonic() < deadline, "never found down"
            time.sleep(0.1)
        assert backends(c)[address]["state"] == "down"


def test_down_backends_keep_their_tcp_flows_when_configured(staying: AgentProc) -> None:
    """health_down_flows = "stay": out of Maglev, but still a valid backend for the flows
    of its TCP VIP (web); tests/agent/test_failure.py shows its UDP flows (dns) move."""
    _until_down(staying, "10.0.1.1")
    time.sleep(0.5)
    assert "10.0.1.1" in pinned(staying)["backends"]


def test_down_backends_flows_move_by_default(moving: AgentProc) -> None:
    """health_down_flows = "move": the backend is invalidated, its flows rebalance."""
    _until_down(moving, "10.0.1.1")
    deadline = time.monotonic() + 5
    while "10.0.1.1" in pinned(moving)["backends"]:
        assert time.monotonic() < deadline, "the down backend is still valid in the data plane"
        time.sleep(0.1)
    with moving.client() as c:  # the intent still has it: it comes back when healthy
        assert "10.0.1.1" in backends(c)


def dataplane_only(agent: AgentProc, weight: int) -> str:
    """The agent's config without its [agent] table, web's second backend at `weight`: what
    an operator would hand `xlb dataplane apply`."""
    with open(agent.path) as f:
        text = f.read()
    text = text[text.index("[instance]"):].replace("weight = 3", f"weight = {weight}")
    path = os.path.join(agent.tmp, "dataplane.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def xlb_cli(agent: AgentProc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xlb", *args], capture_output=True, text=True,
                          env=agent.env, timeout=60, stdin=subprocess.DEVNULL)


def test_one_writer_per_instance(agent: AgentProc) -> None:
    """While the agent runs, a second agent and `xlb dataplane load|apply|unload` are
    refused, naming it, and change nothing; once it is gone (even killed), they work."""
    assert agent.proc is not None
    owner = f"instance agt is run by its agent (pid {agent.proc.pid}, since "
    second = xlb_cli(agent, "agent", "--config", agent.path)
    assert second.returncode == 5 and f"cannot start another agent: {owner}" in second.stderr
    assert "Traceback" not in second.stderr
    dp = dataplane_only(agent, 1)
    for args, what in ((("dataplane", "apply", "--config", dp), "apply a config"),
                       (("dataplane", "load", "--config", dp), "load the data plane"),
                       (("dataplane", "unload", "--instance", "agt"), "unload the data plane")):
        r = xlb_cli(agent, *args)
        assert r.returncode == 5 and f"cannot {what}: {owner}" in r.stderr, r
    with agent.client() as c:  # the first agent is untouched: its socket, its weights
        assert abs(backends(c)["10.0.1.2"]["ring_share"] - 0.75) < 0.001
    assert xdp.query("xlb0", NS).prog_id
    agent.stop(signal.SIGKILL)  # the kernel drops the lock with the process
    r = xlb_cli(agent, "dataplane", "apply", "--config", dp)
    assert r.returncode == 0, r.stderr
    with Dataplane("agt", agent.env["XLB_PIN_ROOT"], agent.env["XLB_RUN_ROOT"]) as d:
        weights = {b["address"]: b["weight"]
                   for b in (d.applied_config() or {})["config"]["vip"][0]["backend"]}
    assert weights == {"10.0.1.1": 1, "10.0.1.2": 1}


def alarm_events(c: AgentClient, until: Callable[[dict[str, Any]], bool],
                 timeout: float = 10.0) -> list[dict[str, Any]]:
    """The alarm events of a subscription (already made on `c`) until one satisfies
    `until`; fails after `timeout` seconds."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    c.sock.settimeout(timeout)
    for kind, doc in c.notifications():
        if kind == "event" and doc["kind"] == "alarm":
            seen.append(doc)
            if until(doc):
                return seen
        assert time.monotonic() < deadline, f"no such alarm within {timeout} s: {seen}"
    raise AssertionError("the subscription ended")


def pin_ids(agent: AgentProc) -> dict[str, int]:
    """The kernel ids of the instance's pinned maps (the same map keeps its id)."""
    folder = os.path.join(agent.env["XLB_PIN_ROOT"], "agt")
    out = {}
    for name in ("conns", "backends", "vips", "rings"):
        fd = bpfsys.obj_get(os.path.join(folder, name))
        try:
            out[name] = int(bpfsys.map_info(fd).id)
        finally:
            os.close(fd)
    return out


def test_taken_from_underneath_is_put_back_and_alarmed(agent: AgentProc) -> None:
    """`ip link set dev … xdp off` and `rm -rf` of the pins: the agent sees it within a tick,
    puts back the same program and the same maps, and says so (event, snapshot, log); a
    restart then adopts the same connection table."""
    prog = xdp.query("xlb0", NS).prog_id
    ids = pin_ids(agent)
    with agent.client() as c:
        c.call("drain", address="10.0.1.2", vip="web")
        stream = agent.client()
        stream.call("subscribe")
        subprocess.run(["ip", "-n", NS, "link", "set", "dev", "xlb0", "xdp", "off"], check=True)
        (event,) = alarm_events(stream, lambda e: e["what"] == "attach")
        assert event["cleared"] and "detached from xlb0" in event["message"]
        assert "re-attached (native XDP" in event["message"]
        assert xdp.query("xlb0", NS).prog_id == prog, "the same program, back on the hook"
        shutil.rmtree(os.path.join(agent.env["XLB_PIN_ROOT"], "agt"))
        (event,) = alarm_events(stream, lambda e: e["what"] == "pins")
        assert event["cleared"] and "re-pinned from the maps the agent holds" in event["message"]
        stream.close()
        assert pin_ids(agent) == ids, "the same maps, pinned again"
        wait_until(lambda: {a["what"] for a in c.call("status")["alarms"]} == {"attach", "pins"},
                   "both alarms in the snapshot")  # the next tick's snapshot carries them
        assert not any(a["active"] for a in c.call("status")["alarms"]), "both restored"
    agent.stop()
    assert "ALARM xlb's XDP program was detached from xlb0" in agent.log()
    agent.start()
    assert pin_ids(agent) == ids, "the restart adopted the same maps"
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["state"] in ("drained", "draining")


def test_with_tamper_alarm_the_agent_only_raises_the_alarm(alarming: AgentProc) -> None:
    prog = xdp.query("xlb0", NS).prog_id
    with alarming.client() as stream:
        stream.call("subscribe")
        xdp.detach("xlb0", NS)
        (event,) = alarm_events(stream, lambda e: e["what"] == "attach")
        assert not event["cleared"] and "not re-attached" in event["message"]
        assert xdp.query("xlb0", NS).prog_id == 0
        with alarming.client() as c:
            (alarm,) = c.call("status")["alarms"]
            assert alarm["active"] and alarm["what"] == "attach"
        fd = bpfsys.obj_get(os.path.join(alarming.env["XLB_PIN_ROOT"], "agt", "prog"))
        try:  # the operator puts it back: the alarm is over
            xdp.attach("xlb0", fd, "native", NS)
        finally:
            os.close(fd)
        (event,) = alarm_events(stream, lambda e: e["cleared"])
        assert event["message"].startswith("over: ") and xdp.query("xlb0", NS).prog_id == prog
