"""The Speaker against a real BIRD, in private namespaces (tests/bgp/fabric.py): sessions,
announce/withdraw as BIRD sees them, ExaBGP's death and restart, its end with the Speaker
and with the process that made it, wrong ASNs and unreachable peers as states. Root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from tests.bgp.fabric import LB_ASN, VIP, VIP6, Fabric, fabric
from tests.helpers import wait_for
from xlb.api import protocol as P
from xlb.bgp.settings import BgpSettings, Neighbor
from xlb.bgp.speaker import Speaker

pytestmark = pytest.mark.root

Make = Callable[..., tuple[Speaker, list[P.BgpEvent]]]


@pytest.fixture
def fab(tmp_path: object) -> Iterator[Fabric]:
    with fabric(str(tmp_path)) as f:
        yield f


@pytest.fixture
def make(tmp_path: object) -> Iterator[Make]:
    """Speakers closed at the end (before the fabric goes), pass or fail."""
    made: list[Speaker] = []

    def new(settings: BgpSettings, netns: str | None, instance: str = "lb1"
            ) -> tuple[Speaker, list[P.BgpEvent]]:
        events: list[P.BgpEvent] = []
        sp = Speaker(settings, instance, netns, events.append, run_root=str(tmp_path))
        made.append(sp)
        sp.start()
        return sp, events

    yield new
    for sp in made:
        sp.close()


def test_a_run_dir_too_deep_for_a_unix_socket_puts_it_in_tmp(tmp_path: object) -> None:
    settings = BgpSettings(LB_ASN, "192.0.2.1", (Neighbor("192.0.2.2", 65000),))
    deep = os.path.join(str(tmp_path), "d" * 120)
    sp = Speaker(settings, "lb1", None, lambda e: None, run_root=deep)
    assert sp.sock_path.startswith("/tmp/xlb-exabgp-lb1-") and len(sp.sock_path) < 107
    assert sp.conf_path.startswith(deep)
    sp.close()


def test_the_bridge_socket_is_the_owners_only_and_the_umask_is_left_alone(
        tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever connects to the bridge socket may announce routes: owner only, whatever the
    umask. The umask is the whole process's: a Speaker that changed it, even for a moment,
    gave another thread's new files its mode (two Speakers binding at once could leave it
    changed for good, and an audit log was made 0600)."""
    def umask(_mask: int) -> int:
        raise AssertionError("the Speaker changed the process's umask")

    monkeypatch.setattr(os, "umask", umask)
    settings = BgpSettings(LB_ASN, "192.0.2.1", (Neighbor("192.0.2.2", 65000),))
    sp = Speaker(settings, "lb1", None, lambda e: None, run_root=str(tmp_path))
    listener = sp._listen()
    try:
        assert oct(os.stat(sp.sock_path).st_mode & 0o777) == oct(0o600)
    finally:
        listener.close()
        sp.close()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def by_peer(sp: Speaker) -> dict[str, P.BgpNeighbor]:
    return {n["peer"]: n for n in sp.neighbors()}


def established(sp: Speaker) -> bool:
    return all(n["state"] == "established" for n in sp.neighbors())


def test_announce_and_withdraw_reach_bird(fab: Fabric, make: Make) -> None:
    lb = fab.lbs[0]
    sp, events = make(lb.settings(), lb.ns)
    sp.set_routes({VIP: True, VIP6: True})
    assert fab.bird.wait(VIP, 1, 15) == [lb.address]
    assert fab.bird.wait(VIP6, 1, 5) == [lb.address6]
    assert fab.bird.protocols()["lb1_v4"] == "Established"
    wait_for(lambda: established(sp), "both sessions established")
    state, pid, restarts, err = sp.state()
    assert (state, restarts, err) == ("running", 0, "") and alive(pid)
    # ExaBGP runs in the LB's namespace, not ours
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{lb.ns}").st_ino
    wait_for(lambda: sp.carried() == {VIP: [lb.router], VIP6: [lb.router6]}, "carried")
    nb = by_peer(sp)[lb.router]
    assert (nb["local_address"], nb["peer_asn"], nb["local_asn"], nb["family"]) == (
        lb.address, 65000, LB_ASN, "ipv4 unicast")
    assert nb["uptime"] > 0 and nb["last_error"] == ""
    # the End-of-RIB and the announce; BIRD's End-of-RIB
    assert (nb["updates_sent"], nb["updates_received"]) == (2, 1)

    sp.set_routes({VIP: False, VIP6: True})
    assert fab.bird.wait(VIP, 0, 5) == []
    assert fab.bird.next_hops(VIP6) == [lb.address6]
    wait_for(lambda: by_peer(sp)[lb.router]["updates_sent"] == 3, "the withdraw counted")
    assert sp.carried() == {VIP: [], VIP6: [lb.router6]}
    # the same wanted set again sends nothing
    sp.set_routes({VIP: False, VIP6: True})
    time.sleep(0.5)
    assert by_peer(sp)[lb.router]["updates_sent"] == 3
    # a prefix no longer wanted at all is withdrawn
    sp.set_routes({VIP: False})
    assert fab.bird.wait(VIP6, 0, 5) == []
    sessions = [e for e in events if e["kind"] == "session"]
    assert {e["peer"] for e in sessions} == {lb.router, lb.router6}
    assert all(e["message"] == "session established (AS 65000)" for e in sessions)


