"""The lab end to end: real TCP and UDP from the client namespace to the VIP, through
the router's BGP ECMP route to both XDP load balancers, IP-in-IP to the backends, replies
direct (DSR). IPv4 (4in4) and IPv6 (6in6, to the v6 VIP and the backends' v6 addresses).
Fleet-wide changes (drain) are made on both LBs, as an operator does: either may carry a flow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from pyroute2 import netns

from tests.e2e.clients import LBS, KeepAlive, agents, call_all
from tests.helpers import promtool_check, samples, scrape
from xlb import procs
from xlb.dataplane import structs as S
from xlb.dataplane.manager import Dataplane
from xlb.dataplane.structs import Reason
from xlb.lab import fabric, run, topology
from xlb.lab.failover import carriers

CLIENT_SCRIPT = """
import json, socket, sys
vip, sources = sys.argv[1], sys.argv[2:]
family = socket.AF_INET6 if ":" in vip else socket.AF_INET
out = {"http": [], "udp": []}
for i, src in enumerate(sources):
    s = socket.create_connection((vip, 80), timeout=3, source_address=(src, 0))
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: vip\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    out["http"].append(data.split(b"\\r\\n\\r\\n", 1)[1].decode().strip())
    u = socket.socket(family, socket.SOCK_DGRAM)
    u.bind((src, 0))
    u.settimeout(3)
    u.sendto(b"ping%d" % i, (vip, 53))
    data, peer = u.recvfrom(200)
    out["udp"].append([data.decode(), peer[0]])
