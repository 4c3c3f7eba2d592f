"""The agent with a [bgp] table against a real router: BIRD 2 (xlb/lab/bird.py) in a
namespace of its own, joined to the agent's namespace by a veth pair, one session per
family. What BIRD has is the truth: routes announced while a VIP serves, withdrawn when
health, an operator or maintenance says so; ExaBGP ends with the agent (SIGTERM and
SIGKILL) and the operators' state outlives it.

The backends are two addresses on the agent namespace's loopback with a TCP listener the
test starts and stops (the health checks run from that namespace)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.test_agent import NS, AgentProc, as_nobody, running_agent
from tests.helpers import promtool_check, samples, scrape, wait_for
from xlb.api import protocol as P
from xlb.errors import RefusedError
from xlb.lab.bird import Bird, Peer, config

RNS = f"xlbrt-{os.getpid()}"
LB4, RT4 = "198.18.1.2", "198.18.1.1"
LB6, RT6 = "fd00:5f1b:18:1::2", "fd00:5f1b:18:1::1"
V4, V6 = "10.100.0.10/32", "fd00:100::10/128"
CONVERGE = 30.0  # seconds: a session up and a route in BIRD (ExaBGP starts in ~2 s)

BGP = f"""
[[vip]]
name = "web6"
address = "fd00:100::10"
port = 80
protocol = "tcp"
[[vip.backend]]
address = "10.0.1.1"

[bgp]
local_asn = 65001
router_id = "{LB4}"
[[bgp.neighbor]]
address = "{RT4}"
asn = 65000
[[bgp.neighbor]]
address = "{RT6}"
asn = 65000
"""
HEALTH = "health_interval = 0.5\nhealth_timeout = 0.25\nhealth_panic_threshold = 0"
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(64)
while True:
    c, _ = s.accept()
    c.close()
"""


