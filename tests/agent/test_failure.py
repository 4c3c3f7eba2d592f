"""The agent when things fail: many backends at once, the flows of a dead backend, a VIP
with (nearly) no healthy backend, and a config file edited between two runs.

Real agent processes against a veth pair in a namespace made here; backends are made
healthy by listening on their address inside that namespace, and are unreachable
otherwise. Everything is removed afterwards.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from tests.agent.test_agent import PROBES_OFF, AgentProc
from xlb.agent.health import socket_in_netns
from xlb.api.client import AgentClient
from xlb.dataplane import lifecycle
from xlb.dataplane import structs as S
from xlb.dataplane.manager import Dataplane, key_label
from xlb.lab import netns

NS = f"xlbfb-{os.getpid()}"
WEB_DNS = [("web", "10.100.0.10", 80, "tcp", [("10.0.1.1", 1), ("10.0.1.2", 3)]),
           ("dns", "10.100.0.10", 53, "udp", [("10.0.1.1", 1), ("10.0.1.2", 1)])]


def config(tmp: str, vips: list[tuple[str, str, int, str, list[tuple[str, int]]]],
           agent: str = "", max_backends: int = 16, health: str = "tcp") -> str:
    text = [f"""# the agent under test
{PROBES_OFF}
[agent]
socket = "{tmp}/agent.sock"
tick = 0.25
audit_log = "{tmp}/audit.jsonl"
metrics = "127.0.0.1:0"
health = "{health}"
{agent}

[instance]
name = "fb"
interface = "xlb0"
netns = "{NS}"
max_vips = {max(4, len(vips))}
max_backends = {max_backends}
max_connections = 4096
"""]
    for name, address, port, proto, backends in vips:
        text.append(f'[[vip]]\nname = "{name}"\naddress = "{address}"\nport = {port}\n'
                    f'protocol = "{proto}"\n')
        text += [f'[[vip.backend]]\naddress = "{a}"\nweight = {w}\n' for a, w in backends]
    return "\n".join(text)


def listen(address: str, port: int = 80) -> socket.socket:
    """A TCP server on `address` inside the namespace: its health checks pass."""
    subprocess.run(["ip", "-n", NS, "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    s = socket_in_netns(NS, socket.AF_INET, socket.SOCK_STREAM)
    s.bind((address, port))
    s.listen(64)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                s.accept()[0].close()

    threading.Thread(target=serve, daemon=True).start()
    return s


@contextlib.contextmanager
def running(roots: tuple[str, str], text: Callable[[str], str],
            healthy: tuple[str, ...] = ()) -> Iterator[AgentProc]:
    pin_root, run_root = roots
    tmp = tempfile.mkdtemp(prefix="xlb-failure-test-")
    env = {**os.environ, "XLB_PIN_ROOT": pin_root, "XLB_RUN_ROOT": run_root,
           "XLB_STATE_ROOT": tmp}
    netns.create(NS)
    a = AgentProc(tmp, env)
    servers: list[socket.socket] = []
    try:
        netns.veth(NS, "xlb0", NS, "peer0", queues=2)
        servers += [listen(addr) for addr in healthy]
        with open(a.path, "w") as f:
            f.write(text(tmp))
        a.start()
        yield a
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        for s in servers:
            s.close()
        if os.path.isdir(os.path.join(pin_root, "fb")):
            lifecycle.unload_instance("fb", remove_pins=True, pin_root=pin_root,
                                      run_root=run_root)
        netns.remove(NS)
        shutil.rmtree(tmp, ignore_errors=True)


def wait(cond: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def backends(a: AgentProc, vip: str) -> dict[str, dict[str, Any]]:
    with a.client() as c:
        (v,) = c.call("backends", vip=vip)
    return {b["address"]: b for b in v["backends"]}


def vips(a: AgentProc) -> dict[str, dict[str, Any]]:
    with a.client() as c:
        return {v["name"]: v for v in c.call("backends")}


def dataplane(a: AgentProc) -> Dataplane:
    return Dataplane("fb", a.env["XLB_PIN_ROOT"], a.env["XLB_RUN_ROOT"])


def valid(a: AgentProc) -> set[str]:
    """The backends the data plane holds valid (their flows may use them)."""
    with dataplane(a) as dp:
        return {str(S.unpack_addr(b.addr, b.family)) for b in dp.backend_entries().values()}


def add_flow(a: AgentProc, vip: str, backend: str, sport: int) -> S.FlowKey:
    """A connection-table entry as the data plane makes it: `vip`'s flow on `backend`."""
    with dataplane(a) as dp:
        (key, meta), = [(k, m) for k, m in dp.vip_entries().values() if key_label(k) == vip]
        (bid,) = [i for i, b in dp.backend_entries().items()
                  if str(S.unpack_addr(b.addr, b.family)) == backend]
        flow = S.FlowKey(src=S.pack_addr(ipaddress.ip_address("198.51.100.7")),
                         dst=key.addr, sport=S.net_port(sport), dport=key.port,
                         proto=key.proto, family=key.family)
        dp.maps["conns"].set(flow, S.Conn(backend_id=bid, vip_id=meta.vip_id,
                                          last_seen_ns=time.monotonic_ns()))
        return flow


