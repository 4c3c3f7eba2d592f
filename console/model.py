"""What the console knows: the latest snapshot of each agent, and short histories.

The agent sends one snapshot per tick; the console keeps the last few minutes
of the figures it draws as sparklines (bounded deques, so memory is fixed)
and derives what the views show (fleet totals, observed shares, the hot
queue). Pure Python with no Textual: the views stay thin and this is tested
directly.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from console.tracefeed import TraceFeed
from xlb.api.protocol import (
    Backend,
    Mode,
    Packet,
    Probe,
    Snapshot,
    Status,
    Vip,
    VipModes,
    XdpError,
)

HISTORY = 120          # snapshots kept per series (2 minutes at the default tick)
EXHAUSTED_MARK = 0.05  # a NAPI instance whose polls use the whole budget this often is saturated
HOT_FACTOR = 1.5       # a queue above 1.5x the mean of all queues is "hot"
LOST_STATE_SECONDS = 10.0  # TCP non-SYN misses above zero this long: flows are losing state
NO_MODES: VipModes = {"dsr_pps": 0.0, "snat_pps": 0.0, "reply_pps": 0.0,
                      "translations_per_s": 0.0, "no_port": 0}


@dataclass
class Link:
    """What the console knows about its connection to one agent."""

    path: str
    connected: bool = False
    error: str = ""
    since: float = field(default_factory=time.time)
    operator: bool = False


@dataclass
class Instance:
    name: str
    snap: Snapshot
    pps: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    bps: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    drops: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    queues: list[deque[float]] = field(default_factory=list)
    reasons: dict[str, deque[float]] = field(default_factory=dict)
    kernel_drops: dict[str, deque[float]] = field(default_factory=dict)  # by kernel reason
    syn: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    non_syn: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    non_syn_since: float | None = None  # agent time the non-SYN misses rose above zero

    def add(self, snap: Snapshot) -> None:
        self.snap = snap
        t = snap["totals"]
        self.pps.append(t["pps"])
        self.bps.append(t["bps"])
        self.drops.append(t["drop_pps"])
        qs = snap["queues"]
        while len(self.queues) < len(qs):
            self.queues.append(deque(maxlen=HISTORY))
        for series, value in zip(self.queues, qs, strict=False):
            series.append(value)
        for label, value in snap["reasons"].items():
            self.reasons.setdefault(label, deque(maxlen=HISTORY)).append(value)
        for d in snap["kernel"]["drops"]:
            self.kernel_drops.setdefault(d["reason"], deque(maxlen=HISTORY)).append(d["per_s"])
        misses = snap.get("misses") or {}  # an older agent sends none
        self.syn.append(misses.get("tcp_syn", 0.0))
        self.non_syn.append(misses.get("tcp_non_syn", 0.0))
        if self.non_syn[-1] <= 0:
            self.non_syn_since = None
        elif self.non_syn_since is None:
            self.non_syn_since = snap["time"]

    def lost_state_for(self) -> float:
        """Seconds the TCP non-SYN misses have stayed above zero (0: they are not)."""
        if self.non_syn_since is None:
            return 0.0
        return self.snap["time"] - self.non_syn_since


@dataclass(frozen=True)
class QueueRow:
    instance: str
    queue: int
    pps: float
    history: tuple[float, ...]
    hot: bool


@dataclass(frozen=True)
class KernelDropRow:
    """One kernel drop reason over the shown instances."""

    reason: str
    per_s: float
    total: int
    lb_total: int
    history: tuple[float, ...]
    examples: tuple[Packet, ...]   # newest first


@dataclass(frozen=True)
class BackendRow:
    address: str
    weight: int
    state: str
    health: str
    ring_share: float
    conn_share: float     # observed share of new connections in this VIP
    packet_share: float   # observed share of packets in this VIP
    active_connections: int
    new_connections_per_s: float
    pps: float
    changed: float        # when the state or health last changed (agent time), 0 = unknown


@dataclass(frozen=True)
class VipRef:
    """A VIP of one instance: what the Backends view selects."""

    instance: str
    name: str
    label: str
    healthy: int
    total: int
    pps: float
    panic: bool = False  # failing open: all serving backends take flows, down or not
    mode: Mode = "dsr"   # how its new flows are forwarded

    @property
    def key(self) -> str:
        return f"{self.instance}/{self.name}"

    @property
    def family(self) -> int:
        """4 or 6, from the label (address:port/protocol, [v6]:port/protocol)."""
        return 6 if self.label.startswith("[") else 4


class Fleet:
    """Every agent the console follows, and which instance is in focus (None = all)."""

    def __init__(self, paths: list[str]):
        self.links = {p: Link(p) for p in paths}
        self.instances: dict[str, Instance] = {}
        self.by_path: dict[str, str] = {}
        self.focus: str | None = None
        self.trace = TraceFeed()  # the flow trace's newest events (filled while Flows shows)

    # -- updates from the links ----------------------------------------------------
    def snapshot(self, path: str, snap: Snapshot) -> Instance:
        name = snap["instance"]
        self.by_path[path] = name
        inst = self.instances.setdefault(name, Instance(name, snap))
        inst.add(snap)
        link = self.links.setdefault(path, Link(path))
        if not link.connected:
            link.connected, link.error, link.since = True, "", time.time()
        return inst

    def hello(self, path: str, status: Status) -> None:
        link = self.links.setdefault(path, Link(path))
        link.connected, link.error, link.since = True, "", time.time()
        link.operator = status["caller"]["operator"]
        snap: Snapshot = {k: v for k, v in status.items()  # type: ignore[assignment]
                          if k != "caller"}
        self.snapshot(path, snap)

    def lost(self, path: str, error: str) -> None:
        link = self.links.setdefault(path, Link(path))
        if link.connected or link.error != error:
            link.since = time.time()
        link.connected, link.error = False, error

    # -- what the views read ---------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.instances)

    def shown(self) -> list[Instance]:
        """The instances in focus: one, or all of them."""
        if self.focus is not None and self.focus in self.instances:
            return [self.instances[self.focus]]
        return [self.instances[n] for n in self.names()]

    def cycle_focus(self) -> str | None:
        order: list[str | None] = [None, *self.names()]
        self.focus = order[(order.index(self.focus) + 1) % len(order)] if (
            self.focus in order) else None
        return self.focus

    def operator(self) -> bool:
        """May this console change things? Only if every connected agent says so."""
        up = [link for link in self.links.values() if link.connected]
        return bool(up) and all(link.operator for link in up)

    def path_of(self, instance: str) -> str | None:
        for path, name in self.by_path.items():
            if name == instance:
                return path
        return None

    def totals(self) -> dict[str, float]:
        out = {"pps": 0.0, "bps": 0.0, "drop_pps": 0.0}
        for inst in self.shown():
            t = inst.snap["totals"]
            out["pps"] += t["pps"]
            out["bps"] += t["bps"]
            out["drop_pps"] += t["drop_pps"]
        return out

    def history(self, kind: str) -> list[float]:
        """Sum of a total's history over the shown instances, newest last."""
        out: list[float] = []
        for inst in self.shown():
            out = _add_aligned(out, list(getattr(inst, kind)))
        return out

    def misses(self) -> tuple[float, float, float]:
        """Connection-table misses over the shown instances: SYN/s (new connections),
        non-SYN/s (flows whose state was lost), and the longest time any instance's
        non-SYN misses have stayed above zero."""
        shown = self.shown()
        return (sum(i.syn[-1] for i in shown if i.syn),
                sum(i.non_syn[-1] for i in shown if i.non_syn),
                max((i.lost_state_for() for i in shown), default=0.0))

    def queue_rows(self) -> list[QueueRow]:
        rows = []
        for inst in self.shown():
            qs = inst.snap["queues"]
            hot = hot_queues(qs)
            for i, pps in enumerate(qs):
                hist = tuple(inst.queues[i]) if i < len(inst.queues) else ()
                rows.append(QueueRow(inst.name, i, pps, hist, i in hot))
        return rows

    def vips(self) -> list[VipRef]:
        out = []
        for inst in self.shown():
            for v in inst.snap["vips"]:
                out.append(VipRef(inst.name, v["name"], v["vip"], v["healthy"], v["total"],
                                  v["pps"], v.get("panic", False), v.get("mode", "dsr")))
        return out

    def modes(self) -> VipModes:
        """The shown VIPs' traffic by forwarding mode, summed."""
        out = VipModes(**NO_MODES)
        for inst in self.shown():
            for v in inst.snap["vips"]:
                m = vip_modes(v)
                out["dsr_pps"] += m["dsr_pps"]
                out["snat_pps"] += m["snat_pps"]
                out["reply_pps"] += m["reply_pps"]
                out["translations_per_s"] += m["translations_per_s"]
                out["no_port"] += m["no_port"]
        return out

    def vip_doc(self, ref: VipRef) -> Vip | None:
        inst = self.instances.get(ref.instance)
        if inst is None:
            return None
        for v in inst.snap["vips"]:
            if v["name"] == ref.name:
                return v
        return None

    def backend_rows(self, ref: VipRef) -> list[BackendRow]:
        doc = self.vip_doc(ref)
        return backend_rows(doc["backends"]) if doc else []

    def reasons(self) -> list[tuple[str, float, int, list[float]]]:
        """(reason, rate, total, history) over the shown instances."""
        rates: dict[str, float] = {}
        totals: dict[str, int] = {}
        hist: dict[str, list[float]] = {}
        for inst in self.shown():
            for label, rate in inst.snap["reasons"].items():
                rates[label] = rates.get(label, 0.0) + rate
                totals[label] = totals.get(label, 0) + inst.snap["reason_totals"].get(label, 0)
                hist[label] = _add_aligned(hist.get(label, []),
                                           list(inst.reasons.get(label, ())))
        return [(k, rates[k], totals[k], hist[k]) for k in rates]

    # -- the kernel around the load balancer (the probes) -----------------------------
    def probes(self) -> list[tuple[str, Probe]]:
        """(instance, probe) for every probe of the shown instances, in listing order."""
        return [(inst.name, p) for inst in self.shown() for p in inst.snap["kernel"]["probes"]]

    def kernel_drops(self) -> list[KernelDropRow]:
        """Kernel drop reasons summed over the shown instances, busiest first."""
        acc: dict[str, list[Any]] = {}
        for inst in self.shown():
            for d in inst.snap["kernel"]["drops"]:
                row = acc.setdefault(d["reason"], [0.0, 0, 0, [], []])
                row[0] += d["per_s"]
                row[1] += d["total"]
                row[2] += d["lb_total"]
                row[3] = _add_aligned(row[3], list(inst.kernel_drops.get(d["reason"], ())))
                row[4].extend(d["examples"])
        rows = [KernelDropRow(r, v[0], v[1], v[2], tuple(v[3]),
                              tuple(sorted(v[4], key=lambda p: -p["time"])))
                for r, v in acc.items()]
        return sorted(rows, key=lambda r: (-r.per_s, -r.total, r.reason))

    def xdp_errors(self) -> list[tuple[str, XdpError]]:
        return [(inst.name, e) for inst in self.shown() for e in inst.snap["kernel"]["xdp_errors"]]

    def probe_attached(self, name: str) -> bool:
        """Is probe `name` attached on every shown instance (and is there one)?"""
        states = [p["state"] for _, p in self.probes() if p["name"] == name]
        return bool(states) and all(s == "attached" for s in states)


