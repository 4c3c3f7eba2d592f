"""The trace session's data plane (xlb/agent/trace.py's `Source`): the filter turned into
the data plane's trace setting, the ring buffer's records turned into protocol events,
and kernel drops of traced flows (the drops probe's examples) turned into events too.

VIP names and backend addresses are resolved to the ids the agent last applied, and back
again for each event, so a filter says `vip web` and an event says `web`. The setting is
written under the agent's lock, like every other write of the control map.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xlb.api import protocol as P
from xlb.dataplane.config import vip_label
from xlb.errors import InvalidParams
from xlb.trace.filter import Filter, parse

if TYPE_CHECKING:
    from xlb.agent.core import Agent

log = logging.getLogger(__name__)

KERNEL_SLACK = 0.002  # s: a kernel example no later than the last one seen is not new


class DataplaneSource:
    def __init__(self, agent: Agent):
        self.agent = agent
        self.filter: Filter | None = None     # the running trace's (kernel drops match it)
        self.started = 0.0
        self.reader: Any = None
        self._kernel_seen: dict[str, float] = {}  # drop reason -> newest example taken
        self._names: tuple[Any, dict[int, str], dict[int, str]] = (None, {}, {})

    # -- Source ----------------------------------------------------------------------------
    def compile(self, text: str) -> tuple[str, int, Any]:
        flt = parse(text)  # FilterError (an InvalidParams) points at the word
        a = self.agent
        with a.lock:
            vip_id = backend_id = None
            if flt.vip is not None:
                labels = {v.name: vip_label(v.address, v.port, v.protocol)
                          for v in a.desired.vips}
                if flt.vip not in labels or labels[flt.vip] not in a.vip_ids:
                    raise InvalidParams(f"bad filter: no VIP named {flt.vip!r}; the VIPs are "
                                        f"{', '.join(sorted(labels)) or 'none'}")
                vip_id = a.vip_ids[labels[flt.vip]]
            if flt.backend is not None:
                if str(flt.backend) not in a.backend_ids:
                    raise InvalidParams(f"bad filter: backend {flt.backend} is in no VIP")
                backend_id = a.backend_ids[str(flt.backend)]
        return str(flt), flt.sample, (flt, trace_config(flt, vip_id, backend_id))

    def start(self, compiled: Any) -> None:
        flt, cfg = compiled
        dp = self._dp()
        if self.reader is None:
            self.reader = open_reader(self.agent)
        with self.agent.lock:
            dp.set_trace(cfg)
        self.filter, self.started = flt, time.time()
        self._kernel_seen = {}

    def stop(self) -> None:
        dp = self._dp()
        with self.agent.lock:
            dp.set_trace(off())
        self.filter = None

    def left_on(self) -> bool:
        return is_on(self._dp().trace_config())

    def poll(self, timeout: float, max_events: int) -> list[P.TraceEvent]:
        if self.reader is None:
            time.sleep(timeout)
            return []
        records = self.reader.poll(timeout, max_events)
        if not records:
            return []
        vips, backends = self._lookup()
        offset = time.time() - time.monotonic()
        return [decode(r, vips, backends, self._interface, offset) for r in records]

    def lost(self) -> int:
        return int(self.reader.lost()) if self.reader is not None else 0

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    # -- kernel drops --------------------------------------------------------------------------
    def kernel_events(self, kernel: P.Kernel) -> list[P.TraceEvent]:
        """The drops probe's examples that are new since the last tick, from after the
        trace started, of flows the filter matches (either way: a dropped reply too)."""
        flt = self.filter
        if flt is None:
            return []
        vips: dict[tuple[str, int, str], str] = {
            (str(v.address), v.port, v.protocol): v.name for v in self.agent.desired.vips}
        out: list[P.TraceEvent] = []
        for drop in kernel["drops"]:
            seen = self._kernel_seen.get(drop["reason"], self.started)
            newest = seen
            for p in drop["examples"]:
                if p["time"] <= seen + KERNEL_SLACK:
                    continue
                newest = max(newest, p["time"])
                ev = kernel_event(p, drop["reason"], vips)
                if flt.matches(ev) or flt.matches(turned(ev)):
                    out.append(ev)
            self._kernel_seen[drop["reason"]] = newest
        out.sort(key=lambda e: e["time"])
        return out

    # -- names ---------------------------------------------------------------------------------
    def _dp(self) -> Any:
        if self.agent.dp is None:
            raise InvalidParams("the data plane is not loaded yet")
        return self.agent.dp

    def _lookup(self) -> tuple[dict[int, str], dict[int, str]]:
        """VIP id -> name and backend id -> address, as last applied (worked out again
        only when the agent applied a new layout)."""
        a = self.agent
        key = (a.vip_ids, a.backend_ids, a.desired)
        if self._names[0] != key:
            labels = {vip_label(v.address, v.port, v.protocol): v.name for v in a.desired.vips}
            vips = {i: labels.get(label, label) for label, i in a.vip_ids.items()}
            self._names = (key, vips, {i: addr for addr, i in a.backend_ids.items()})
        return self._names[1], self._names[2]

    def _interface(self, ifindex: int) -> str:
        return str(self.agent.load_result.get("interface") or f"ifindex {ifindex}")


def kernel_event(p: P.Packet, reason: str,
                 vips: dict[tuple[str, int, str], str]) -> P.TraceEvent:
    """A kernel drop example as a trace event (source "kernel")."""
    vip = (vips.get((p["dst"], p["dport"], p["protocol"]))
           or vips.get((p["dst"], 0, p["protocol"])))
    return {"source": "kernel", "time": p["time"], "cpu": -1, "queue": -1, "interface": "",
            "protocol": p["protocol"], "src": p["src"], "sport": p["sport"], "dst": p["dst"],
            "dport": p["dport"], "vip": vip, "backend": None, "path": "none",
            "action": "DROP", "reason": reason, "length": 0, "outer_src": None}


def turned(ev: P.TraceEvent) -> P.TraceEvent:
    """The event's flow the other way round (a reply's, for matching)."""
    return {**ev, "src": ev["dst"], "sport": ev["dport"], "dst": ev["src"],
            "dport": ev["sport"]}


# -- the data plane's side (xlb/dataplane/trace.py) -------------------------------------------
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17}
PROTOCOL_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


def trace_config(flt: Filter, vip_id: int | None, backend_id: int | None) -> Any:
    """The data plane's trace setting for a filter (ids resolved by the caller)."""
    from xlb.dataplane.trace import filter_config

    return filter_config(src=flt.src, dst=flt.dst, host=flt.host, sport=flt.sport,
                         dport=flt.dport, port=flt.port,
                         proto=PROTOCOL_NUMBERS[flt.proto] if flt.proto else None,
                         vip_id=vip_id, backend_id=backend_id, sample=flt.sample)