def has_flow(a: AgentProc, flow: S.FlowKey) -> bool:
    with dataplane(a) as dp:
        return dp.maps["conns"].get(flow) is not None


# -- the flows of a backend found down ---------------------------------------------------------

def test_a_dead_backends_flows_move_by_default(roots: tuple[str, str]) -> None:
    """UDP and TCP: the backend is invalidated once it has been down a tick, so every flow
    on it goes to a healthy backend on its next packet (a TCP one is answered with a reset
    there, and its client reconnects at once instead of hanging)."""
    with running(roots, lambda tmp: config(tmp, WEB_DNS), healthy=("10.0.1.2",)) as a:
        wait(lambda: backends(a, "web")["10.0.1.1"]["health"] != "up", "10.0.1.1 found down")
        wait(lambda: "10.0.1.1" not in valid(a), "10.0.1.1 invalidated in the data plane")
        assert backends(a, "web")["10.0.1.2"]["ring_share"] == 1.0
        assert backends(a, "dns")["10.0.1.2"]["ring_share"] == 1.0
        assert backends(a, "dns")["10.0.1.1"]["state"] == "down"
        assert not any(v["panic"] for v in vips(a).values())


def test_with_tcp_flows_staying_udp_flows_still_move(roots: tuple[str, str]) -> None:
    """health_down_flows = "stay": the backend stays valid for its TCP flows (web), and its
    UDP flows (dns) are taken out of the connection table, so their next packet goes to a
    healthy backend instead of to the dead one for as long as the client keeps its port."""
    text = lambda tmp: config(tmp, WEB_DNS, 'health_down_flows = "stay"\n'  # noqa: E731
                              "health_interval = 2.0\nhealth_timeout = 1.0")
    with running(roots, text, healthy=("10.0.1.2",)) as a:
        udp = add_flow(a, "10.100.0.10:53/udp", "10.0.1.1", 5353)
        tcp = add_flow(a, "10.100.0.10:80/tcp", "10.0.1.1", 40000)
        wait(lambda: backends(a, "web")["10.0.1.1"]["health"] != "up", "10.0.1.1 found down")
        wait(lambda: not has_flow(a, udp), "the UDP flow to leave the dead backend")
        assert has_flow(a, tcp), "the TCP flow stays"
        assert "10.0.1.1" in valid(a)
        assert backends(a, "dns")["10.0.1.2"]["ring_share"] == 1.0
        assert ("VIP dns: 1 flow(s) of backend 10.0.1.1 (down) moved to healthy backends"
                in a.log())


# -- fail-open -----------------------------------------------------------------------------------

