"""The flow trace through a real agent: started and stopped by operators (audited), watched
by read-only users, stopping by itself, its history, its rate limit with skipped counts,
and a bad filter that changes nothing. Frames go from the peer end of the test's veth into
the agent's XDP program, in a namespace made here."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from tests.agent.test_agent import NS, PROBES_OFF, AgentProc, as_nobody, running_agent
from tests.helpers import REPO, samples, scrape, wait_for
from xlb.api import protocol as P
from xlb.api.client import AgentClient
from xlb.dataplane.manager import Dataplane
from xlb.errors import InvalidParams
from xlb.lab import netns

WEB = {"10.0.1.1", "10.0.1.2"}
TRACE_SETTINGS = "\n[trace]\nforward_rate = 50\nhistory = 500\nmax_seconds = 600\n"


@pytest.fixture
def agent(roots: tuple[str, str]) -> Iterator[AgentProc]:
    yield from running_agent(roots, "none", probes=PROBES_OFF + TRACE_SETTINGS)


def frames(src: str, n: int, sport: int = 30000, flags: str = "S",
           udp: bool = False) -> list[bytes]:
    """n packets from `src` to the VIP (web: TCP 80, or dns: UDP 53), one flow each."""
    dst, mac = netns.mac(NS, "xlb0"), netns.mac(NS, "peer0")
    l4 = (lambda i: UDP(sport=sport + i, dport=53)) if udp else (
        lambda i: TCP(sport=sport + i, dport=80, flags=flags))
    return [bytes(Ether(src=mac, dst=dst) / IP(src=src, dst="10.100.0.10") / l4(i))
            for i in range(n)]


def send(packets: list[bytes]) -> None:
    netns.send_frames(NS, "peer0", packets, count=len(packets)).wait(timeout=60)


def dataplane(agent: AgentProc) -> Dataplane:
    return Dataplane("agt", agent.env["XLB_PIN_ROOT"], agent.env["XLB_RUN_ROOT"])


def traced_on(agent: AgentProc) -> bool:
    from xlb.dataplane import structs as S

    with dataplane(agent) as dp:
        return bool(dp.trace_config().mode == S.XLB_TRACE_ON)


def test_a_trace_shows_only_the_filtered_clients_packets(agent: AgentProc) -> None:
    with agent.client() as c:
        st = c.call("trace_start", filter="src 198.51.100.9 and dport 80")
        assert P.conforms(st, P.TraceStatus) == []
        assert (st["running"], st["filter"], st["by"]) == (True, "src 198.51.100.9 and dport 80",
                                                          "root")
        assert traced_on(agent)
        send(frames("198.51.100.9", 5) + frames("198.51.100.8", 5)
             + frames("198.51.100.9", 3, udp=True))
        wait_for(lambda: c.call("trace_status")["events"] >= 5, "the five SYNs traced")
        time.sleep(0.3)
        events = c.call("trace_events", n=100)
        assert P.conforms(events, list[P.TraceEvent]) == []
        assert len(events) == 5, events
        for i, ev in enumerate(events):
            assert (ev["source"], ev["src"], ev["sport"], ev["dst"], ev["dport"]) == (
                "xdp", "198.51.100.9", 30000 + i, "10.100.0.10", 80)
            assert (ev["vip"], ev["path"], ev["action"], ev["reason"]) == (
                "web", "maglev_syn", "TX", "tx_encap")
            assert ev["backend"] in WEB and ev["interface"] == "xlb0"
            assert ev["outer_src"] is not None and ev["outer_src"].startswith("172.16.")
        st = c.call("trace_stop")
        assert not st["running"] and st["events"] == 5
        assert not traced_on(agent)
        start, stop = c.call("audit", n=2)
    assert (start["user"], start["action"], start["result"]) == ("root", "trace_start", "ok")
    assert start["params"] == {"filter": "src 198.51.100.9 and dport 80", "seconds": 300}
    assert (stop["action"], stop["after"]) == ("trace_stop", {"trace": {
        "running": False, "filter": "src 198.51.100.9 and dport 80", "seconds": 300}})


def test_established_flows_show_conn_and_vip_filters_resolve(agent: AgentProc) -> None:
    with agent.client() as c:
        c.call("trace_start", filter="vip web")
        send(frames("198.51.100.7", 1) + frames("198.51.100.7", 1, flags="A"))
        wait_for(lambda: c.call("trace_status")["events"] >= 2, "both packets traced")
        syn, ack = c.call("trace_events", n=2)
        c.call("trace_stop")
    assert (syn["path"], ack["path"]) == ("maglev_syn", "conn")
    assert ack["backend"] == syn["backend"]


def test_read_only_users_watch_but_cannot_start_or_stop(agent: AgentProc) -> None:
    script = """