def vip_modes(v: Vip) -> VipModes:
    """A VIP's traffic by forwarding mode (an agent from before the modes sends none: all
    of it was DSR)."""
    return v.get("modes") or VipModes(**{**NO_MODES, "dsr_pps": v["pps"]})


def napi_exhaustion(snap: Snapshot) -> list[float]:
    """Budget-exhausted share per RX queue of the LB interface, from the napi probe.

    The kernel reports NAPI per device, NAPI id and CPU, not per queue: the LB
    interface's NAPI ids, in id order, are taken as its queues 0, 1, ... (drivers
    hand them out in queue order); per id the worst CPU counts. Empty when the probe
    does not run or the interface has no NAPI entries.
    """
    worst: dict[int, float] = {}
    for n in snap["kernel"]["napi"]:
        if n["device"] == snap["interface"]:
            worst[n["napi_id"]] = max(worst.get(n["napi_id"], 0.0), n["budget_exhausted"])
    return [worst[i] for i in sorted(worst)]


def softirq_percent(snap: Snapshot) -> tuple[list[float], str]:
    """NET_RX softirq % per CPU and where it comes from: the softirq probe when it runs
    (NET_RX only), else psutil's softirq figure (every softirq, not just NET_RX)."""
    probe = snap["kernel"]["softirq"]
    if probe:
        by_cpu = {c["cpu"]: c["percent"] for c in probe}
        return [by_cpu.get(i, 0.0) for i in range(max(len(snap["cpus"]), max(by_cpu) + 1))], (
            "NET_RX")
    return [c["softirq"] for c in snap["cpus"]], "psutil"


