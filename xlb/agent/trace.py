"""The one flow trace of an instance: started and stopped by operators (audited), watched
by anyone who may read.

The data plane writes one event per traced packet into a ring buffer; a thread of its own
("xlb-trace") drains it, so the agent's tick never waits for it. Events go into a
bounded history (the [trace] `history` setting) and from there to each watcher, in
batches at most every BATCH seconds and at most `forward_rate` events per second per
watcher: what a watcher does not get is counted and sent as `skipped` with its next
batch, never dropped silently. A watcher that leaves its batches unread (its queue is
backing up) skips too, so a slow client costs the agent nothing. A trace stops by itself
after its `seconds` (the data plane's trace mode goes off), so a forgotten trace costs
nothing for long; it stops too when the agent stops, and an agent that starts and finds a
trace left on by its predecessor turns it off (nobody watches it any more, and nobody
would stop it).

The data plane itself is behind `Source` (xlb/agent/trace_source.py binds it): this
module is the session's logic alone, the same under test with a test double.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from xlb.agent.audit import AuditLog
from xlb.agent.settings import TraceSettings
from xlb.api import protocol as P
from xlb.errors import InvalidParams, XlbError

log = logging.getLogger(__name__)

BATCH = 0.1       # seconds between two batches to a watcher (at most)
HEARTBEAT = 1.0   # a running trace's status goes to every watcher at least this often
IDLE_HEARTBEAT = 10.0  # and while none runs, this often (a watcher knows the agent is there)
MAX_POLL = 4096   # events taken from the ring in one go


class Source(Protocol):
    """What the session drives: the data plane's trace setting and ring buffer."""

    def compile(self, text: str) -> tuple[str, int, Any]:
        """The filter's canonical text, its sampling and what start() writes; InvalidParams
        (the filter's own error, or a VIP or backend the data plane does not have)."""

    def start(self, compiled: Any) -> None:
        """Turn the data plane's trace on with a compiled filter."""

    def stop(self) -> None:
        """Turn it off."""

    def left_on(self) -> bool:
        """Whether the data plane's trace is on (a previous agent's, at start)."""

    def poll(self, timeout: float, max_events: int) -> list[P.TraceEvent]:
        """Events read from the ring, waiting at most `timeout` seconds for the first."""

    def lost(self) -> int:
        """Events the data plane could not write since its maps were made."""


Send = Callable[[P.TraceBatch], bool]  # False: the watcher is behind, this batch not sent


@dataclass(eq=False)
class Watcher:
    """One client watching the trace: where it is in the history and its budget."""

    send: Send
    cursor: int                 # the sequence number of the next event it gets
    history: int                # recent events to send first (0: sent)
    tokens: float = 0.0         # events it may still get now (refilled at forward_rate)
    refilled: float = 0.0
    skipped: int = 0            # not forwarded since its last batch
    sent_at: float = 0.0
    seen: tuple[bool, float] | None = None  # (running, started) its last batch said


@dataclass
class _State:
    running: bool = False
    filter: str = ""
    sample: int = 1
    started: float = 0.0
    expires: float = 0.0
    by: str = ""
    events: int = 0             # read since it started
    lost_at_start: int = 0
    lost: int = 0               # the data plane's counter, as last read
    skipped: int = 0            # not forwarded to watchers since it started
    rate_mark: tuple[float, int] = (0.0, 0)
    per_s: float = 0.0
    totals: dict[str, int] = field(default_factory=lambda: {"events": 0, "skipped": 0})