print(json.dumps(out))
"""


@pytest.mark.parametrize("vip, sources", [(topology.VIP, topology.CLIENT_ADDRS),
                                          (topology.VIP6, topology.CLIENT_ADDRS6)],
                         ids=["v4", "v6"])
def test_tcp_and_udp_through_dsr(lab: dict, vip: str, sources: list[str]) -> None:
    """Through both LBs: each one's counters grow, and add up to what the clients did."""
    before, ids = {}, {}
    for lb in LBS:
        with Dataplane(lb) as dp:
            before[lb] = dp.counters()
            ids[lb] = {str(S.unpack_addr(b.addr, b.family)): i
                       for i, b in dp.backend_entries().items()}
    r = subprocess.run(["ip", "netns", "exec", topology.CLIENT, sys.executable, "-c",
                        CLIENT_SCRIPT, vip, *sources], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    names = {"be1", "be2", "be3"}
    assert len(out["http"]) == len(sources)
    assert set(out["http"]) <= names and len(set(out["http"])) >= 2, Counter(out["http"])
    for text, peer in out["udp"]:
        assert peer == vip, "UDP replies must come from the VIP"
        assert text.splitlines()[0] in names
    encap, seen, queues, sent = {}, {}, 0, Counter[str]()
    for lb in LBS:
        with Dataplane(lb) as dp:
            after = dp.counters()
        b = before[lb]
        encap[lb] = after.reasons[Reason.TX_ENCAP, 0] - b.reasons[Reason.TX_ENCAP, 0]
        seen[lb] = after.queues[:, 0].sum() - b.queues[:, 0].sum()
        queues += (after.queues[:4, 0] - b.queues[:4, 0] > 0).sum()
        sent.update({a: int(after.backends[i, 0] - b.backends[i, 0]) for a, i in ids[lb].items()})
    # the router's ECMP spreads the 2 x 32 flows over both LBs
    assert all(n > 0 for n in encap.values()), f"an LB carried nothing: {encap}"
    # every TCP connection is >= 4 client packets; UDP 1; replies never reach an LB
    assert sum(encap.values()) >= 5 * len(sources)
    # what an LB passes besides: its BGP sessions' keepalives, neighbour discovery, health
    # check answers; a reply through an LB would add >= 4 packets per connection (>= 128)
    assert all(seen[lb] - encap[lb] < 20 for lb in LBS), f"more than the inbound: {seen}"
    assert queues >= 3, "one RX queue per LB only"
    # encapsulated to the backends' addresses of the VIP's family (4in4, 6in6)
    same = [b.address6 if ":" in vip else b.address for b in topology.Lab().backends]
    assert sum(sent[a] for a in same) == sum(encap.values()), sent
    assert sum(n > 0 for a, n in sent.items() if a in same) >= 2, sent


def test_v6_backends_are_health_checked_from_the_lb(lab: dict) -> None:
    from xlb.api.client import AgentClient

    want = {b.address6: "up" for b in topology.Lab().backends}
    for lb in lab["lbs"]:
        deadline = time.monotonic() + 10
        with AgentClient(lb["socket"]) as agent:
            while True:  # checked over IPv6 from the LB's namespace, through the router
                (web6,) = agent.call("backends", vip="web6")
                rows = {b["address"]: b["health"] for b in web6["backends"]}
                if rows == want or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert rows == want, lb["instance"]


def test_traffic_generator_reports_real_connections(lab: dict) -> None:
    gen = run.traffic(["--rate", "100", "--duration", "2", "--json"], quiet=True)
    out, _ = gen.communicate(timeout=60)
    assert gen.returncode == 0
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["tcp_ok"] >= 150 and summary["tcp_failed"] == 0
    assert summary["udp_ok"] >= 150 and summary["udp_failed"] == 0
    v6 = summary["v6"]  # by default every 4th connection (and its UDP query) is IPv6
    assert v6["tcp_ok"] >= 150 // 4 and v6["tcp_failed"] == 0, v6
    assert v6["udp_ok"] >= 150 // 4 and v6["udp_failed"] == 0, v6
    assert len(v6["backends"]) >= 2, v6
    assert len(summary["backends"]) == 3
    total = sum(summary["backends"].values())
    for name, n in summary["backends"].items():  # equal Maglev shares: 1/3 each (3 sigma)
        assert 0.2 < n / total < 0.47, (name, summary["backends"])


def test_traffic_generator_ends_with_whoever_started_it(lab: dict) -> None:
    """A killed demo (or a closed terminal) leaves no traffic generator behind."""
    starter = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom xlb.lab import run\n"
         "g = run.traffic(['--rate', '20', '--json'], quiet=True)\nprint(g.pid, flush=True)\n"
         "time.sleep(600)\n"], stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    gen = int(starter.stdout.readline())
    try:
        time.sleep(1.0)
        os.kill(gen, 0)  # it runs
        starter.kill()   # SIGKILL: no cleanup code of the starter runs
        starter.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(gen, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the traffic generator outlived its starter")
    finally:
        try:
            os.kill(gen, 9)
        except ProcessLookupError:
            pass
        if starter.poll() is None:
            starter.kill()


def test_traffic_refuses_bad_options(lab: dict) -> None:
    for bad in (["--rate", "0"], ["--v6-every", "-1"]):
        gen = run.traffic(bad, quiet=True)
        gen.communicate(timeout=30)
        assert gen.returncode == 2, bad


def test_xlb_lab_traffic_hands_its_options_to_the_generator(lab: dict) -> None:
    """The command checks the options; the generator in the namespace gets every one."""
    r = subprocess.run([sys.executable, "-m", "xlb", "lab", "traffic", "--rate", "50",
                        "--duration", "1", "--v6-every", "0", "--json"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # --json: the summary alone
    assert summary["tcp_ok"] >= 25 and summary["tcp_failed"] == 0, summary
    assert summary["v6"]["tcp_ok"] == 0, "--v6-every 0: no IPv6 connections"


def test_demo_runs_the_lab_with_traffic_and_figures(lab: dict) -> None:
    r = subprocess.run([sys.executable, "-m", "xlb", "demo", "--duration", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "lb1" in r.stdout and "lb2" in r.stdout and "new conn/s" in r.stdout
    assert " 0 failed" in r.stdout and "lab is still running" in r.stdout
    assert all(run.status()["lbs"].values())


def new_connections(n: int) -> list[str]:
    """Backends of n new IPv4 connections (to the VIP "web")."""
    gen = run.traffic(["--rate", "200", "--duration", str(n / 200), "--udp-every", "0",
                       "--v6-every", "0", "--json"], quiet=True)
    out, _ = gen.communicate(timeout=60)
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["tcp_failed"] == 0
    return list(summary["backends"])


def test_drain_keeps_established_and_moves_new(lab: dict) -> None:
    with KeepAlive() as keep:
        call_all("drain", address=keep.address, vip="web")
        assert keep.get() == keep.first, "established connection moved"
        assert keep.first not in new_connections(100), "new connections reached a drained one"
        call_all("undrain", address=keep.address, vip="web")
        assert keep.first in new_connections(100)


def wait_health(agent, address: str, up: bool, timeout: float = 10.0) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        (web,) = agent.call("backends", vip="web")
        row = {b["address"]: b for b in web["backends"]}[address]
        if (row["health"] == "up") == up:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{address} did not become {'up' if up else 'down'}")


def test_backend_failure_is_detected_and_recovered(lab: dict) -> None:
    """Each LB checks the backends itself: both see be3 fail, and both take it back."""
    with agents() as clients:
        run.stop_server("be3")
        for agent in clients.values():
            took = wait_health(agent, "198.18.2.13", up=False)
            assert took < 0.5 * 2 + 0.25 + 1.0 + 1.5  # fall x interval + timeout, the tick
            # that applies the verdict, plus slack
            (web,) = agent.call("backends", vip="web")
            assert {b["address"]: b for b in web["backends"]}["198.18.2.13"]["ring_share"] == 0
        assert set(new_connections(100)) == {"be1", "be2"}
        run.start_server("be3")
        for agent in clients.values():
            wait_health(agent, "198.18.2.13", up=True)
        assert "be3" in new_connections(100)


def test_agent_restart_keeps_established_connections(lab: dict) -> None:
    """The agent of the LB that carries the connection restarts (its routes go and come
    back: start_agent waits for them), and the connection, idle meanwhile, comes back
    to it: the pinned connection table kept its drained backend."""
    import signal

    from xlb.api.client import AgentClient

    with KeepAlive() as keep:
        call_all("drain", address=keep.address, vip="web")  # Maglev alone would move it
        (lb,) = carriers(keep.source, keep.sport, keep.vip)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            info = run.restart_agent(lb, sig)
            assert keep.get() == keep.first, f"connection moved after {sig!r}"
            with AgentClient(info["socket"]) as agent:
                (web,) = agent.call("backends", vip="web")
                row = {b["address"]: b for b in web["backends"]}[keep.address]
                assert row["state"] in ("drained", "draining"), "intent lost on restart"
        call_all("undrain", address=keep.address, vip="web")


def chown_tree(path: str, uid: int) -> None:
    for top, dirs, files in os.walk(path):
        for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
            os.chown(name, uid, uid)


def test_lb1_agent_runs_as_a_user_with_capabilities_and_drains(lab: dict) -> None:
    """lb1's agent restarted as nobody, with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and
    CAP_SYS_ADMIN (its interface is in a namespace) and nothing else: it adopts the
    data plane, which forwards all along, and drains a backend. Its directories become
    its user's, as systemd's RuntimeDirectory=, StateDirectory= and the unit's
    ExecStartPre= make them."""
    from tests.helpers import NOBODY, setpriv
    from xlb.api.client import AgentClient
    from xlb.dataplane.maps import pin_dir
    from xlb.paths import RUN_ROOT, default_audit_log, run_dir

    owned = [pin_dir("lb1"), run_dir("lb1"), os.path.dirname(default_audit_log("lb1"))]
    os.makedirs(owned[-1], exist_ok=True)
    run.stop_agent("lb1")
    try:
        for path in owned:
            chown_tree(path, NOBODY)
        os.chown(RUN_ROOT, NOBODY, -1)  # its socket, /run/xlb/lb1.sock
        info = run.start_agent("lb1", prefix=setpriv())
        with open(f"/proc/{info['pid']}/status") as f:
            status = f.read()
        assert f"Uid:\t{NOBODY}\t{NOBODY}\t{NOBODY}\t{NOBODY}" in status, status
        assert "CapEff:\t000000c000201000" in status, status  # the four, nothing more
        with AgentClient(info["socket"]) as agent:  # lb2 (root) drains too: it carries half
            call_all("drain", address="198.18.2.13", vip="web")
            assert set(new_connections(100)) == {"be1", "be2"}
            call_all("undrain", address="198.18.2.13", vip="web")
            assert "be3" in new_connections(100)
            assert [e["user"] for e in agent.call("audit", n=2)] == ["root", "root"]
    finally:
        run.stop_agent("lb1")
        for path in owned:
            chown_tree(path, 0)
        os.chown(RUN_ROOT, 0, -1)
        run.start_agent("lb1")


BIG_QUERY = """
import json, socket, sys
vip, src = sys.argv[1], sys.argv[2]
u = socket.socket(socket.AF_INET6 if ":" in vip else socket.AF_INET, socket.SOCK_DGRAM)
u.bind((src, 0))  # one socket: the retries are the same flow, to the same backend
u.settimeout(1)
for attempt in range(1, 6):
    u.sendto(b"q" * 1450, (vip, 53))
    try:
        data, peer = u.recvfrom(4096)
    except TimeoutError:
        continue
    name, client, query = data.split(b"\\n", 2)  # the echo: backend, who asked, the query
    print(json.dumps({"attempt": attempt, "size": len(data), "query": len(query),
                      "peer": peer[0]}))
    break
else:
    print(json.dumps({"attempt": None}))
"""


@pytest.mark.parametrize("vip, client_net, source", [
    (topology.VIP, "198.18.0.0/24", topology.CLIENT_ADDRS[5]),
    (topology.VIP6, f"{topology.NET6}::/64", topology.CLIENT_ADDRS6[5]),
], ids=["v4", "v6"])
def test_path_mtu_discovery_works_through_dsr(lab: dict, vip: str, client_net: str,
                                              source: str) -> None:
    """A 1400-byte route MTU towards the clients on the router: the backend's 1454-byte
    answer is refused there, and the router's "fragmentation needed" / "packet too big"
    goes to the VIP, i.e. to one of the LBs (not necessarily the one that carried the
    query: the LBs share no state). That LB must send it on to the backend that answered
    (the same Maglev choice on both), which then sends smaller packets: the query's retry
    gets its answer."""
    family = "-6" if ":" in vip else "-4"
    route = subprocess.run(["ip", "netns", "exec", topology.ROUTER, "ip", family, "route",
                            "show", client_net], capture_output=True, text=True,
                           check=True).stdout.split()
    before = icmp_errors_sent()
    topology.sh(topology.ROUTER, "ip", family, "route", "change", *route, "mtu", "lock", "1400")
    try:
        r = subprocess.run(["ip", "netns", "exec", topology.CLIENT, sys.executable, "-c",
                            BIG_QUERY, vip, source], capture_output=True, text=True,
                           timeout=60)
    finally:
        topology.sh(topology.ROUTER, "ip", family, "route", "change", *route)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["attempt"] is not None, "no answer: the path MTU never reached the backend"
    assert out["query"] == 1450 and out["size"] > 1400 and out["peer"] == vip
    assert icmp_errors_sent() > before


def icmp_errors_sent() -> int:
    """ICMP errors the LBs sent on to a backend, summed over both."""
    total = 0
    for lb in LBS:
        with Dataplane(lb) as dp:
            total += int(dp.counters().reasons[Reason.TX_ENCAP_ICMP_ERROR, 0])
    return total


def test_metrics_are_counters_that_agree_with_the_console(lab: dict) -> None:
    """Two scrapes 5 s apart under lab traffic: every _total is non-decreasing, the VIP's
    packet counter grew as much as the console's pps (the agent's snapshots) says, within
    5 %, and promtool accepts the exposition."""
    from xlb.api.client import AgentClient

    sock = lab["lbs"][0]["socket"]
    key = ("xlb_vip_packets_total", (("vip", "web"),))
    gen = run.traffic(["--rate", "150", "--duration", "30", "--json"], quiet=True)
    try:
        with AgentClient(sock, timeout=30) as agent:
            port = agent.call("status")["metrics_port"]
            stream = agent.subscribe()

            def snapshot() -> dict:
                return next(params for method, params in stream if method == "snapshot")

            def web_pps(s: dict) -> float:
                return float(next(v["pps"] for v in s["vips"] if v["name"] == "web"))

            first = snapshot()
            while web_pps(first) < 50:  # the generator is under way
                first = snapshot()
            before = samples(scrape(port))  # what the tick of `first` read
            pps, last = [], first
            while last["time"] - first["time"] < 4.9:
                last = snapshot()
                pps.append(web_pps(last))
            text = scrape(port)
        after = samples(text)
    finally:
        gen.terminate()
        gen.wait(timeout=30)
    console = sum(pps) / len(pps)  # what the console showed over the window, per second
    counted = (after[key] - before[key]) / (last["time"] - first["time"])
    assert abs(counted - console) <= 0.05 * console, (counted, console, pps)
    for k, value in after.items():
        if k[0].endswith("_total") and k in before:
            assert value >= before[k], k
    syn = ("xlb_connection_table_misses_total", (("kind", "tcp_syn"),))
    assert after[syn] > before[syn], "new connections are SYN misses"
    assert promtool_check(text) == ""


def test_lab_status_and_down_leave_nothing(lab: dict) -> None:
    """status: every part, BIRD's four sessions Established and both LBs as next hops of
    each VIP; down: every process the lab started (agents, their ExaBGPs, BIRD, servers)
    ended, data planes unloaded, namespaces gone."""
    status = run.status()
    assert all(status["namespaces"].values()) and all(status["lbs"].values())
    assert status["agents"] == {"lb1": True, "lb2": True}
    router = status["router"]
    assert router["sessions"] == {f"{lb}_{f}": "Established" for lb in LBS for f in ("v4", "v6")}
    assert router["routes"] == {f"{topology.VIP}/32": ["lb1", "lb2"],
                                f"{topology.VIP6}/128": ["lb1", "lb2"]}
    with agents() as clients:
        exabgp = [c.call("bgp")["pid"] for c in clients.values()]
    agent_pids = dict(run._state()["agents"])
    assert all(exabgp), exabgp
    result = run.down()
    assert set(result["namespaces_removed"]) == set(topology.Lab().namespaces())
    assert not [n for n in netns.listnetns() if n.startswith(topology.PREFIX)]
    assert not set(LBS) & set(run.lifecycle.instances())
    assert result["agents_stopped"] == ["lb1", "lb2"] and result["bird_stopped"]
    for pid in [*agent_pids.values(), *exabgp, router["pid"]]:
        assert not procs.alive(pid), pid
    assert not os.path.exists(run.STATE) and not os.path.exists(run.agent_config_path("lb1"))
    assert not os.path.exists(fabric.workdir())
    ps = subprocess.run(["pgrep", "-f", "xlb.lab.server"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
