"""The lab's BGP fabric end to end: two LBs announce the VIPs to BIRD, the router spreads
flows over both (ECMP), and taking one LB out (maintenance, its ExaBGP killed, its
backends unreachable from it only, its agent restarted) moves its flows to the other
without breaking a long-lived connection: the LBs share no per-connection state, but both
pick the same backend for a flow (the same Maglev table). Real TCP, real BIRD, real ExaBGP.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from tests.e2e.clients import LBS, agents
from xlb.dataplane.manager import Dataplane
from xlb.dataplane.structs import Reason
from xlb.lab import fabric, faults, run, topology
from xlb.lab.failover import kernel_hops, measure, wait_hops
from xlb.paths import default_socket

V4, V6 = f"{topology.VIP}/32", f"{topology.VIP6}/128"


def bgp(lb: str) -> dict[str, Any]:
    from xlb.api.client import AgentClient

    with AgentClient(default_socket(lb)) as agent:
        return agent.call("bgp")  # type: ignore[no-any-return]


def call(lb: str, method: str, **params: Any) -> dict[str, Any]:
    from xlb.api.client import AgentClient

    with AgentClient(default_socket(lb)) as agent:
        return agent.call(method, **params)  # type: ignore[no-any-return]


def encapsulated(lb: str) -> int:
    with Dataplane(lb) as dp:
        return int(dp.counters().reasons[Reason.TX_ENCAP, 0])


def new_connections(seconds: float = 1.5) -> dict[str, Any]:
    gen = run.traffic(["--rate", "100", "--duration", str(seconds), "--json"], quiet=True)
    out, _ = gen.communicate(timeout=60)
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def assert_unharmed(result: dict[str, Any]) -> None:
    """Long-lived connections spread over both LBs before, none broken; no new one failed."""
    assert set(result["carried_before"]) == set(LBS), result["carried_before"]
    assert result["broken"] == 0, result["broken_flows"]
    assert result["new_failed"] == 0 and result["new_ok"] > 100, result
    assert result["udp_failed"] == 0, result


def test_both_lbs_announce_and_the_router_has_two_next_hops(lab: dict[str, Any]) -> None:
    assert lab["routes"] == {V4: ["lb1", "lb2"], V6: ["lb1", "lb2"]}
    assert lab["seconds"] < 30
    router = run.status()["router"]
    assert set(router["sessions"].values()) == {"Established"}, router
    assert {p: kernel_hops(topology.Lab(), p) for p in (V4, V6)} == {
        V4: ["lb1", "lb2"], V6: ["lb1", "lb2"]}, "BIRD installed the ECMP routes"
    for lb in LBS:
        doc = bgp(lb)
        assert doc["speaker"] == "running" and doc["pid"] > 0, doc
        assert {n["state"] for n in doc["neighbors"]} == {"established"}, doc["neighbors"]
        assert {(p["prefix"], p["announced"], p["cause"]) for p in doc["prefixes"]} == {
            (V4, True, "serving"), (V6, True, "serving")}


def test_traffic_reaches_both_lbs(lab: dict[str, Any]) -> None:
    before = {lb: encapsulated(lb) for lb in LBS}
    summary = new_connections()
    assert summary["tcp_failed"] == 0 and summary["tcp_ok"] > 100, summary
    grew = {lb: encapsulated(lb) - before[lb] for lb in LBS}
    assert all(n > 0 for n in grew.values()), grew
    assert min(grew.values()) > 0.2 * sum(grew.values()), f"ECMP spread very unevenly: {grew}"


def test_maintenance_of_lb1_under_traffic_breaks_no_connection(lab: dict[str, Any]) -> None:
    """bgp_withdraw all on lb1: the router drops lb1 within a few seconds; the connections
    lb1 carried continue through lb2, to the same backend; then lb1 comes back."""
    def in_maintenance() -> None:
        doc = bgp("lb1")
        assert doc["maintenance"] and not any(p["announced"] for p in doc["prefixes"]), doc
        assert {p["cause"] for p in doc["prefixes"]} == {"maintenance"}
        assert all(p["announced"] for p in bgp("lb2")["prefixes"])

    result = measure(lambda: call("lb1", "bgp_withdraw", all=True), ("lb2",),
                     lambda: call("lb1", "bgp_announce", all=True), check=in_maintenance)
    assert_unharmed(result)
    assert result["converged_s"] < 5 and result["back_s"] < 10, result


def test_in_maintenance_every_new_connection_goes_through_lb2(lab: dict[str, Any]) -> None:
    call("lb1", "bgp_withdraw", all=True)
    try:
        wait_hops(topology.Lab(), ("lb2",), timeout=10)
        before = {lb: encapsulated(lb) for lb in LBS}
        summary = new_connections()
        assert summary["tcp_failed"] == 0 and summary["tcp_ok"] > 100, summary
        assert encapsulated("lb1") == before["lb1"], "a new connection went through lb1"
        assert encapsulated("lb2") - before["lb2"] >= 5 * summary["tcp_ok"]
    finally:
        call("lb1", "bgp_announce", all=True)
    wait_hops(topology.Lab(), LBS, timeout=10)


def test_exabgp_killed_is_restarted_and_announces_again(lab: dict[str, Any]) -> None:
    """SIGKILL to lb1's ExaBGP: BIRD sees the TCP session close and drops lb1 at once; the
    agent starts a new ExaBGP (back-off 1 s), which announces again; nothing breaks."""
    first = bgp("lb1")
    result = measure(lambda: faults.kill_exabgp("lb1"), ("lb2",), lambda: None)
    assert_unharmed(result)
    after = bgp("lb1")
    assert after["pid"] not in (0, first["pid"]) and after["restarts"] == first["restarts"] + 1
    assert all(p["announced"] for p in after["prefixes"])
    assert result["back_s"] < 15, result


def test_backends_unreachable_from_lb1_only_withdraw_that_vip_there(
        lab: dict[str, Any]) -> None:
    """lb1 loses its path to the backends' IPv4 network (its health checks fail, lb2's
    pass): lb1 withdraws the v4 VIP and keeps the v6 one, lb2 keeps both; the router sends
    the v4 VIP to lb2 only and traffic goes on."""
    def one_vip_withdrawn() -> None:
        prefixes = {p["prefix"]: p for p in bgp("lb1")["prefixes"]}
        assert not prefixes[V4]["announced"] and prefixes[V4]["cause"] == "no_backend"
        assert "0 of 3" in prefixes[V4]["reason"], prefixes[V4]
        assert prefixes[V6]["announced"]
        assert kernel_hops(topology.Lab(), V6) == ["lb1", "lb2"]
        assert all(p["announced"] for p in bgp("lb2")["prefixes"])

    try:
        result = measure(lambda: faults.cut_backends("lb1"), ("lb2",),
                         lambda: faults.restore_backends("lb1"), prefixes=(V4,),
                         check=one_vip_withdrawn)
    finally:
        if kernel_hops(topology.Lab(), V4) != ["lb1", "lb2"]:
            faults.restore_backends("lb1")
    assert_unharmed(result)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_agent_restart_moves_flows_away_and_back_without_breaking_any(
        lab: dict[str, Any], sig: signal.Signals) -> None:
    """lb1's agent ends (SIGTERM: it stops its ExaBGP, which sends a Cease; SIGKILL: the
    kernel sends ExaBGP SIGTERM, PR_SET_PDEATHSIG): the router drops lb1 at once, its data
    plane keeps forwarding what still arrives; the new agent announces again."""
    def session_gone() -> None:
        sessions = fabric.sessions(topology.Lab())
        assert sessions["lb1_v4"] != "Established" and sessions["lb1_v6"] != "Established"
        assert sessions["lb2_v4"] == sessions["lb2_v6"] == "Established"

    result = measure(lambda: run.stop_agent("lb1", sig), ("lb2",),
                     lambda: run.start_agent("lb1", routes=False), check=session_gone)
    assert_unharmed(result)
    assert result["converged_s"] < 12, result  # stop_agent waits for the agent to end
    with agents() as clients:
        assert all(p["announced"] for p in clients["lb1"].call("bgp")["prefixes"])
