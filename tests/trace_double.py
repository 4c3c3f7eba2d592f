"""The flow trace and `explain` of AgentDouble (tests/agent_double.py): a TEST DOUBLE.

Synthetic, deterministic events of the protocol's shapes (TraceEvent,
TraceStatus, TraceBatch, Explain; tests check they conform) at a chosen rate,
filtered by the real filter language (xlb.trace.filter, so a bad filter is
refused with the agent's own words), batched every BATCH seconds for each
watcher with an optional per-watcher forwarding cap whose excess is counted
as skipped, like the agent's. Only tests and bench/ use it.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import deque
from typing import Any, cast

from xlb.api import protocol as P
from xlb.trace.filter import Filter, parse

BATCH = 0.1          # seconds between two batches to a watcher
HISTORY = 1000       # events kept for trace_subscribe's and trace_events' history
FROZEN_EVENTS = 12   # the frozen double's canned history


def _host(ep: str) -> tuple[str, int, str]:
    """"198.19.0.10:80/tcp" or "[fd00::10]:80/tcp" -> (address, port, protocol)."""
    where, proto = ep.rsplit("/", 1)
    addr, port = where.rsplit(":", 1)
    return addr.strip("[]"), int(port), proto


def _ep(addr: str, port: int | None) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port}" if port else host


def _serving(vip: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in vip["backends"] if b["state"] == "active" and b["weight"] > 0]


def _pick(vip: dict[str, Any], src: str, sport: int, dst: str, dport: int,
          proto: str) -> tuple[int, str | None]:
    """The double's "data plane" choice for a flow: (hash, backend address or None)."""
    h = zlib.crc32(f"{_ep(src, sport)} -> {_ep(dst, dport)}/{proto}".encode())
    serving = _serving(vip)
    return h, serving[h % len(serving)]["address"] if serving else None