class Trace:
    def __init__(self, settings: TraceSettings, source: Source, audit: AuditLog,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.source = source
        self.audit = audit
        self.clock = clock
        self.history: deque[P.TraceEvent] = deque(maxlen=settings.history)
        self.seq = 0                         # events appended since the agent started
        self.watchers: list[Watcher] = []
        self.state = _State()
        self.lock = threading.Lock()         # the state, history and watchers
        self.control = threading.Lock()      # one start/stop at a time
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._drain = False  # stopped: what is still in the ring is read once more
        self._thread: threading.Thread | None = None

    # -- life -------------------------------------------------------------------------------
    def open(self) -> None:
        """Turn off a trace a previous agent left on, then start the reading thread."""
        try:
            if self.source.left_on():
                self.source.stop()
                log.info("a trace left on by a previous agent was turned off")
                self._record("trace_stop", "left on by a previous agent")
        except (OSError, XlbError) as e:
            log.error("could not check for a trace left on: %s", e)
        self._thread = threading.Thread(target=self._run, name="xlb-trace", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """The agent stops: a running trace is turned off, the thread ends."""
        with self.control:
            if self.state.running:
                self._stop_dataplane("the agent stopped")
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- operations (the API's) ---------------------------------------------------------------
    def start(self, uid: int, user: str, text: str, seconds: int | None) -> P.TraceStatus:
        """Start a trace (or give the running one a new filter): audited first, then the
        data plane. A bad filter, an unknown VIP or backend or too many seconds change
        nothing (InvalidParams)."""
        seconds = self.settings.seconds if seconds is None else seconds
        if seconds > self.settings.max_seconds:
            raise InvalidParams(f"a trace may run at most {self.settings.max_seconds} s "
                                f"([trace] max_seconds), not {seconds}")
        canonical, sample, compiled = self.source.compile(text)
        with self.control:
            before = self._view()
            after = {"running": True, "filter": canonical, "seconds": seconds}
            with self.audit.change(uid=uid, user=user, action="trace_start",
                                   params={"filter": canonical, "seconds": seconds},
                                   before={"trace": before}, after={"trace": after}):
                self.source.start(compiled)
            now = self.clock()
            lost = self._lost()
            with self.lock:
                self._flush(now, force=True)  # what the old filter caught goes out first
                self.history.clear()
                for w in self.watchers:
                    w.cursor, w.skipped = self.seq, 0
                old, self._drain = self.state, False
                self.state = _State(True, canonical, sample, now, now + seconds, user,
                                    lost_at_start=lost, lost=lost, rate_mark=(now, 0),
                                    totals=old.totals)
            self._wake.set()  # an idle thread waits up to HEARTBEAT: it reads from now on
            self._flush_now()
        log.info("%s (uid %d) started a trace for %d s: %s", user, uid, seconds,
                 canonical or "every packet")
        return self.status()

    def stop(self, uid: int, user: str) -> P.TraceStatus:
        """Stop the running trace (audited); a trace that is not running stays so."""
        with self.control:
            if self.state.running:
                before = self._view()
                with self.audit.change(uid=uid, user=user, action="trace_stop", params={},
                                       before={"trace": before},
                                       after={"trace": {**before, "running": False}}):
                    self.source.stop()
                self._stopped()
                log.info("%s (uid %d) stopped the trace", user, uid)
        return self.status()

    def status(self) -> P.TraceStatus:
        with self.lock:
            return self._status_locked()

    def events(self, n: int) -> list[P.TraceEvent]:
        """The last `n` events of the history, oldest first."""
        with self.lock:
            return self._last(n)

    def watch(self, send: Send, history: int) -> Watcher:
        """A new watcher; the thread sends it `history` recent events first."""
        with self.lock:
            w = Watcher(send, self.seq, history, tokens=self._capacity(),
                        refilled=self.clock())
            self.watchers.append(w)
        self._wake.set()
        return w

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            if w in self.watchers:
                self.watchers.remove(w)

    def totals(self) -> dict[str, int]:
        """For the metrics: events read, lost and skipped since the agent started (lost:
        since the data plane's maps were made)."""
        with self.lock:
            return {**self.state.totals, "lost": self.state.lost}

    # -- events from elsewhere ----------------------------------------------------------------
    def add(self, events: list[P.TraceEvent]) -> None:
        """Events of the running trace (the data plane's, or kernel drops of traced
        flows): into the history, counted; those from before it started are left out."""
        if not events:
            return
        with self.lock:
            s = self.state
            if not (s.running or self._drain):
                return
            fresh = [e for e in events if e["time"] >= s.started]
            self.history.extend(fresh)
            self.seq += len(fresh)
            s.events += len(fresh)
            s.totals["events"] += len(fresh)

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                self._step()
            except Exception:
                log.exception("reading the trace failed; trying again in a second")
                self._closing.wait(1.0)

    def _step(self) -> None:
        with self.lock:
            running, expires = self.state.running, self.state.expires
            idle, drain = not self.watchers, self._drain
        if running:
            self.add(self.source.poll(BATCH, MAX_POLL))
        elif drain:  # the last events of a trace that stopped (only this thread reads)
            self.add(self.source.poll(0.0, MAX_POLL))
            with self.lock:
                self._drain = False
                self._flush(self.clock(), force=True)
        else:
            self._wake.wait(HEARTBEAT if idle else BATCH)
            self._wake.clear()
        now = self.clock()
        if running and now >= expires:
            with self.control:
                if self.state.running and self.state.expires <= now:
                    self._stop_dataplane(f"its {round(expires - self.state.started)} s "
                                         "were over")
        if running:
            lost = self._lost()
            with self.lock:
                self.state.lost = max(self.state.lost, lost)
        with self.lock:
            self._flush(now)

    def _flush_now(self) -> None:
        with self.lock:
            self._flush(self.clock(), force=True)

    def _flush(self, now: float, force: bool = False) -> None:
        """Send each watcher what is due (call with the lock held): its history first,
        then the new events within its budget, at most every BATCH seconds; the status at
        least every HEARTBEAT while running (IDLE_HEARTBEAT while not) and at once when the
        trace starts or stops."""
        s = self.state
        mark_at, mark_events = s.rate_mark
        if now - mark_at >= HEARTBEAT:
            s.per_s = (s.events - mark_events) / (now - mark_at) if s.running else 0.0
            s.rate_mark = (now, s.events)
        status: P.TraceStatus | None = None
        oldest = self.seq - len(self.history)
        for w in list(self.watchers):
            if not force and now - w.sent_at < BATCH:
                continue
            events: list[P.TraceEvent] = []
            if w.history:
                events = self._last(w.history)
                w.history, w.cursor = 0, self.seq
            else:
                if w.cursor < oldest:  # fell out of the history before it was sent
                    w.skipped += oldest - w.cursor
                    self._count_skipped(oldest - w.cursor)
                    w.cursor = oldest
                new = self._last(self.seq - w.cursor)
                w.cursor = self.seq
                events = self._within_budget(w, new, now)
            changed = w.seen != (s.running, s.started)
            due = HEARTBEAT if s.running else IDLE_HEARTBEAT
            if not (events or w.skipped or changed or now - w.sent_at >= due):
                continue
            if status is None:
                status = self._status_locked()
            batch: P.TraceBatch = {"events": events, "skipped": w.skipped, "status": status}
            if w.send(batch):
                w.skipped, w.sent_at, w.seen = 0, now, (s.running, s.started)
            else:  # behind: these count as skipped, told with the next batch it takes
                w.skipped += len(events)
                self._count_skipped(len(events))

    def _within_budget(self, w: Watcher, new: list[P.TraceEvent],
                       now: float) -> list[P.TraceEvent]:
        """At most the watcher's tokens of `new`, spread evenly over it (a sample, not the
        first few); the rest counted as skipped."""
        cap = self._capacity()
        w.tokens = min(cap, w.tokens + (now - w.refilled) * self.settings.forward_rate)
        w.refilled = now
        take = min(len(new), int(w.tokens))
        w.tokens -= take
        if take < len(new):
            left = len(new) - take
            w.skipped += left
            self._count_skipped(left)
            new = [new[i * len(new) // take] for i in range(take)] if take else []
        return new

    def _capacity(self) -> float:
        """A watcher's burst: one batch's worth of its rate (at least one event)."""
        return max(1.0, self.settings.forward_rate * BATCH)

    def _count_skipped(self, n: int) -> None:
        self.state.skipped += n
        self.state.totals["skipped"] += n

    # -- helpers ------------------------------------------------------------------------------
    def _last(self, n: int) -> list[P.TraceEvent]:
        """The newest `n` events of the history, oldest first, without copying the rest
        of it (it holds up to [trace] history events; batches go out ten times a second)."""
        newest = list(itertools.islice(reversed(self.history), max(n, 0)))
        newest.reverse()
        return newest

    def _status_locked(self) -> P.TraceStatus:
        s = self.state
        return {"running": s.running, "filter": s.filter, "sample": s.sample,
                "started": s.started, "expires": s.expires if s.running else 0.0, "by": s.by,
                "events": s.events, "lost": max(0, s.lost - s.lost_at_start),
                "skipped": s.skipped, "per_s": round(s.per_s, 1), "history": len(self.history)}

    def _view(self) -> dict[str, Any]:
        """The trace as the audit log shows it, before and after a change."""
        s = self.state
        return {"running": s.running, "filter": s.filter,
                "seconds": round(s.expires - s.started) if s.running else 0}

    def _lost(self) -> int:
        try:
            return self.source.lost()
        except (OSError, XlbError) as e:
            log.debug("trace: lost events not read: %s", e)
            return self.state.lost

    def _stop_dataplane(self, why: str) -> None:
        """The agent stops the trace of its own accord (its time is over, the agent
        stops): turned off, recorded in the audit log. Call with `control` held."""
        try:
            self.source.stop()
        except (OSError, XlbError) as e:
            log.error("the trace could not be turned off (%s): %s", why, e)
            return
        self._stopped()
        log.info("trace stopped: %s", why)
        self._record("trace_stop", why)

    def _stopped(self) -> None:
        lost = self._lost()
        with self.lock:
            self.state.lost = max(self.state.lost, lost)
            self.state.running = False
            self.state.per_s = 0.0
            self._drain = True
        self._wake.set()
        self._flush_now()

    def _record(self, action: str, why: str) -> None:
        try:
            self.audit.record(uid=os.getuid(), user="agent", action=action,
                              params={"why": why}, before={"trace": {"running": True}},
                              after={"trace": {"running": False}})
        except XlbError as e:
            log.error("the trace was stopped (%s), but not recorded: %s", why, e)
