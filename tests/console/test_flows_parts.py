"""The Flows view's pure parts: the bounded trace feed, the filter-text helpers, the flow
parser of the explain dialog, and the agent double's trace data against the protocol."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from console.dialogs.explain import explain_lines, parse_flow
from console.tracefeed import TraceFeed
from console.views.flows import bad_word, with_sample
from tests.agent_double import AgentDouble
from tests.trace_double import TraceDouble
from xlb.api import protocol as P


def status(**kw: Any) -> P.TraceStatus:
    base: dict[str, Any] = {"running": True, "filter": "", "sample": 1, "started": 1.0,
                            "expires": 2.0, "by": "t", "events": 0, "lost": 0,
                            "skipped": 0, "per_s": 0.0, "history": 0}
    return {**base, **kw}  # type: ignore[typeddict-item]


def events(n: int, start: int = 0) -> list[P.TraceEvent]:
    d = AgentDouble("/nonexistent")
    return [d.tracer._event(i, 1000.0 + i) for i in range(start, start + n)]


def batch(evs: list[P.TraceEvent], skipped: int = 0) -> P.TraceBatch:
    return {"events": evs, "skipped": skipped, "status": status()}


# -- the feed -------------------------------------------------------------------------------
def test_the_feed_keeps_the_newest_few_newest_first() -> None:
    feed = TraceFeed(size=50)
    for k in range(10):
        feed.add("/a", batch(events(30, 30 * k)))
    rows = feed.newest()
    assert len(rows) == 50 and feed.seq == 300
    assert [r.seq for r in rows] == list(range(300, 250, -1))
    assert rows[0].event["time"] == 1000.0 + 299
    assert [r.seq for r in feed.newest(3)] == [300, 299, 298]


def test_the_reader_is_woken_once_per_read_however_many_batches() -> None:
    feed = TraceFeed()
    wakes = [feed.add("/a", batch(events(5))) for _ in range(20)]
    assert wakes == [True] + [False] * 19
    feed.newest()
    assert feed.add("/a", batch(events(1)))
    assert not feed.failed("/a", "gone")  # not read since: no second wake-up


def test_a_new_subscription_replaces_that_agents_rows_only() -> None:
    feed = TraceFeed()
    feed.add("/a", batch(events(3)))
    feed.add("/b", batch(events(2)))
    feed.subscribed("/a", status(filter="dport 80"))
    assert [r.path for r in feed.newest()] == ["/b", "/b"]
    assert feed.status["/a"]["filter"] == "dport 80"


def test_rate_counts_live_batches_not_the_replayed_history_and_skips_add_up() -> None:
    now = [100.0]
    feed = TraceFeed(clock=lambda: now[0])
    feed.subscribed("/a", status())
    feed.add("/a", batch(events(500)))             # the history
    assert feed.rate() == 0.0
    for _ in range(10):
        now[0] += 0.1
        feed.add("/a", batch(events(100), skipped=900))
    assert feed.rate() == pytest.approx(1000 / 2.0)  # 1000 events in the 2 s window
    assert feed.skipped == 9000
    now[0] += 5
    assert feed.rate() == 0.0


def test_the_feed_takes_batches_from_threads_while_it_is_read() -> None:
    feed = TraceFeed(size=100)

    def writer(path: str) -> None:
        for _ in range(200):
            feed.add(path, batch(events(10)))

    threads = [threading.Thread(target=writer, args=(f"/{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        rows = feed.newest()
        assert len(rows) <= 100 and [r.seq for r in rows] == sorted(
            (r.seq for r in rows), reverse=True)
    assert feed.seq == 6000 and len(feed.newest()) == 100


# -- filter text -----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "n", "want"), [
    ("", 1, ""), ("", 10, "sample 10"), ("dport 80", 5, "dport 80 and sample 5"),
    ("sample 3 and src 10.0.0.0/8", 7, "src 10.0.0.0/8 and sample 7"),
    ("dport 80 AND sample 3", 1, "dport 80"), ("vip web and sample 2 and udp", 2,
                                               "vip web and udp and sample 2")])
def test_with_sample_sets_the_one_sample_term(text: str, n: int, want: str) -> None:
    assert with_sample(text, n) == want


def test_the_bad_word_is_found_by_the_agents_column_first() -> None:
    text = "src foo and dport 80"
    assert bad_word(text, "bad filter: expected a prefix after 'src', got 'foo' (column 5)") \
        == (4, 7)
    # 'src' is quoted too, and is in the text: the column decides
    assert bad_word("dport 80 and src", "bad filter: expected a prefix after 'src', got the "
                    "end of the filter (column 17)") == (16, 16)
    assert bad_word("vip nosuch", "bad filter: no VIP named 'nosuch'; the VIPs are web") \
        == (4, 10)
    assert bad_word("dport 80", "the agent is busy") is None


# -- the explain dialog's flow -----------------------------------------------------------------
def test_a_typed_flow_becomes_the_explain_parameters() -> None:
    assert parse_flow("198.18.0.12:40000 198.19.0.10:80") == {
        "src": "198.18.0.12", "sport": 40000, "dst": "198.19.0.10", "dport": 80,
        "protocol": "tcp", "syn": False}
    assert parse_flow("[fd00::12]:5 [fd00::10]:53 UDP") == {
        "src": "fd00::12", "sport": 5, "dst": "fd00::10", "dport": 53, "protocol": "udp",
        "syn": False}
    assert parse_flow("fd00::12 [fd00::10]:443 tcp syn")["sport"] is None
    assert parse_flow("10.0.0.1 10.0.0.2:80 --syn")["syn"] is True


@pytest.mark.parametrize(("text", "says"), [
    ("", "expected SRC[:SPORT]"), ("10.0.0.1", "expected SRC[:SPORT]"),
    ("foo 10.0.0.2:80", "'foo' is not an IP address"),
    ("10.0.0.1 10.0.0.2", "a port is needed"), ("10.0.0.1:0 10.0.0.2:80", "not 1..65535"),
    ("10.0.0.1 10.0.0.2:99999", "not 1..65535"), ("10.0.0.1 [fd00::1]:x", "'x'"),
    ("10.0.0.1 10.0.0.2:80 icmp", "got 'icmp'"), ("10.0.0.1 10.0.0.2:80 udp syn", "tcp only")])
def test_a_bad_flow_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_flow(text)
    assert says in str(e.value)


def test_explain_lines_show_each_step_and_the_outcome() -> None:
    t = TraceDouble(AgentDouble("/nonexistent").vips, False, 0.0)
    hit = t.explain("198.18.0.12", 40000, "198.19.0.10", 80, "tcp", True)
    no_port = t.explain("198.18.0.12", None, "198.19.0.10", 80, "tcp", False)
    text = explain_lines([("lb1", hit), ("lb2", "no agent answers"), ("lb3", no_port)])
    lines = text.splitlines()
    assert lines[0] == "lb1: 198.18.0.12:40000 -> 198.19.0.10:80/tcp"
    assert len([ln for ln in lines if ln.startswith("  ") and "⇒" not in ln]) >= 8
    assert f"⇒ TX (tx_encap): backend {hit['backend']} by maglev_syn" in text
    assert "lb2: not explained: no agent answers" in text
    assert "share of the source ports: 198.18.2.3 50.0 %, 198.18.2.1 25.0 %" in text


# -- the double speaks the protocol -------------------------------------------------------------
def test_the_doubles_trace_and_explain_conform_to_the_protocol(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "d.sock"), operator=True).start()
    try:
        t = d.tracer
        for name in ("web", "dns"):
            vip = next(v for v in d.vips if v["name"] == name)
            addr, port = vip["vip"].split("/")[0].rsplit(":", 1)
            ex = t.explain("198.18.0.12", 40000, addr, int(port), vip["vip"][-3:], False)
            assert not P.conforms(ex, P.Explain)
        assert not P.conforms(t.explain("10.0.0.1", None, "10.9.9.9", 1, "udp", False),
                              P.Explain)
        evs = events(200)
        assert not P.conforms(evs, list[P.TraceEvent])
        assert {e["source"] for e in evs} == {"xdp", "kernel"}
        assert {e["path"] for e in evs} >= {"conn", "maglev_syn", "maglev_stale", "none"}
        assert not P.conforms(t.current(), P.TraceStatus)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.path)
            s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"trace_start",'
                      b'"params":{"filter":"dport 80"}}\n'
                      b'{"jsonrpc":"2.0","id":2,"method":"trace_subscribe",'
                      b'"params":{"history":5}}\n')
            f = s.makefile("rb")
            msgs = [json.loads(f.readline()) for _ in range(3)]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(
                    m.get("method") == "trace" and m["params"]["events"] for m in msgs[3:]):
                msgs.append(json.loads(f.readline()))
        assert not P.conforms(msgs[0]["result"], P.TraceStatus)
        assert msgs[0]["result"]["filter"] == "dport 80"
        assert not P.conforms(msgs[1]["result"], P.TraceStatus)
        batches = [m["params"] for m in msgs if m.get("method") == "trace"]
        assert batches and all(not P.conforms(b, P.NOTIFICATIONS["trace"]) for b in batches)
        assert {e["dport"] for b in batches for e in b["events"]} == {80}
    finally:
        d.stop()