def test_a_vip_whose_backends_all_fail_their_checks_keeps_serving(
        roots: tuple[str, str]) -> None:
    """A broken check path (here: nothing is reachable) must not take the VIPs down: they
    fail open, with an event, the snapshot, the log, `xlb vips` and the metrics saying so."""
    vipdefs = [WEB_DNS[0], ("dns", "10.100.0.10", 53, "udp", [("10.0.1.1", 1)])]
    with running(roots, lambda tmp: config(tmp, vipdefs)) as a:
        events: list[dict[str, Any]] = []

        def listen_events() -> None:
            with contextlib.suppress(Exception), AgentClient(a.socket) as c:
                for kind, doc in c.subscribe():
                    if kind == "event" and doc["kind"] == "panic":
                        events.append(doc)

        threading.Thread(target=listen_events, daemon=True).start()
        wait(lambda: all(v["panic"] for v in vips(a).values()), "both VIPs in panic")
        web = backends(a, "web")
        assert {b["health"] != "up" for b in web.values()} == {True}
        assert abs(web["10.0.1.1"]["ring_share"] - 0.25) < 0.001, "as if every check passed"
        assert abs(web["10.0.1.2"]["ring_share"] - 0.75) < 0.001
        assert backends(a, "dns")["10.0.1.1"]["ring_share"] == 1.0
        assert valid(a) == {"10.0.1.1", "10.0.1.2"}, "their flows stay, too"
        wait(lambda: len(events) == 2, "two panic events")
        assert {(e["vip"], e["panic"], e["healthy"], e["serving"]) for e in events} == {
            ("web", True, 0, 2), ("dns", True, 0, 1)}
        assert "WARNING xlb.agent.core: VIP web in panic: only 0 of 2 serving backends" in (
            a.log())
        r = subprocess.run([sys.executable, "-m", "xlb", "vips", "--socket", a.socket],
                           capture_output=True, text=True, env=a.env, timeout=60)
        assert r.stdout.count("PANIC") == 2, r.stdout
        with a.client() as c:
            port = c.call("status")["metrics_port"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                         timeout=10).read().decode()
        assert 'xlb_vip_panic{vip="web"} 1.0' in metrics
        with a.client() as c:  # drained backends keep out of it
            c.call("drain", address="10.0.1.2", vip="web")
        web = backends(a, "web")
        assert (web["10.0.1.1"]["ring_share"], web["10.0.1.2"]["ring_share"]) == (1.0, 0.0)


def test_fail_open_can_be_turned_off(roots: tuple[str, str]) -> None:
    with running(roots, lambda tmp: config(tmp, WEB_DNS, "health_panic_threshold = 0")) as a:
        wait(lambda: all(b["health"] != "up" for b in backends(a, "web").values()),
             "every backend found down")
        wait(lambda: not valid(a), "every backend invalidated")
        assert {b["ring_share"] for b in backends(a, "web").values()} == {0}
        assert not any(v["panic"] for v in vips(a).values())


# -- many backends at once ------------------------------------------------------------------------

def test_a_thousand_backends_failing_at_once_leave_the_agent_responsive(
        roots: tuple[str, str]) -> None:
    """They are applied together; `status` keeps answering meanwhile, and SIGTERM ends
    the agent promptly however many verdicts came in."""
    vipdefs = [(f"v{v}", f"10.100.1.{v + 1}", 80, "tcp",
                [(f"10.{v + 1}.0.{b + 1}", 1) for b in range(100)]) for v in range(10)]
    with running(roots, lambda tmp: config(tmp, vipdefs, max_backends=1024)) as a:
        slowest = 0.0
        started = time.monotonic()
        while True:
            t = time.monotonic()
            got = vips(a)
            slowest = max(slowest, time.monotonic() - t)
            down = sum(v["total"] - v["healthy"] for v in got.values())
            if down == 1000 and all(v["panic"] for v in got.values()):
                break
            assert time.monotonic() - started < 30, f"only {down} of 1000 found down in 30 s"
            time.sleep(0.1)
        assert slowest < 5.0, f"a status answer took {slowest:.1f} s"
        assert a.proc is not None
        t = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        a.proc.wait(timeout=30)
        assert time.monotonic() - t < 5.0, "SIGTERM must end the agent promptly"
        assert "agent fb stopped; the data plane keeps running" in a.log()