class TraceDouble:
    """The one trace of the double's instance, and its watchers' batches."""

    def __init__(self, vips: list[dict[str, Any]], frozen: bool, started: float):
        self.vips, self.frozen, self.t0 = vips, frozen, started
        self.lock = threading.Lock()
        self.rate = 50.0              # events/s the "data plane" writes while tracing
        self.forward_rate = 0         # events/s at most per watcher (0: all)
        self.lost_per_s = 0.0         # events/s the "ring buffer" loses
        self.filter: Filter = parse("")
        self.status: dict[str, Any] = {
            "running": False, "filter": "", "sample": 1, "started": 0.0, "expires": 0.0,
            "by": "", "events": 0, "lost": 0, "skipped": 0, "per_s": 0.0, "history": 0}
        self.history: deque[P.TraceEvent] = deque(maxlen=HISTORY)
        self.n = 0                    # events made so far (the next one's number)
        self.kept = 0                 # of them, kept (matched the filter, sampled)
        self._made = time.monotonic()
        self._lost = 0.0
        if frozen:
            self.start("dport 80", 300, "tester")
            for _ in range(FROZEN_EVENTS):
                self._make_one(self.t0 + 0.137 * self.n)

    # -- the API -------------------------------------------------------------------------
    def start(self, text: str, seconds: int, user: str) -> P.TraceStatus:
        f = parse(text)  # FilterError (invalid params) on a bad one: nothing changes
        with self.lock:
            now = time.time()
            if not self.status["running"]:
                self.status.update(started=now, events=0, lost=0, skipped=0)
            self.filter = f
            self.status.update(running=True, filter=str(f), sample=f.sample, by=user,
                               expires=now + seconds)
            self._made = time.monotonic()
            return self.current()

    def stop(self) -> P.TraceStatus:
        with self.lock:
            self.status.update(running=False, expires=0.0, per_s=0.0)
            return self.current()

    def current(self) -> P.TraceStatus:
        status = dict(self.status)
        if self.frozen and status["running"]:
            status["expires"] = time.time() + 270  # "stops in 4m" in every picture
            status["per_s"] = 42.0
        if status["running"] and not self.frozen and time.time() > status["expires"]:
            self.status.update(running=False, expires=0.0, per_s=0.0)
            status = dict(self.status)
        status["history"] = len(self.history)
        return cast(P.TraceStatus, status)

    def events(self, n: int) -> list[P.TraceEvent]:
        with self.lock:
            return list(self.history)[-n:] if n else []

    # -- the watchers' batches -------------------------------------------------------------
    def produce(self) -> None:
        """Make the events due since the last call (rate, filter, sample), into history."""
        with self.lock:
            now = time.monotonic()
            due = int((now - self._made) * self.rate) if (
                self.status["running"] and not self.frozen) else 0
            if due <= 0 and self.status["running"]:
                return
            span = now - self._made
            self._made = now
            wall = time.time()
            kept = 0
            for i in range(due):
                ev = self._event(self.n, wall - span + span * i / max(due, 1))
                self.n += 1
                if self.filter.matches(ev) and (self.n % self.filter.sample == 0):
                    self.history.append(ev)
                    kept += 1
            self.kept += kept
            self._lost += self.lost_per_s * span
            self.status["events"] += kept
            self.status["lost"] = int(self._lost)
            self.status["per_s"] = round(kept / span, 1) if span > 0 else 0.0

    def batch(self, seen: int, span: float) -> tuple[P.TraceBatch, int]:
        """For a watcher that has had the first `seen` events ever kept: the newer ones, at
        most the forwarding cap for `span` seconds, the rest counted as skipped; and the
        new `seen`."""
        with self.lock:
            fresh = self.kept - seen
            take = min(fresh, len(self.history))
            if self.forward_rate:
                take = min(take, int(self.forward_rate * span))
            events = list(self.history)[-take:] if take else []
            skipped = fresh - len(events)
            self.status["skipped"] += skipped
            return {"events": events, "skipped": skipped, "status": self.current()}, self.kept

    def subscribe_batch(self, history: int) -> tuple[P.TraceBatch, int]:
        """A new watcher's first batch: the recent history, nothing skipped."""
        with self.lock:
            events = list(self.history)[-history:] if history else []
            return {"events": events, "skipped": 0, "status": self.current()}, self.kept

    # -- synthetic events --------------------------------------------------------------------
    def _make_one(self, t: float) -> None:
        self.history.append(self._event(self.n, t))
        self.n += 1
        self.kept += 1
        self.status["events"] += 1

    def _event(self, i: int, t: float) -> P.TraceEvent:
        """Event number i: a handful of clients on the VIPs, mostly established flows, a
        SYN now and then, a drained backend's re-pick, a drop, a pass, a kernel drop."""
        v = self.vips[i % len(self.vips)]
        dst, dport, proto = _host(v["vip"])
        src, sport = f"198.18.0.{10 + i % 7}", 40000 + (i * 7) % 2000
        backend: str | None = _pick(v, src, sport, dst, dport, proto)[1]
        path: P.TracePath = ("maglev_syn" if i % 10 == 0 else "maglev_stale" if i % 37 == 0
                             else "conn")
        if proto == "udp":
            path = "maglev" if i % 10 == 0 else "conn"
        reason, action, source = "tx_encap", "TX", "xdp"
        if i % 50 == 49:
            reason, action, path, backend = "drop_no_backend", "DROP", "none", None
        elif i % 97 == 96:
            reason, action, path, source, backend = "NO_SOCKET", "DROP", "none", "kernel", None
        ev: P.TraceEvent = {
            "source": source,  # type: ignore[typeddict-item]
            "time": round(t, 6), "cpu": i % 2, "queue": -1 if source == "kernel" else i % 4,
            "interface": "veth-lb1", "protocol": proto, "src": src,
            "sport": sport, "dst": dst, "dport": dport, "vip": v["name"],
            "backend": backend, "path": path, "action": action, "reason": reason,
            "length": 60 + (i * 13) % 1400,
            "outer_src": f"10.1.0.{1 + i % 200}" if action == "TX" else None}
        return ev

    # -- explain ---------------------------------------------------------------------------
    def explain(self, src: str, sport: int | None, dst: str, dport: int, protocol: str,
                syn: bool) -> P.Explain:
        """What the double's "data plane" would do: the VIP, a connection entry for one
        flow in three, else Maglev over the serving backends, by a CRC32 of the 5-tuple."""
        flow = f"{_ep(src, sport)} -> {_ep(dst, dport)}/{protocol}"
        steps: list[P.ExplainStep] = []
        vip = next((v for v in self.vips if _host(v["vip"])[0] == dst
                    and _host(v["vip"])[1:] == (dport, protocol)), None)
        out: dict[str, Any] = {"flow": flow, "vip": None, "backend": None, "path": "none",
                          "reason": "pass_not_vip", "action": "PASS", "hash": None,
                          "slot": None, "outer_src": None, "connection_age": None,
                          "steps": steps}
        if vip is None:
            steps.append({"step": "vip", "text": f"{dst} port {dport}/{protocol} is not a "
                          "VIP: the packet passes to the host"})
            steps.append({"step": "verdict", "text": "PASS (pass_not_vip)"})
            return cast(P.Explain, out)
        out["vip"] = vip["name"]
        steps.append({"step": "vip", "text": f"{dst} is a VIP address"})
        steps.append({"step": "service", "text": f"VIP {vip['name']} ({vip['vip']})"})
        h, address = _pick(vip, src, sport or 0, dst, dport, protocol)
        serving = _serving(vip)
        if address is None:
            steps.append({"step": "verdict", "text": "DROP (drop_no_backend)"})
            out.update(reason="drop_no_backend", action="DROP")
            return cast(P.Explain, out)
        out.update(hash=h, reason="tx_encap", action="TX")
        if sport is None:
            steps.append({"step": "maglev", "text": "no source port: each backend gets its "
                          "table share of the source ports"})
            weights = sum(b["weight"] for b in serving)
            out["shares"] = {b["address"]: b["weight"] / weights for b in serving}
            return cast(P.Explain, out)
        b = next(b for b in serving if b["address"] == address)
        if not syn and h % 3 == 0:
            out.update(path="conn", connection_age=2.5, backend=b["address"])
            steps.append({"step": "connection", "text": f"entry: backend {b['address']}, "
                          "last packet 2.5 s ago"})
        else:
            out.update(path="maglev_syn" if syn else "maglev", slot=h % 65537,
                       backend=b["address"])
            steps.append({"step": "connection", "text": "no entry" + (
                " looked up: a SYN always asks Maglev" if syn else "")})
            steps.append({"step": "hash", "text": f"flow hash {h:#010x}"})
            steps.append({"step": "maglev", "text": f"slot {h % 65537} of 65537"})
        steps.append({"step": "backend", "text": f"{b['address']} ({b['state']}, weight "
                      f"{b['weight']})"})
        out["outer_src"] = f"10.1.0.{1 + h % 200}"
        steps.append({"step": "encap", "text": f"IP-in-IP from {out['outer_src']} to "
                      f"{b['address']}"})
        steps.append({"step": "verdict", "text": "TX (tx_encap)"})
        return cast(P.Explain, out)