class Fabric:
    """The router (BIRD) and the backends' listener, both ours, ended by PID."""

    def __init__(self, workdir: str) -> None:
        self.bird = Bird(RNS, workdir)
        self.server: subprocess.Popen[bytes] | None = None

    def serve(self) -> None:
        self.server = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c",
                                        SERVER])

    def unserve(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
            self.server = None

    def close(self) -> None:
        self.unserve()
        self.bird.stop()

    def sessions(self) -> dict[str, str]:
        return {k: v for k, v in self.bird.protocols().items() if k.startswith("lb_")}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def build(tmp: str, fabric: Fabric, roots: tuple[str, str], serve: bool = True) -> None:
    """Before the agent starts: its [bgp] table, the link to the router, BIRD, the
    backends' listener; no operator state left by an earlier test."""
    with open(os.path.join(tmp, "agent.toml"), "a") as f:
        f.write(BGP)
    try:
        os.unlink(os.path.join(roots[1], "agt", "bgp.json"))
    except FileNotFoundError:
        pass
    subprocess.run(["ip", "netns", "add", RNS], check=True)
    _ip("-n", RNS, "link", "set", "lo", "up")
    _ip("link", "add", "bgp0", "netns", NS, "type", "veth", "peer", "name", "rtr0", "netns",
        RNS)
    for ns, dev, v4, v6 in ((NS, "bgp0", LB4, LB6), (RNS, "rtr0", RT4, RT6)):
        _ip("-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
        _ip("-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
        _ip("-n", ns, "link", "set", dev, "up")
    for backend in ("10.0.1.1", "10.0.1.2"):
        _ip("-n", NS, "addr", "add", f"{backend}/32", "dev", "lo")
    fabric.bird.start(config(65000, RT4, [Peer("lb_v4", LB4, RT4, 65001),
                                          Peer("lb_v6", LB6, RT6, 65001)]))
    if serve:
        fabric.serve()


@pytest.fixture
def lab(roots: tuple[str, str], tmp_path: Any) -> Iterator[tuple[AgentProc, Fabric]]:
    yield from _lab(roots, tmp_path, serve=True)


@pytest.fixture
def dead_lab(roots: tuple[str, str], tmp_path: Any) -> Iterator[tuple[AgentProc, Fabric]]:
    """The backends do not answer from the start."""
    yield from _lab(roots, tmp_path, serve=False)


def _lab(roots: tuple[str, str], tmp_path: Any,
         serve: bool) -> Iterator[tuple[AgentProc, Fabric]]:
    fabric = Fabric(str(tmp_path))
    try:
        for a in running_agent(roots, "tcp", HEALTH,
                               before_start=lambda tmp: build(tmp, fabric, roots, serve)):
            yield a, fabric
    finally:
        fabric.close()
        if os.path.exists(f"/run/netns/{RNS}"):
            subprocess.run(["ip", "netns", "del", RNS], check=False)


def bgp(a: AgentProc) -> P.Bgp:
    with a.client() as c:
        doc: P.Bgp = c.call("bgp")
    return doc


def prefixes(a: AgentProc) -> dict[str, P.BgpPrefix]:
    return {p["prefix"]: p for p in bgp(a)["prefixes"]}


def routed(fabric: Fabric, v4: list[str], v6: list[str], timeout: float = CONVERGE) -> None:
    """BIRD's next hops for the two VIPs become these."""
    def now() -> tuple[list[str], list[str]]:
        return fabric.bird.next_hops(V4), fabric.bird.next_hops(V6)
    try:
        wait_for(lambda: now() == (v4, v6), f"BIRD's routes {v4}, {v6}", timeout, every=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}; BIRD has {now()}, sessions {fabric.sessions()}") from None


def test_announced_while_serving_withdrawn_while_no_backend(
        lab: tuple[AgentProc, Fabric]) -> None:
    a, fabric = lab
    routed(fabric, [LB4], [LB6])
    doc = bgp(a)
    assert P.conforms(doc, P.Bgp) == []
    assert (doc["enabled"], doc["speaker"], doc["local_asn"], doc["router_id"]) == (
        True, "running", 65001, LB4)
    assert doc["pid"] > 0
    states = {n["peer"]: (n["state"], n["family"], n["peer_asn"]) for n in doc["neighbors"]}
    assert states == {RT4: ("established", "ipv4 unicast", 65000),
                      RT6: ("established", "ipv6 unicast", 65000)}
    got = prefixes(a)
    assert (got[V4]["announced"], got[V4]["cause"], got[V4]["vips"]) == (
        True, "serving", ["web", "dns"])
    assert got[V4]["peers"] == [RT4] and got[V6]["peers"] == [RT6]

    fabric.unserve()  # every backend down: this LB cannot serve either VIP
    routed(fabric, [], [])
    got = prefixes(a)
    assert (got[V4]["announced"], got[V4]["cause"]) == (False, "no_backend")
    assert got[V4]["reason"] == ("web: 0 of 2 backends healthy and undrained; "
                                 "dns: 0 of 1 backends healthy and undrained")
    assert fabric.sessions() == {"lb_v4": "Established", "lb_v6": "Established"}

    fabric.serve()
    routed(fabric, [LB4], [LB6])
    kinds = [(e["kind"], e["message"].split(" ")[0]) for e in bgp(a)["events"]]
    assert kinds.count(("withdraw", V4)) == 1 and kinds.count(("announce", V4)) == 2

    with a.client() as c:
        port = c.call("status")["metrics_port"]
    text = scrape(port)
    assert promtool_check(text) == ""
    got_m = samples(text)
    assert got_m[("xlb_bgp_session_up", (("peer", RT4),))] == 1
    assert got_m[("xlb_bgp_session_state", (("peer", RT6), ("state", "established")))] == 1
    assert got_m[("xlb_bgp_prefix_announced", (("prefix", V6),))] == 1
    assert got_m[("xlb_bgp_maintenance", ())] == 0
    assert got_m[("xlb_bgp_updates_sent_total", (("peer", RT4),))] >= 3  # announce,
    # withdraw, announce


def test_nothing_is_announced_before_the_backends_were_checked(
        dead_lab: tuple[AgentProc, Fabric]) -> None:
    """A starting agent counts every backend healthy until its checks say otherwise; the
    routers must not hear of a VIP meanwhile."""
    a, fabric = dead_lab
    seen: list[tuple[list[str], list[str]]] = []

    def established() -> bool:
        seen.append((fabric.bird.next_hops(V4), fabric.bird.next_hops(V6)))
        return fabric.sessions() == {"lb_v4": "Established", "lb_v6": "Established"}
    wait_for(established, "both sessions", CONVERGE, every=0.1)
    time.sleep(1.0)
    established()
    assert all(hops == ([], []) for hops in seen), seen
    doc = bgp(a)
    assert not [e for e in doc["events"] if e["kind"] == "announce"], doc["events"]
    assert {p["cause"] for p in doc["prefixes"]} == {"no_backend"}
    assert doc["events"][0]["message"].startswith("ExaBGP starts in 1.5 s, after the first "
                                                  "health checks")


def test_exabgp_killed_is_restarted_and_announces_again(lab: tuple[AgentProc, Fabric]) -> None:
    a, fabric = lab
    routed(fabric, [LB4], [LB6])
    pid = bgp(a)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: bgp(a)["restarts"] == 1 and bgp(a)["pid"] not in (0, pid),
             "a new ExaBGP", CONVERGE, every=0.2)
    routed(fabric, [LB4], [LB6])
    assert any(e["kind"] == "speaker" for e in bgp(a)["events"])


READONLY = """
import json, sys
from xlb.api.client import AgentClient
from xlb.errors import XlbError
with AgentClient(sys.argv[1]) as c:
    try:
        c.call("bgp_withdraw", all=True)
        print(json.dumps("allowed"))
    except XlbError as e:
        print(json.dumps([e.rpc_code, str(e)]))
"""


def test_operators_withdraw_and_maintenance_outlives_a_restart(
        lab: tuple[AgentProc, Fabric]) -> None:
    a, fabric = lab
    routed(fabric, [LB4], [LB6])
    with a.client() as c:
        got = c.call("bgp_withdraw", vip="web6")
        assert P.conforms(got, P.BgpChange) == []
        assert got["changed"] and got["prefixes"][0]["cause"] == "operator"
    routed(fabric, [LB4], [], timeout=10)

    code, message = json.loads(as_nobody(a, READONLY).stdout)
    assert code == -32001 and "read-only" in message
    routed(fabric, [LB4], [], timeout=1)  # nothing changed

    with a.client() as c:
        assert c.call("bgp_withdraw", all=True)["maintenance"] is True
        routed(fabric, [], [], timeout=10)
        with pytest.raises(RefusedError, match="in maintenance"):
            c.call("bgp_announce", vip="10.100.0.10")
        audit = [(e["user"], e["action"], e["params"], e["result"][:8])
                 for e in c.call("audit")]
    assert audit == [
        ("root", "bgp_withdraw", {"vip": "web6", "all": False}, "ok"),
        ("nobody", "bgp_withdraw", {"vip": None, "all": True}, "refused:"),
        ("root", "bgp_withdraw", {"vip": None, "all": True}, "ok"),
        ("root", "bgp_announce", {"vip": "10.100.0.10", "all": False}, "refused:")]

    exabgp = bgp(a)["pid"]
    a.stop(signal.SIGTERM)  # ExaBGP goes with the agent, and says so to the router
    assert not os.path.exists(f"/proc/{exabgp}")
    wait_for(lambda: "Established" not in fabric.sessions().values(),
             "BIRD to see both sessions end", 3.0)  # well within the 9 s hold time

    a.start()  # the restarted LB stays in maintenance
    wait_for(lambda: fabric.sessions() == {"lb_v4": "Established", "lb_v6": "Established"},
             "the sessions again", CONVERGE, every=0.2)
    time.sleep(1.0)
    assert (fabric.bird.next_hops(V4), fabric.bird.next_hops(V6)) == ([], [])
    doc = bgp(a)
    assert doc["maintenance"] and doc["maintenance_by"].startswith("root at ")
    assert any("restored after a restart" in e["message"] for e in doc["events"])
    with a.client() as c:
        got = c.call("bgp_announce", all=True)
    assert got["changed"] and not got["maintenance"]
    routed(fabric, [LB4], [LB6])  # web6's own withdrawal ended with the maintenance


def test_a_killed_agent_takes_exabgp_with_it(lab: tuple[AgentProc, Fabric]) -> None:
    a, fabric = lab
    routed(fabric, [LB4], [LB6])
    exabgp = bgp(a)["pid"]
    a.stop(signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{exabgp}"), "ExaBGP to end", 5.0)
    routed(fabric, [], [], timeout=5.0)  # the router moved the VIPs away (before hold time)
    a.start()
    routed(fabric, [LB4], [LB6])


def test_bad_bgp_settings_name_the_field_and_start_nothing(roots: tuple[str, str],
                                                            tmp_path: Any) -> None:
    pin_root, run_root = roots
    path = tmp_path / "agent.toml"
    path.write_text(f"""
[instance]
name = "bgpbad"
interface = "xlb0"
netns = "{NS}-nope"
[[vip]]
name = "web"
address = "10.100.0.10"
port = 80
protocol = "tcp"
[bgp]
local_asn = 65001
router_id = "{LB4}"
announce = ["www"]
[[bgp.neighbor]]
address = "{RT4}"
asn = 0
""")
    env = {**os.environ, "XLB_PIN_ROOT": pin_root, "XLB_RUN_ROOT": run_root,
           "XLB_STATE_ROOT": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "xlb", "agent", "--config", str(path)],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0
    assert "bgp.neighbor[0].asn: 0 is out of range 1..4294967295" in r.stderr
    assert "bgp.announce: no VIP is named 'www' (VIPs: web)" in r.stderr
    assert not os.path.exists(os.path.join(pin_root, "bgpbad"))
    assert not os.path.exists(os.path.join(run_root, "bgpbad"))
