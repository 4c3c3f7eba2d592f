"""Per-second rates from cumulative counter snapshots, and a bounded history of them.

The data plane only keeps cumulative per-CPU sums (cheap for the BPF side, no
timers); the operator wants "packets per second now" and a sparkline of the
last few minutes. RateTracker turns consecutive Counters into Rates and keeps
the last history_seconds/tick of them in preallocated ring buffers, so memory
is fixed at start and an update costs O(rows of the stats maps), never anything
proportional to the number of connections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from xlb.dataplane import structs as S
from xlb.dataplane.manager import Counters

ARRAY_KINDS: Final = ("queues", "vips", "backends", "reasons", "misses", "snat")
TOTAL_KINDS: Final = ("pps", "bps", "drop_pps")
KINDS: Final = TOTAL_KINDS + ARRAY_KINDS

# queues columns: packets, bytes, then one per XDP action (structs.XDP_ACTIONS order).
Q_PACKETS: Final = 0
Q_BYTES: Final = 1
Q_ABORTED: Final = 2 + S.XDP_ACTIONS.index("aborted")
Q_DROP: Final = 2 + S.XDP_ACTIONS.index("drop")
# snat columns (struct xlb_snat_stats): client packets and bytes translated, replies
# translated back (packets, bytes), translations made, new flows without a free port
SNAT_PACKETS, SNAT_BYTES, SNAT_REPLY_PACKETS, SNAT_REPLY_BYTES = 0, 1, 2, 3
SNAT_TRANSLATIONS, SNAT_NO_PORT, SNAT_COLUMNS = 4, 5, 6


@dataclass
class Rates:
    """Per-second rates over one interval; arrays have the shapes of Counters' arrays.

    The totals are derived here (not by callers) so every view of "pps" agrees.
    """

    at: float              # monotonic time of the newer reading
    interval: float        # seconds between the two readings the rates come from
    queues: np.ndarray     # (queues, 2 + actions) float64, per second
    vips: np.ndarray       # (max_vips, 2) float64, per second
    backends: np.ndarray   # (max_backends, 3) float64, per second
    reasons: np.ndarray    # (reasons, 2) float64, per second
    misses: np.ndarray = field(  # (XLB_MAX_MISSES, 2) float64, per second, by S.Miss
        default_factory=lambda: np.zeros((S.XLB_MAX_MISSES, 2)))
    snat: np.ndarray = field(  # (max_vips, 6) float64, per second: SNAT per VIP, in
        default_factory=lambda: np.zeros((0, SNAT_COLUMNS)))  # struct xlb_snat_stats' order
    pps: float = field(init=False)       # packets/s over all queues
    bps: float = field(init=False)       # bits/s over all queues
    drop_pps: float = field(init=False)  # XDP_DROP + XDP_ABORTED packets/s

    def __post_init__(self) -> None:
        q = self.queues
        self.pps = float(q[:, Q_PACKETS].sum())
        self.bps = float(q[:, Q_BYTES].sum()) * 8.0
        self.drop_pps = float(q[:, Q_DROP].sum() + q[:, Q_ABORTED].sum())


def counter_rates(prev: np.ndarray, now: np.ndarray, interval: float) -> np.ndarray:
    """(now - prev) / interval per element, with 0 where the counter went down.

    A decrease means the row was reset (a reused VIP/backend id, recreated maps):
    the true count since the last reading is unknown, and an unsigned difference
    would show a wrap of ~1.8e19/s, so that element reads 0 for this interval.
    """
    p = np.asarray(prev, dtype=np.uint64)
    n = np.asarray(now, dtype=np.uint64)
    delta = n - p  # wraps where n < p; those are overwritten below
    delta[n < p] = 0
    return delta.astype(np.float64) / interval


class RateTracker:
    """Turns successive Counters into Rates and remembers the recent ones.

    One history slot per update (the agent updates once per tick), so the ring
    holds ceil(history_seconds / tick) entries. The per-row rings are float32:
    plenty for sparklines, and half the memory of a large backend table.
    """

    def __init__(self, history_seconds: float = 300.0, tick: float = 1.0) -> None:
        if not (history_seconds > 0 and tick > 0):
            raise ValueError("history_seconds and tick must be positive")
        self.capacity: int = max(1, math.ceil(history_seconds / tick - 1e-9))
        self._prev: Counters | None = None
        self._last: Rates | None = None
        self._next = 0   # ring slot the next entry goes to
        self._count = 0  # entries kept, <= capacity
        self._totals = np.zeros((len(TOTAL_KINDS), self.capacity), dtype=np.float64)
        self._arrays: dict[str, np.ndarray] = {}  # kind -> (capacity, rows, cols), lazily sized

    def __len__(self) -> int:
        return self._count

    @property
    def last(self) -> Rates | None:
        """The most recent Rates (None until two readings were seen)."""
        return self._last

    def update(self, c: Counters) -> Rates | None:
        """Take a new reading; return the rates since the previous one (None the first time).

        A reading not later than the previous one cannot give a rate: it becomes
        the new baseline and None is returned. An array whose shape changed
        (maps recreated with another geometry) reads 0 for this interval and
        restarts its history, since old rows may mean other ids now.
        """
        prev = self._prev
        self._prev = _snapshot(c)
        if prev is None or not c.at > prev.at:
            return None
        interval = c.at - prev.at
        out: dict[str, np.ndarray] = {}
        for kind in ARRAY_KINDS:
            old, new = getattr(prev, kind), getattr(self._prev, kind)
            if old.shape == new.shape:
                out[kind] = counter_rates(old, new, interval)
            else:
                out[kind] = np.zeros(new.shape, dtype=np.float64)
        r = Rates(c.at, interval, out["queues"], out["vips"], out["backends"], out["reasons"],
                  out["misses"], out["snat"])
        self._record(r)
        self._last = r
        return r

    def _record(self, r: Rates) -> None:
        """Write r into the ring slot; O(rows) and no allocation once sized."""
        slot = self._next
        self._totals[:, slot] = (r.pps, r.bps, r.drop_pps)
        for kind in ARRAY_KINDS:
            arr: np.ndarray = getattr(r, kind)
            ring = self._arrays.get(kind)
            if ring is None or ring.shape[1:] != arr.shape:
                ring = np.zeros((self.capacity, *arr.shape), dtype=np.float32)
                self._arrays[kind] = ring
            ring[slot] = arr
        self._next = (slot + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def history(self, what: str, index: int | None = None, column: int = 0,
                n: int | None = None) -> np.ndarray:
        """The last n rates of one series, oldest first (float64, a copy; O(n)).

        what is a total ("pps", "bps", "drop_pps") or an array kind ("queues",
        "vips", "backends", "reasons", "misses", "snat"), for which index picks the row
        (queue, vip_id, backend id, Reason, Miss, vip_id) and column the counter (e.g. 0
        packets, 1 bytes).
        """
        k = self._count if n is None else max(0, min(n, self._count))
        slots = (self._next - k + np.arange(k)) % self.capacity
        if what in TOTAL_KINDS:
            if index is not None:
                raise ValueError(f"{what!r} is a total: it takes no index")
            return self._totals[TOTAL_KINDS.index(what), slots].copy()
        if what not in ARRAY_KINDS:
            raise ValueError(f"unknown series {what!r}; expected one of {', '.join(KINDS)}")
        if index is None:
            raise ValueError(f"{what!r} needs an index (which row)")
        ring = self._arrays.get(what)
        if ring is None:
            return np.zeros(0, dtype=np.float64)
        rows, cols = ring.shape[1], ring.shape[2]
        if not (0 <= index < rows and 0 <= column < cols):
            raise IndexError(f"{what}[{index}, {column}] is outside {rows}x{cols}")
        return ring[slots, index, column].astype(np.float64)


def _snapshot(c: Counters) -> Counters:
    """A private copy: the baseline must not change if the caller reuses its arrays."""
    return Counters(c.at, np.array(c.queues, dtype=np.uint64), np.array(c.vips, dtype=np.uint64),
                    np.array(c.backends, dtype=np.uint64), np.array(c.reasons, dtype=np.uint64),
                    np.array(c.misses, dtype=np.uint64), snat=np.array(c.snat, dtype=np.uint64))
