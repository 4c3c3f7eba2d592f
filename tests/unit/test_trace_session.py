"""The agent's trace session (xlb/agent/trace.py) on its own: history, fan-out to
watchers with a rate limit and skipped counts, auto-stop, audit. The data plane is a test
double here (tests/agent/test_trace.py runs the real one in an agent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xlb.agent.audit import AuditLog
from xlb.agent.settings import TraceSettings
from xlb.agent.trace import BATCH, HEARTBEAT, Trace
from xlb.api import protocol as P
from xlb.errors import InvalidParams


class SourceDouble:
    """Stands in for the data plane: records what the session turned on and off, and
    hands out the events a test queued."""

    def __init__(self) -> None:
        self.on: str | None = None
        self.queued: list[P.TraceEvent] = []
        self.lost_count = 0
        self.left = False

    def compile(self, text: str) -> tuple[str, int, Any]:
        if "bad" in text:
            raise InvalidParams(f"expected a prefix after 'src', got {text!r}")
        return text, 1, text

    def start(self, compiled: Any) -> None:
        self.on = compiled

    def stop(self) -> None:
        self.on = None

    def left_on(self) -> bool:
        return self.left

    def poll(self, timeout: float, max_events: int) -> list[P.TraceEvent]:
        out, self.queued = self.queued[:max_events], self.queued[max_events:]
        return out

    def lost(self) -> int:
        return self.lost_count


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(t: float, sport: int = 40000) -> P.TraceEvent:
    return {"source": "xdp", "time": t, "cpu": 0, "queue": 1, "interface": "xlb0",
            "protocol": "tcp", "src": "198.51.100.7", "sport": sport, "dst": "10.100.0.10",
            "dport": 80, "vip": "web", "backend": "10.0.1.1", "path": "maglev_syn",
            "action": "TX", "reason": "tx_encap", "length": 74, "outer_src": "172.16.0.1"}


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Trace, SourceDouble, Clock, AuditLog]:
    source, clock = SourceDouble(), Clock()
    audit = AuditLog(str(tmp_path / "audit.jsonl"))
    trace = Trace(TraceSettings(history=200, forward_rate=100, seconds=300, max_seconds=600),
                  source, audit, clock)
    return trace, source, clock, audit


class Inbox:
    """A watcher's side: the batches it was sent (or refuses, while `behind`)."""

    def __init__(self) -> None:
        self.batches: list[P.TraceBatch] = []
        self.behind = False

    def __call__(self, batch: P.TraceBatch) -> bool:
        if self.behind:
            return False
        assert P.conforms(batch, P.TraceBatch) == []
        self.batches.append(json.loads(json.dumps(batch)))  # as the wire carries it
        return True

    def events(self) -> list[P.TraceEvent]:
        return [e for b in self.batches for e in b["events"]]

    def skipped(self) -> int:
        return sum(b["skipped"] for b in self.batches)


def test_start_stop_are_audited_and_drive_the_data_plane(parts: Any) -> None:
    trace, source, clock, audit = parts
    st = trace.start(0, "root", "src 198.51.100.7", None)
    assert source.on == "src 198.51.100.7"
    assert P.conforms(st, P.TraceStatus) == []
    assert (st["running"], st["filter"], st["by"]) == (True, "src 198.51.100.7", "root")
    assert st["expires"] == clock.now + 300  # the [trace] seconds
    clock.now += 5
    st = trace.stop(0, "root")
    assert source.on is None and not st["running"] and st["expires"] == 0
    start, stop = audit.tail(5)
    assert (start["action"], start["params"]) == (
        "trace_start", {"filter": "src 198.51.100.7", "seconds": 300})
    assert start["before"] == {"trace": {"running": False, "filter": "", "seconds": 0}}
    assert start["after"]["trace"]["running"] is True
    assert (stop["action"], stop["after"]["trace"]["running"]) == ("trace_stop", False)
    assert "trace: running True → False" in P.entry_text(stop)


def test_a_bad_filter_or_too_long_changes_nothing(parts: Any) -> None:
    trace, source, _, audit = parts
    with pytest.raises(InvalidParams, match="expected a prefix"):
        trace.start(0, "root", "src bad", None)
    with pytest.raises(InvalidParams, match="at most 600 s"):
        trace.start(0, "root", "", 601)
    assert source.on is None and not trace.status()["running"] and audit.tail(5) == []