import json, sys
from xlb.api.client import AgentClient
from xlb.errors import XlbError
out = {}
with AgentClient(sys.argv[1]) as c:
    for method in ("trace_start", "trace_stop"):
        try:
            c.call(method)
            out[method] = "allowed"
        except XlbError as e:
            out[method] = [e.rpc_code, str(e)]
    out["status"] = c.call("trace_status")
    out["subscribed"] = c.call("trace_subscribe", history=10)
    for kind, batch in c.notifications():
        out["batch"] = batch
        break
print(json.dumps(out))
"""
    with agent.client() as c:
        c.call("trace_start", filter="dport 80")
        send(frames("198.51.100.9", 3))
        wait_for(lambda: c.call("trace_status")["events"] >= 3, "three traced")
        out = json.loads(as_nobody(agent, script).stdout)
        assert out["trace_start"][0] == out["trace_stop"][0] == P.ErrorCode.READ_ONLY
        assert out["status"]["running"] and out["subscribed"]["filter"] == "dport 80"
        assert [e["sport"] for e in out["batch"]["events"]] == [30000, 30001, 30002]
        assert c.call("trace_status")["running"], "still running"
        refusals = [e for e in c.call("audit", n=5) if e["user"] == "nobody"]
        c.call("trace_stop")
    assert [(e["action"], e["result"]) for e in refusals] == [
        ("trace_start", "refused: read-only"), ("trace_stop", "refused: read-only")]


def test_a_bad_filter_changes_nothing(agent: AgentProc) -> None:
    with agent.client() as c:
        for text, says in (("src foo", "'foo'"), ("dport 80 or dport 81", "'or'"),
                           ("vip nosuch", "no VIP named 'nosuch'"),
                           ("backend 10.9.9.9", "10.9.9.9")):
            with pytest.raises(InvalidParams) as e:
                c.call("trace_start", filter=text)
            assert says in str(e.value), str(e.value)
        with pytest.raises(InvalidParams, match=r"at most 600 s \(\[trace\] max_seconds\)"):
            c.call("trace_start", seconds=601)
        with pytest.raises(InvalidParams, match=r"'seconds' must be 1\.\.3600"):
            c.call("trace_start", seconds=3601)
        assert not c.call("trace_status")["running"]
        assert [e for e in c.call("audit") if e["action"].startswith("trace")] == []
    assert not traced_on(agent)


def test_a_running_trace_keeps_running_after_a_bad_filter(agent: AgentProc) -> None:
    with agent.client() as c:
        c.call("trace_start", filter="dport 80")
        with pytest.raises(InvalidParams):
            c.call("trace_start", filter="dport eighty")
        st = c.call("trace_status")
        c.call("trace_stop")
    assert (st["running"], st["filter"]) == (True, "dport 80")


def test_a_trace_stops_by_itself(agent: AgentProc) -> None:
    with agent.client() as c:
        st = c.call("trace_start", seconds=1)
        assert 0.9 < st["expires"] - st["started"] < 1.1
        wait_for(lambda: not c.call("trace_status")["running"], "the trace to stop", 5)
        last = c.call("audit", n=1)[0]
    assert not traced_on(agent)
    assert (last["user"], last["action"], last["params"]) == (
        "agent", "trace_stop", {"why": "its 1 s were over"})


def test_watchers_get_history_then_a_rate_limited_sample_and_the_skipped_count(
        agent: AgentProc) -> None:
    """forward_rate = 50: a watcher gets at most ~50 events a second and is told how many
    it did not get; what it got plus what it was told it skipped is every event read."""
    with agent.client() as c, AgentClient(agent.socket, timeout=30) as w:
        c.call("trace_start", filter="src 198.51.100.9")
        send(frames("198.51.100.9", 20, sport=20000))
        wait_for(lambda: c.call("trace_status")["events"] >= 20, "the first 20")
        w.call("trace_subscribe", history=5)
        stream = w.notifications()
        _, first = next(stream)
        assert [e["sport"] for e in first["events"]] == list(range(20015, 20020))
        began = time.monotonic()
        send(frames("198.51.100.9", 600, sport=1000, udp=True))
        got, skipped = 0, 0
        for _, batch in stream:
            assert P.conforms(batch, P.TraceBatch) == []
            got += len(batch["events"])
            skipped += batch["skipped"]
            if got + skipped >= 600:
                break
        took = time.monotonic() - began
        st = c.call("trace_status")
        c.call("trace_stop")
    assert got + skipped == 600 == st["events"] - 20
    assert skipped > 0 and got <= 50 * (took + 0.2) + 5, (got, skipped, took)
    assert st["skipped"] >= skipped
    assert st["history"] == 500, "the history keeps the [trace] history newest events"


def test_the_metrics_count_trace_events(agent: AgentProc) -> None:
    with agent.client() as c:
        port = c.call("status")["metrics_port"]
        c.call("trace_start", filter="src 198.51.100.9")
        send(frames("198.51.100.9", 7))
        wait_for(lambda: c.call("trace_status")["events"] >= 7, "seven traced")
        c.call("trace_stop")
    wait_for(lambda: samples(scrape(port)).get(("xlb_trace_events_total", ())) == 7,
             "the metric")
    got = samples(scrape(port))
    assert got[("xlb_trace_lost_total", ())] == 0


def test_the_agent_turns_its_trace_off_and_a_new_one_turns_a_left_one_off(
        agent: AgentProc) -> None:
    with agent.client() as c:
        c.call("trace_start")
    agent.stop(signal.SIGTERM)
    assert not traced_on(agent), "an agent that stops turns its trace off"
    agent.start()
    with agent.client() as c:
        c.call("trace_start")
    agent.stop(signal.SIGKILL)  # no chance to turn it off
    assert traced_on(agent)
    agent.start()
    assert not traced_on(agent), "left on by an agent that crashed: turned off"
    with agent.client() as c:
        last = c.call("audit", n=1)[0]
    assert (last["action"], last["params"]) == ("trace_stop",
                                                {"why": "left on by a previous agent"})


def xlb(agent: AgentProc, *args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "xlb", *args, "--socket", agent.socket],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=agent.env, cwd=REPO, **kw)


def test_xlb_trace_prints_events_and_stops_the_trace_it_started(agent: AgentProc) -> None:
    proc = xlb(agent, "trace", "src", "198.51.100.9", "--count", "3", "--json")
    with agent.client() as c:
        wait_for(lambda: c.call("trace_status")["running"], "xlb trace to start it", 30)
        send(frames("198.51.100.8", 3) + frames("198.51.100.9", 5))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        assert [(e["src"], e["sport"]) for e in lines] == [("198.51.100.9", 30000 + i)
                                                          for i in range(3)]
        assert "tracing src 198.51.100.9" in err
        assert not c.call("trace_status")["running"], "--count ended it: the trace stops"


def test_ctrl_c_ends_xlb_trace_and_its_trace(agent: AgentProc) -> None:
    proc = xlb(agent, "trace", "dport", "80")
    with agent.client() as c:
        wait_for(lambda: c.call("trace_status")["running"], "xlb trace to start it", 30)
        send(frames("198.51.100.9", 2))
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "198.51.100.9:30000 → 10.100.0.10:80" in first and "maglev_syn" in first, first
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert not c.call("trace_status")["running"]


def test_xlb_trace_watch_leaves_the_trace_running(agent: AgentProc) -> None:
    with agent.client() as c:
        c.call("trace_start", filter="dport 80")
        proc = xlb(agent, "trace", "--watch", "--count", "2")
        sender = netns.send_frames(NS, "peer0", frames("198.51.100.9", 1), count=0, rate=20)
        try:  # until the watcher has subscribed and seen two
            out, err = proc.communicate(timeout=60)
        finally:
            sender.terminate()
            sender.wait(timeout=10)
        assert proc.returncode == 0, err
        assert len(out.splitlines()) == 2 and "started by root" in err
        assert c.call("trace_status")["running"], "a watcher does not stop the trace"
        c.call("trace_stop")
