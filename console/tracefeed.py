"""The flow trace as the console holds it: the newest events, bounded, fed by a link's thread.

Events arrive in batches on a TraceLink's thread at whatever rate the agents
forward, tens of thousands a second at worst; the Flows view draws a few
times a second and may not be shown at all. So the feed is a ring (a deque
with maxlen) under a lock: adding a batch costs one extend, reading the
newest rows one copy, memory is fixed however fast events come or however
long nobody reads them, and the reader is woken at most once per read (a
burst of batches makes one wake-up message, not one each). Pure Python, no
Textual: tested directly.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from xlb.api.protocol import TraceBatch, TraceEvent, TraceStatus

BUFFER = 2000        # events held (the newest), whatever the rate: the table's scrollback
RATE_WINDOW = 2.0    # seconds over which the arrival rate is measured


class TraceRow(NamedTuple):
    seq: int          # arrival order in this console, 1, 2, ...: the row's key
    path: str         # the agent's socket (the view names its instance)
    event: TraceEvent


class TraceFeed:
    """The newest BUFFER events of every followed agent, and what each agent says of its
    trace. Written from link threads, read from the UI thread."""

    def __init__(self, size: int = BUFFER, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._rows: deque[TraceRow] = deque(maxlen=size)
        self._clock = clock
        self._arrivals: deque[tuple[float, int]] = deque(maxlen=256)  # (time, events)
        self._wake = True   # the next add wakes the reader
        self.seq = 0        # events received in all (the newest's seq)
        self.skipped = 0    # events the agents did not forward to this console (rate limit)
        self.status: dict[str, TraceStatus] = {}   # by socket path
        self.errors: dict[str, str] = {}           # by path: why there is no trace feed
        self._replay: set[str] = set()  # paths whose next batch is the history, not news

    # -- from a link's thread ------------------------------------------------------------
    def subscribed(self, path: str, status: TraceStatus) -> None:
        """A new subscription to `path`: its history comes again, so its old rows go."""
        with self._lock:
            self._rows = deque((r for r in self._rows if r.path != path),
                               maxlen=self._rows.maxlen)
            self.status[path] = status
            self.errors.pop(path, None)
            self._replay.add(path)

    def add(self, path: str, batch: TraceBatch) -> bool:
        """Take one notification's events (oldest first); True when the reader must be
        woken (it was not yet since its last read)."""
        with self._lock:
            first = self.seq + 1
            self.seq += len(batch["events"])
            self._rows.extend(TraceRow(first + i, path, ev)
                              for i, ev in enumerate(batch["events"]))
            self.skipped += batch["skipped"]
            self.status[path] = batch["status"]
            if path in self._replay:  # the history: no part of the arrival rate
                self._replay.discard(path)
            else:
                self._arrivals.append((self._clock(), len(batch["events"])))
            wake, self._wake = self._wake, False
            return wake

    def failed(self, path: str, error: str) -> bool:
        with self._lock:
            self.errors[path] = error
            wake, self._wake = self._wake, False
            return wake

    # -- from the UI thread -----------------------------------------------------------------
    def set_status(self, path: str, status: TraceStatus) -> None:
        """What trace_start / trace_stop answered: shown before the next batch says so."""
        with self._lock:
            self.status[path] = status

    def newest(self, n: int = BUFFER) -> list[TraceRow]:
        """The newest `n` rows, newest first; the reader may be woken again."""
        with self._lock:
            self._wake = True
            rows = list(self._rows)
        return rows[: -n - 1: -1] if n < len(rows) else rows[::-1]

    def rate(self) -> float:
        """Events per second that arrived at this console in the last RATE_WINDOW seconds."""
        now = self._clock()
        with self._lock:
            recent = [n for t, n in self._arrivals if now - t < RATE_WINDOW]
        return sum(recent) / RATE_WINDOW