def off() -> Any:
    from xlb.dataplane import structs as S

    return S.TraceConfig(mode=S.XLB_TRACE_OFF)


def is_on(cfg: Any) -> bool:
    from xlb.dataplane import structs as S

    return bool(cfg.mode == S.XLB_TRACE_ON)


def open_reader(agent: Agent) -> Any:
    import os

    from xlb.dataplane.trace import TraceReader

    assert agent.dp is not None
    return TraceReader(agent.name, os.path.dirname(agent.dp.maps.dir))


def decode(r: Any, vips: dict[int, str], backends: dict[int, str],
           interface: Callable[[int], str], offset: float) -> P.TraceEvent:
    """A TraceRecord of the ring as a protocol event; `offset`: Unix time minus
    CLOCK_MONOTONIC (the data plane's clock)."""
    from xlb.dataplane import structs as S

    return {"source": "xdp", "time": round(r.time_ns / 1e9 + offset, 6), "cpu": r.cpu,
            "queue": r.queue, "interface": interface(r.ifindex),
            "protocol": PROTOCOL_NAMES.get(r.proto, str(r.proto)),
            "src": str(r.src) if r.src is not None else "", "sport": r.sport,
            "dst": str(r.dst) if r.dst is not None else "", "dport": r.dport,
            "vip": None if r.vip_id is None else vips.get(r.vip_id, f"vip {r.vip_id}"),
            "backend": (None if r.backend_id is None
                        else backends.get(r.backend_id, f"backend {r.backend_id}")),
            "path": r.path.label, "action": S.XDP_ACTIONS[r.action].upper()
            if r.action < len(S.XDP_ACTIONS) else str(r.action),
            "reason": r.reason.label, "length": r.length,
            "outer_src": str(r.outer_src) if r.outer_src is not None else None}
