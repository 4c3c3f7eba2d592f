"""Flow traces in the lab: real connections from the client namespace, traced at both LBs.

The router spreads a client's connections over lb1 and lb2, so each is traced where it
passed, and the two traces together hold every one. A trace filtered to one client address
shows that client's packets and nobody else's, each with the backend its connection really
reached (the backend's HTTP answer names it). A drained backend's established connection
shows the connection-table path to the drained backend, while a new connection from the
same client goes by Maglev to another.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from tests.e2e.clients import BACKENDS, KeepAlive, agents, call_all
from xlb.lab import topology

CONNECT = """
import json, socket, sys
vip = sys.argv[1]
for src in sys.argv[2:]:
    s = socket.create_connection((vip, 80), timeout=5, source_address=(src, 0))
    sport = s.getsockname()[1]
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: vip\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    name = data.split(b"\\r\\n\\r\\n", 1)[1].decode().strip()
    print(json.dumps({"src": src, "sport": sport, "backend": name}), flush=True)
"""

def connect(*sources: str) -> list[dict[str, Any]]:
    """One HTTP connection from each source address: its source port and the backend that
    answered (be1, be2, be3)."""
    r = subprocess.run(["ip", "netns", "exec", topology.CLIENT, sys.executable, "-c", CONNECT,
                        topology.VIP, *sources], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_a_trace_of_one_client_shows_its_packets_and_their_real_backends(
        lab: dict[str, Any]) -> None:
    """`xlb trace src CLIENT --json` on each LB while that client and five others connect."""
    client, others = topology.CLIENT_ADDRS[0], topology.CLIENT_ADDRS[1:6]
    traces = [subprocess.Popen([sys.executable, "-m", "xlb", "trace", "src", client, "--json",
                                "--socket", lb["socket"]], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for lb in lab["lbs"]]
    events: list[dict[str, Any]] = []
    try:
        with agents() as clients:
            deadline = time.monotonic() + 30
            while not all(a.call("trace_status")["running"] for a in clients.values()):
                assert time.monotonic() < deadline, "xlb trace did not start the trace"
                time.sleep(0.1)
            mine = connect(client, *others, client, client, *others, client)
            time.sleep(1.0)  # the last batch reaches xlb trace
            for trace in traces:
                trace.send_signal(signal.SIGINT)
                out, err = trace.communicate(timeout=30)
                assert trace.returncode == 0, err
                events += [json.loads(line) for line in out.splitlines()]
            for agent in clients.values():
                assert not agent.call("trace_status")["running"], "Ctrl-C stopped the trace"
    finally:
        for trace in traces:
            if trace.poll() is None:
                trace.kill()
                trace.wait()
    assert {e["src"] for e in events} == {client}, "only the traced client's packets"
    ours = {c["sport"]: BACKENDS[c["backend"]] for c in mine if c["src"] == client}
    assert len(ours) == 4
    by_flow: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        by_flow.setdefault(e["sport"], []).append(e)
    assert set(by_flow) == set(ours), "every connection of the client, and no other"
    for sport, flow in by_flow.items():
        # the kernel's own drops of the flow join the trace too (a backend's TCP dropping
        # a late duplicate on a loaded machine): they name no backend
        assert all(e["action"] == "DROP" and e["backend"] is None and e["reason"]
                   for e in flow if e["source"] == "kernel"), flow
        evs = [e for e in flow if e["source"] == "xdp"]
        assert len(evs) >= 4, evs  # SYN, ACK, request, FIN/ACK at least
        assert {(e["vip"], e["backend"], e["action"]) for e in evs} == {
            ("web", ours[sport], "TX")}, "the backend that really answered"
        assert evs[0]["path"] == "maglev_syn" and {e["path"] for e in evs[1:]} == {"conn"}


def test_a_drained_backends_flow_stays_and_a_new_one_goes_by_maglev(
        lab: dict[str, Any]) -> None:
    client = topology.CLIENT_ADDRS[30]
    with KeepAlive(client) as keep:
        first = {"sport": keep.sport, "backend": keep.first}
        drained = keep.address
        call_all("drain", address=drained, vip="web")
        try:
            call_all("trace_start", filter=f"src {client} and dport 80")
            assert keep.get() == keep.first, "the established connection kept its backend"
            (new,) = connect(client)
            assert BACKENDS[new["backend"]] != drained
            deadline = time.monotonic() + 10
            while True:  # both flows' packets read by the agents (the new one closed)
                events = [e for evs in call_all("trace_events", n=1000).values() for e in evs]
                flows = Counter(e["sport"] for e in events)
                if flows[first["sport"]] and flows[new["sport"]] >= 4:
                    break
                assert time.monotonic() < deadline, flows
                time.sleep(0.1)
            call_all("trace_stop")
        finally:
            call_all("undrain", address=drained, vip="web")
    kept = [e for e in events if e["sport"] == first["sport"]]
    fresh = [e for e in events if e["sport"] == new["sport"]]
    assert kept and {(e["path"], e["backend"]) for e in kept} == {("conn", drained)}, kept
    assert fresh[0]["path"] == "maglev_syn", fresh
    assert fresh[0]["backend"] == BACKENDS[new["backend"]] != drained
    assert {e["backend"] for e in fresh} == {BACKENDS[new["backend"]]}