def test_it_stops_by_itself_and_says_so(parts: Any) -> None:
    trace, source, clock, audit = parts
    inbox = Inbox()
    trace.watch(inbox, 0)
    trace.start(0, "root", "", 10)
    clock.now += 9.9
    trace._step()
    assert source.on == "" and trace.status()["running"]
    clock.now += 0.2
    trace._step()
    assert source.on is None and not trace.status()["running"]
    assert not inbox.batches[-1]["status"]["running"], "the watchers are told"
    last = audit.tail(1)[0]
    assert (last["user"], last["action"], last["params"]) == (
        "agent", "trace_stop", {"why": "its 10 s were over"})


def test_history_is_bounded_and_served_to_new_watchers(parts: Any) -> None:
    trace, source, clock, _ = parts
    trace.start(0, "root", "", None)
    trace.add([event(clock.now, 1000 + i) for i in range(250)])
    assert trace.status()["history"] == 200 and trace.status()["events"] == 250
    assert [e["sport"] for e in trace.events(3)] == [1247, 1248, 1249]
    late = Inbox()
    trace.watch(late, 50)
    trace._step()
    assert [e["sport"] for e in late.events()] == list(range(1200, 1250))
    assert late.skipped() == 0


def test_events_from_before_the_start_are_left_out(parts: Any) -> None:
    trace, _, clock, _ = parts
    trace.start(0, "root", "", None)
    trace.add([event(clock.now - 0.5), event(clock.now)])
    assert trace.status()["events"] == 1


def test_rate_limit_forwards_a_sample_and_counts_the_rest(parts: Any) -> None:
    """forward_rate 100/s: over 2 s of 1000 events/s, a watcher gets about 200 and is told
    of every other one; events + skipped is what the trace read."""
    trace, source, clock, _ = parts
    inbox = Inbox()
    trace.watch(inbox, 0)
    trace.start(0, "root", "", None)
    for _ in range(20):  # 2 s in batches
        clock.now += BATCH
        source.queued = [event(clock.now, i) for i in range(100)]
        trace._step()
    got = len(inbox.events())
    assert 190 <= got <= 210, got
    assert got + inbox.skipped() == trace.status()["events"] == 2000
    assert trace.status()["skipped"] == 2000 - got == trace.totals()["skipped"]
    sports = [e["sport"] for e in inbox.batches[-1]["events"]]
    assert sports and max(sports) > 50, "a sample across the batch, not its first few"


def test_a_watcher_that_is_behind_skips_and_is_told(parts: Any) -> None:
    trace, source, clock, _ = parts
    inbox = Inbox()
    trace.watch(inbox, 0)
    trace.start(0, "root", "", None)
    inbox.behind = True
    clock.now += BATCH
    source.queued = [event(clock.now, i) for i in range(5)]
    trace._step()
    inbox.behind = False
    clock.now += BATCH
    source.queued = [event(clock.now, 10)]
    trace._step()
    assert [e["sport"] for e in inbox.events()] == [10]
    assert inbox.batches[-1]["skipped"] == 5


def test_watchers_get_a_batch_on_every_change_and_a_heartbeat(parts: Any) -> None:
    trace, _, clock, _ = parts
    inbox = Inbox()
    trace.watch(inbox, 0)
    trace._step()
    assert len(inbox.batches) == 1 and not inbox.batches[0]["status"]["running"]
    trace.start(0, "root", "dport 80", None)
    assert inbox.batches[-1]["status"]["filter"] == "dport 80"
    clock.now += 1
    trace.start(0, "root", "dport 81", None)  # the filter replaced: a new trace
    assert inbox.batches[-1]["status"]["filter"] == "dport 81"
    n = len(inbox.batches)
    clock.now += HEARTBEAT
    trace._step()
    assert len(inbox.batches) == n + 1, "a running trace's status at least every second"


def test_a_trace_left_on_is_turned_off_at_start(parts: Any) -> None:
    trace, source, _, audit = parts
    source.left, source.on = True, "dport 80"
    trace.open()
    try:
        assert source.on is None
        assert audit.tail(1)[0]["params"] == {"why": "left on by a previous agent"}
    finally:
        trace.close()


def test_closing_turns_a_running_trace_off(parts: Any) -> None:
    trace, source, _, _ = parts
    trace.open()
    trace.start(0, "root", "", None)
    trace.close()
    assert source.on is None