# -- the config file edited between two runs ----------------------------------------------------

def restart_with(a: AgentProc, edit: Callable[[str], str]) -> None:
    a.stop()
    with open(a.path) as f:
        text = f.read()
    with open(a.path, "w") as f:
        f.write(edit(text))
    a.start()


def audit(a: AgentProc) -> list[dict[str, Any]]:
    with a.client() as c:
        return list(c.call("audit"))


def test_an_edit_that_changes_nothing_keeps_the_drains(roots: tuple[str, str]) -> None:
    """Comments, blank lines, key order and defaults written out are not a change."""
    def same(text: str) -> str:
        text = text.replace("# the agent under test", "# the agent under test, edited\n")
        text = text.replace('address = "10.0.1.2"\nweight = 3\n',
                            'weight = 3     # the big one\nstate = "active"\n'
                            'address = "10.0.1.2"\n')
        return text.replace("max_connections = 4096", "max_connections = 4096\nmtu = 1500")

    with running(roots, lambda tmp: config(tmp, WEB_DNS, health="none")) as a:
        with a.client() as c:
            c.call("drain", address="10.0.1.2", vip="web")
        restart_with(a, same)
        assert backends(a, "web")["10.0.1.2"]["state"] in ("drained", "draining")
        assert backends(a, "web")["10.0.1.2"]["ring_share"] == 0
        assert "was edited without changing what it says: the saved intent" in a.log()
        assert [e["action"] for e in audit(a)] == ["drain"]


def test_an_edit_that_changes_something_says_exactly_what_it_discards(
        roots: tuple[str, str]) -> None:
    with running(roots, lambda tmp: config(tmp, WEB_DNS, health="none")) as a:
        with a.client() as c:
            c.call("drain", address="10.0.1.2", vip="web")
            c.call("weight", address="10.0.1.1", vip="dns", weight=5)
        restart_with(a, lambda text: text.replace('address = "10.0.1.1"\nweight = 1',
                                                  'address = "10.0.1.1"\nweight = 2', 1))
        web = backends(a, "web")
        assert (web["10.0.1.1"]["weight"], web["10.0.1.2"]["state"]) == (2, "active")
        assert backends(a, "dns")["10.0.1.1"]["weight"] == 1
        log = a.log()
        assert "saved intent discarded: " in log and "changed since the intent was saved" in log
        assert "discarded: web: backend 10.0.1.2 state active → drained" in log
        assert "discarded: dns: backend 10.0.1.1 weight 1 → 5" in log
        entry = audit(a)[-1]
        assert (entry["action"], entry["user"], entry["params"]["name"]) == (
            "discard_intent", "agent", "fb")
        assert entry["params"]["discarded"] == ["web: backend 10.0.1.2 state active → drained",
                                                "dns: backend 10.0.1.1 weight 1 → 5"]
        assert entry["before"]["web"]["backend"][1]["state"] == "drained"
        assert entry["after"]["web"]["backend"][1]["state"] == "active"
        r = subprocess.run([sys.executable, "-m", "xlb", "audit", "--socket", a.socket],
                           capture_output=True, text=True, env=a.env, timeout=60)
        assert ("agent (uid 0) discard_intent fb: dns: backend 10.0.1.1 weight 5 → 1; web: "
                "backend 10.0.1.1 weight 1 → 2, backend 10.0.1.2 state drained → active"
                in r.stdout), r.stdout
        with open(os.path.join(a.env["XLB_RUN_ROOT"], "fb", "agent.json")) as f:
            assert json.load(f)["desired"]["vip"][0]["backend"][1]["state"] == "active"