def test_the_router_resets_the_session_and_gets_the_routes_again(fab: Fabric,
                                                                 make: Make) -> None:
    lb = fab.lbs[0]
    sp, events = make(lb.settings(), lb.ns)
    sp.set_routes({VIP: True})
    assert fab.bird.wait(VIP, 1, 15) == [lb.address]
    fab.bird.cmd("restart", "lb1_v4")
    # ExaBGP re-sends what it was told: nothing to do on our side
    wait_for(lambda: any("administrative reset" in e["message"] for e in events), "the Cease")
    assert fab.bird.wait(VIP, 1, 15) == [lb.address]
    wait_for(lambda: sp.carried()[VIP] == [lb.router], "carried again", timeout=10)
    assert sp.state()[:3:2] == ("running", 0)


def test_exabgp_killed_is_restarted_with_backoff_and_announces_again(
        fab: Fabric, make: Make) -> None:
    lb = fab.lbs[0]
    sp, events = make(lb.settings(), lb.ns)
    sp.set_routes({VIP: True, VIP6: True})
    assert fab.bird.wait(VIP, 1, 15) == [lb.address]
    for n in (1, 2):
        old = sp.state()[1]
        os.kill(old, signal.SIGKILL)
        assert fab.bird.wait(VIP, 0, 5) == []
        wait_for(lambda: sp.state()[0] == "restarting", "restarting")  # noqa: B023
        assert sp.state()[3] == f"ExaBGP (pid {old}) was killed by SIGKILL"
        assert {n["state"] for n in sp.neighbors()} == {"down"}
        assert fab.bird.wait(VIP, 1, 20) == [lb.address]
        assert fab.bird.wait(VIP6, 1, 5) == [lb.address6]
        state, pid, restarts, _ = sp.state()
        assert (state, restarts) == ("running", n) and pid != old
    speaker = [e["message"] for e in events if e["kind"] == "speaker"]
    assert [m.rsplit(" in ", 1)[1] for m in speaker if "again" in m] == ["1 s", "2 s"]
    wait_for(lambda: established(sp), "sessions back")


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def test_a_dead_bridge_ends_exabgp_and_both_are_started_again(fab: Fabric, make: Make) -> None:
    lb = fab.lbs[0]
    sp, _ = make(lb.settings(), lb.ns)
    sp.set_routes({VIP: True})
    assert fab.bird.wait(VIP, 1, 15) == [lb.address]
    pid = sp.state()[1]
    [bridge] = children(pid)
    with open(f"/proc/{bridge}/cmdline", "rb") as f:
        assert b"xlb.bgp.bridge" in f.read()
    os.kill(bridge, signal.SIGKILL)
    wait_for(lambda: not alive(pid), "ExaBGP ended with its bridge")
    wait_for(lambda: sp.state()[2] == 1, "restarted")
    # ExaBGP 5.0.15 does not end by itself within a second: the speaker ends it
    assert sp.state()[3] in (f"ExaBGP's bridge closed: ended ExaBGP (pid {pid})",
                             f"ExaBGP (pid {pid}) exited with code 0")
    assert fab.bird.wait(VIP, 1, 20) == [lb.address]


def test_close_ends_exabgp_and_the_router_drops_the_routes_at_once(
        fab: Fabric, make: Make) -> None:
    lb = fab.lbs[0]
    sp, events = make(lb.settings(), lb.ns)
    sp.set_routes({VIP: True})
    assert fab.bird.wait(VIP, 1, 15) == [lb.address]
    pid = sp.state()[1]
    t = time.monotonic()
    sp.close()
    assert time.monotonic() - t < 3
    assert not alive(pid)
    assert fab.bird.next_hops(VIP) == []
    assert fab.bird.protocols()["lb1_v4"] != "Established"
    assert sp.state()[:2] == ("off", 0)
    assert events[-1]["kind"] == "session" or "stopped" in events[-1]["message"]
    assert not os.path.exists(sp.sock_path)