# -- kernel drops of traced flows, and the CLI's line ------------------------------------------
def kernel(examples: list[P.Packet], reason: str = "NO_SOCKET") -> P.Kernel:
    k = P.empty_kernel()
    k["drops"] = [{"reason": reason, "code": 3, "per_s": 1.0, "total": len(examples),
                   "lb_total": 0, "addresses": {}, "examples": examples}]
    return k


def packet(t: float, src: str = "198.51.100.7", sport: int = 40000) -> P.Packet:
    return {"time": t, "protocol": "tcp", "src": src, "sport": sport, "dst": "10.100.0.10",
            "dport": 80}


def test_kernel_drops_of_traced_flows_join_the_trace_once() -> None:
    from types import SimpleNamespace

    from tests.helpers import base_config
    from xlb.agent.trace_source import DataplaneSource
    from xlb.dataplane.config import parse_config
    from xlb.trace.filter import parse

    source = DataplaneSource(SimpleNamespace(desired=parse_config(base_config())))  # type: ignore[arg-type]
    assert source.kernel_events(kernel([packet(10.0)])) == [], "no trace: nothing"
    source.filter, source.started = parse("src 198.51.100.7"), 100.0
    reply: P.Packet = {**packet(103.0, src="10.100.0.10", sport=80), "dst": "198.51.100.7",
                       "dport": 40000}  # a reply dropped on its way back: the same flow
    drops = [packet(101.0), packet(99.0), packet(102.0, src="198.51.100.8"), reply]
    got = source.kernel_events(kernel(drops))
    assert [(e["time"], e["src"]) for e in got] == [(101.0, "198.51.100.7"),
                                                   (103.0, "10.100.0.10")]
    assert P.conforms(got, list[P.TraceEvent]) == []
    assert (got[0]["source"], got[0]["vip"], got[0]["action"], got[0]["reason"]) == (
        "kernel", "web", "DROP", "NO_SOCKET")
    assert source.kernel_events(kernel(drops)) == [], "the same examples at the next tick"
    assert len(source.kernel_events(kernel([packet(104.0), *drops]))) == 1


def test_the_cli_prints_one_line_per_event() -> None:
    from xlb.cli.trace import line

    text = line(dict(event(1000.25, 40000)))
    assert "q1 cpu0" in text and "198.51.100.7:40000 → 10.100.0.10:80" in text
    assert text.endswith("web → 10.0.1.1  maglev_syn  TX tx_encap")
    v6 = {**event(1000.0), "src": "2001:db8::7", "dst": "2001:db8::10"}
    assert "[2001:db8::7]:40000 → [2001:db8::10]:80" in line(v6)
    passed = {**event(1000.0), "vip": None, "backend": None, "path": "none",
              "action": "PASS", "reason": "pass_not_vip"}
    assert line(passed).endswith("10.100.0.10:80  PASS pass_not_vip")
    dropped = {**event(1000.0), "source": "kernel", "action": "DROP", "reason": "NO_SOCKET"}
    assert " kernel " in line(dropped) and line(dropped).endswith("DROP NO_SOCKET")


def test_the_last_events_of_a_stopped_trace_are_read_once_more(parts: Any) -> None:
    trace, source, clock, _ = parts
    inbox = Inbox()
    trace.watch(inbox, 0)
    trace.start(0, "root", "", None)
    source.queued = [event(clock.now, 1)]  # written just before the trace went off
    trace.stop(0, "root")
    trace._step()
    assert [e["sport"] for e in inbox.events()] == [1]
    assert trace.status()["events"] == 1 and not trace.status()["running"]
    source.queued = [event(clock.now, 2)]
    trace._step()
    assert trace.status()["events"] == 1, "read once, then the ring is left alone"


def test_events_that_leave_the_history_unsent_are_counted_as_skipped(parts: Any) -> None:
    trace, source, clock, _ = parts
    inbox = Inbox()
    trace.watch(inbox, 0)
    trace.start(0, "root", "", None)
    clock.now += 1.0  # a full budget: 10 events
    source.queued = [event(clock.now, i) for i in range(250)]  # more than the history holds
    trace._step()
    assert len(inbox.events()) == 10 and inbox.skipped() == 240
    assert trace.status()["skipped"] == 240


def test_xlb_trace_refuses_a_bad_filter_before_asking_the_agent(
        capsys: pytest.CaptureFixture[str]) -> None:
    from xlb.cli import main

    assert main(["trace", "src", "foo", "--socket", "/nonexistent/agent.sock"]) == 2
    err = capsys.readouterr().err
    assert "got 'foo'" in err and "src foo\n      ^" in err
