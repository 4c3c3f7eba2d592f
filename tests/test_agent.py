"""The agent over its API: operations, audit, read-only peers, bad requests, restarts.

A real agent process runs against a veth pair in a namespace made here, with
private pin/run/state roots; everything is removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from console.agent.client import AgentClient, AgentError
from console.dataplane import lifecycle, xdp
from console.lab import netns

NS = f"xlbag-{os.getpid()}"
NOBODY = 65534  # nobody:nogroup on Debian


def config(tmp: str) -> str:
    return f"""
[agent]
socket = "{tmp}/agent.sock"
tick = 0.25
audit_log = "{tmp}/audit.jsonl"
operator_group = "xlb-test-operators-none"
socket_group = "nogroup"
metrics = "127.0.0.1:0"

[instance]
name = "agt"
interface = "xlb0"
netns = "{NS}"
max_vips = 4
max_backends = 16
max_connections = 4096

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
    def __init__(self, tmp: str, env: dict[str, str]):
        self.tmp, self.env = tmp, env
        self.path = os.path.join(tmp, "agent.toml")
        self.socket = os.path.join(tmp, "agent.sock")
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "console", "agent", "--config",
                                      self.path], env=self.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited: {self.proc.communicate()}")
            try:
                with AgentClient(self.socket) as c:
                    if c.call("status").get("vips"):
                        return
            except (FileNotFoundError, ConnectionError, AgentError):
                pass
            time.sleep(0.1)
        raise AssertionError("agent did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> str:
        assert self.proc is not None
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=30)
        return out

    def client(self) -> AgentClient:
        return AgentClient(self.socket)


@pytest.fixture
def agent(roots: tuple[str, str]) -> Iterator[AgentProc]:
    pin_root, run_root = roots
    tmp = tempfile.mkdtemp(prefix="xlb-agent-test-")  # 0755 below: the read-only peer
    os.chmod(tmp, 0o755)                              # (nobody) must reach the socket
    env = {**os.environ, "XLB_PIN_ROOT": pin_root, "XLB_RUN_ROOT": run_root,
           "XLB_STATE_ROOT": tmp}
    netns.create(NS)
    a = AgentProc(tmp, env)
    try:
        netns.veth(NS, "xlb0", NS, "peer0", queues=4)
        with open(a.path, "w") as f:
            f.write(config(tmp))
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
        shutil.rmtree(tmp, ignore_errors=True)


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
        with pytest.raises(AgentError, match="without a healthy backend") as e:
            c.call("drain", address="10.0.1.1", vip="dns")
        assert e.value.code == -32002
        assert backends(c, "dns")["10.0.1.1"]["ring_share"] == 1.0
        c.call("drain", address="10.0.1.1", vip="dns", force=True)
        assert backends(c, "dns")["10.0.1.1"]["ring_share"] == 0


READONLY = """
import json, sys
from console.agent.client import AgentClient, AgentError
c = AgentClient(sys.argv[1])
out = {"status": c.call("status")["caller"]}
try:
    c.call("drain", address="10.0.1.2", vip="web")
    out["drain"] = "allowed"
except AgentError as e:
    out["drain"] = [e.code, str(e)]
print(json.dumps(out))
"""


def test_read_only_peer_sees_but_cannot_change(agent: AgentProc) -> None:
    def drop() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    r = subprocess.run([sys.executable, "-c", READONLY, agent.socket], capture_output=True,
                       text=True, preexec_fn=drop, env=agent.env, timeout=60,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == {"user": "nobody", "operator": False}
    assert out["drain"][0] == -32001 and "read-only" in out["drain"][1]
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["state"] == "active"
        assert c.call("audit") == []


def raw(path: str, data: bytes) -> dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(data)
    line = s.makefile("rb").readline()
    s.close()
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.mark.parametrize("data,code", [
    (b"not json\n", -32700),
    (b'{"method": "status"}\n', -32600),
    (b'[1, 2]\n', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "reboot"}\n', -32601),
    (b'{"jsonrpc": "2.0", "id": 2, "method": "drain", "params": {}}\n', -32602),
    (b'{"jsonrpc": "2.0", "id": 3, "method": "weight", "params": '
     b'{"address": "10.0.1.2", "weight": "heavy"}}\n', -32602),
    (b'{"jsonrpc": "2.0", "id": 4, "method": "weight", "params": '
     b'{"address": "10.0.1.2", "weight": 70000}}\n', -32602),
    (b'{"jsonrpc": "2.0", "id": 5, "method": "drain", "params": {"address": "10.9.9.9"}}\n',
     -32002),
    (b'{"jsonrpc": "2.0", "id": 6, "method": "drain", "params": [1]}\n', -32602),
])
def test_malformed_requests_get_clear_errors_and_change_nothing(agent: AgentProc, data: bytes,
                                                                code: int) -> None:
    reply = raw(agent.socket, data)
    assert reply["error"]["code"] == code and reply["error"]["message"]
    with agent.client() as c:
        web = backends(c)
        assert web["10.0.1.2"]["weight"] == 3 and web["10.0.1.2"]["state"] == "active"
        assert c.call("audit") == []


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


def test_subscription_streams_snapshots(agent: AgentProc) -> None:
    with agent.client() as c:
        stream = c.subscribe()
        kinds = [next(stream)[0] for _ in range(3)]
        assert kinds == ["snapshot"] * 3


def test_cli_clients(agent: AgentProc) -> None:
    def xlb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "console", *args, "--socket",
                               agent.socket], capture_output=True, text=True, env=agent.env,
                              timeout=60)
    r = xlb("backends", "--json")
    assert r.returncode == 0 and {b["address"] for v in json.loads(r.stdout)
                                  for b in v["backends"]} == {"10.0.1.1", "10.0.1.2"}
    r = xlb("drain", "10.0.1.2")
    assert r.returncode == 2 and "--yes" in r.stderr
    r = xlb("drain", "10.0.1.1", "--vip", "dns", "--yes")
    assert r.returncode == 1 and "refused" in r.stderr and "Traceback" not in r.stderr
    r = xlb("drain", "10.0.1.2", "--yes")
    assert r.returncode == 0, r.stderr
    r = xlb("audit", "--json")
    assert [e["action"] for e in json.loads(r.stdout)] == ["drain"]


def test_metrics_show_the_console_figures(agent: AgentProc) -> None:
    import urllib.request

    with agent.client() as c:
        port = c.call("status")["metrics_port"]
    assert port > 0
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'xlb_up{instance="agt"} 1.0' in text
    assert 'xlb_backend_ring_share{backend="10.0.1.2",instance="agt",vip="web"} 0.75' in text
    assert 'xlb_vip_backends{instance="agt",vip="dns"} 1.0' in text
    assert "xlb_queue_packets_per_second" in text and "xlb_reason_packets_per_second" in text


def test_bad_agent_settings_are_one_clear_error(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "bad.toml")
    with open(path, "w") as f:
        f.write('[agent]\nmetrics = "nowhere"\ntick = 0.01\nhealth = "ping"\n'
                '[instance]\nname = "x"\ninterface = "eth0"\n')
    r = subprocess.run([sys.executable, "-m", "console", "agent", "--config", path],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    for text in ("agent.metrics", "agent.tick", "agent.health"):
        assert text in r.stderr