def test_exabgp_dies_with_the_process_that_started_it(fab: Fabric, tmp_path: object) -> None:
    """SIGKILL of the agent: the parent-death signal ends ExaBGP (a Cease to the router)."""
    lb = fab.lbs[0]
    code = f"""
import sys, time
from tests.bgp.fabric import Lb, VIP
from xlb.bgp.speaker import Speaker
lb = Lb(*{[lb.ns, lb.address, lb.address6, lb.router, lb.router6]!r})
sp = Speaker(lb.settings(), "lb1", lb.ns, lambda e: None, run_root={str(tmp_path)!r})
sp.start()
sp.set_routes({{VIP: True}})
while sp.state()[0] != "running":
    time.sleep(0.05)
print(sp.state()[1], flush=True)
time.sleep(60)
"""
    agent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert agent.stdout is not None
        pid = int(agent.stdout.readline())
        assert fab.bird.wait(VIP, 1, 15) == [lb.address]
        agent.kill()
        agent.wait()
        wait_for(lambda: not alive(pid), "ExaBGP ended", timeout=5)
        assert fab.bird.wait(VIP, 0, 5) == []
    finally:
        agent.kill()
        agent.wait()


def test_wrong_asns_are_states_with_the_peers_reason(fab: Fabric, make: Make) -> None:
    lb = fab.lbs[0]
    # the router expects AS 65001 and we say 65002; we expect 65099 on v6, the router is 65000
    nbs = (Neighbor(lb.router, 65000), Neighbor(lb.router6, 65099))
    sp, events = make(BgpSettings(65002, lb.address, nbs), lb.ns)
    sp.set_routes({VIP: True, VIP6: True})

    def reasons() -> dict[str, str]:
        return {p: n["last_error"] for p, n in by_peer(sp).items()}

    wait_for(lambda: all(reasons().values()), "both reasons", timeout=15)
    assert reasons() == {
        lb.router: "notification received: OPEN message error: bad peer AS: the peer does not "
                   "accept our AS 65002",
        lb.router6: "notification sent (2,2): OPEN message error: bad peer AS: the peer's OPEN "
                    "says AS 65000, the neighbor's asn is 65099"}
    assert all(n["state"] in ("connected", "down") for n in sp.neighbors())
    assert sp.state()[0] == "running"
    assert fab.bird.next_hops(VIP) == []
    assert "Bad peer AS" in fab.bird.last_error("lb1_v4")
    assert any(e["kind"] == "notification" for e in events)
    # ExaBGP keeps retrying: the reason stays, the log does not fill up with repeats
    time.sleep(6)
    assert reasons()[lb.router].startswith("notification received: OPEN message error")
    assert len(events) < 8, events


def test_an_unreachable_peer_is_a_state_not_a_crash(fab: Fabric, make: Make) -> None:
    lb = fab.lbs[0]
    absent = "198.18.241.99"        # on the link, nobody there: ARP fails
    unrouted = "203.0.113.1"        # no route from the LB's namespace at all
    nbs = (Neighbor(absent, 65000), Neighbor(unrouted, 65000))
    sp, _ = make(BgpSettings(LB_ASN, lb.address, nbs), lb.ns)
    sp.set_routes({VIP: True})
    wait_for(lambda: by_peer(sp)[absent]["last_error"] != "", "a reason", timeout=15)
    n = by_peer(sp)
    assert n[absent]["state"] in ("connected", "down")
    assert "the peer is unreachable" in n[absent]["last_error"]
    assert (n[unrouted]["state"], n[unrouted]["uptime"]) == ("idle", 0)
    assert sp.state()[0] == "running"
    assert sp.carried() == {VIP: []}


def test_exabgp_that_cannot_start_is_failed_and_retried(make: Make) -> None:
    settings = BgpSettings(LB_ASN, "192.0.2.1", (Neighbor("192.0.2.2", 65000),))
    sp, events = make(replace(settings, exabgp="/nonexistent/exabgp"), None)
    wait_for(lambda: sp.state()[0] == "failed", "failed")
    assert sp.state()[3].startswith("cannot start ExaBGP: [Errno 2]")
    # a config ExaBGP refuses: its own words
    refused = replace(settings, neighbors=(Neighbor("192.0.2.2", 65000, hold_time=1),))
    sp3, _ = make(refused, None, instance="lb3")
    wait_for(lambda: sp3.state()[0] == "failed", "failed", timeout=10)
    assert sp3.state()[3].endswith(
        "exited with code 1: holdtime must be zero or at least 3 seconds")
    sp2, _ = make(replace(settings, exabgp="/bin/false"), None, instance="lb2")
    wait_for(lambda: sp2.state()[2] >= 1, "a second attempt", timeout=10)
    assert sp2.state()[0] in ("failed", "starting")
    assert sp2.state()[3].startswith("ExaBGP (pid ") and "exited with code 1" in sp2.state()[3]
    t = time.monotonic()
    sp.close()
    sp2.close()
    assert time.monotonic() - t < 3