def _add_aligned(a: list[float], b: list[float]) -> list[float]:
    """Element-wise sum of two histories aligned at their newest end."""
    n = max(len(a), len(b))
    out = [0.0] * n
    for s in (a, b):
        for i, v in enumerate(s):
            out[n - len(s) + i] += v
    return out


def hot_queues(qs: list[float]) -> set[int]:
    """Queues carrying much more than their share: > HOT_FACTOR x the mean of all queues.

    With a single queue nothing is "hot" (there is nothing to compare with).
    """
    if len(qs) < 2:
        return set()
    mean = sum(qs) / len(qs)
    if mean <= 0:
        return set()
    return {i for i, x in enumerate(qs) if x > HOT_FACTOR * mean}


def backend_rows(backends: list[Backend]) -> list[BackendRow]:
    """The rows of the Backends table: the agent's figures and the observed shares."""
    new_total = sum(b["new_connections_per_s"] for b in backends)
    pkt_total = sum(b["pps"] for b in backends)
    return [BackendRow(
        address=b["address"], weight=b["weight"], state=b["state"], health=b["health"],
        ring_share=b["ring_share"],
        conn_share=b["new_connections_per_s"] / new_total if new_total else 0.0,
        packet_share=b["pps"] / pkt_total if pkt_total else 0.0,
        active_connections=b["active_connections"],
        new_connections_per_s=b["new_connections_per_s"], pps=b["pps"], changed=b["changed"])
        for b in backends]


@lru_cache(maxsize=65536)
def _addr_key(address: str) -> tuple[int, ...]:
    try:
        a = ipaddress.ip_address(address)
        return (a.version, int(a))
    except ValueError:
        return (9, 0)


SORT_KEYS: dict[str, Any] = {
    "address": lambda r: _addr_key(r.address),
    "weight": lambda r: -r.weight,
    "state": lambda r: r.state,
    "ring share": lambda r: -r.ring_share,
    "conn share": lambda r: -r.conn_share,
    "active": lambda r: -r.active_connections,
    "new/s": lambda r: -r.new_connections_per_s,
}


def sort_and_filter(rows: list[BackendRow], sort: str, text: str) -> list[BackendRow]:
    """The Backends table's rows: filtered by a substring of address/state/health, sorted."""
    text = text.strip().lower()
    if text:
        rows = [r for r in rows if text in r.address.lower() or text in r.state
                or text in r.health.lower()]
    return sorted(rows, key=SORT_KEYS.get(sort, SORT_KEYS["address"]))
