"""AgentDouble: a TEST DOUBLE of the xlb agent, for console tests and the console bench.

It speaks the agent's real protocol (JSON-RPC 2.0 lines on a Unix socket:
status, subscribe with snapshot/event notifications, drain/undrain/weight
with the last-healthy-backend refusal, the forwarding mode of a VIP (dsr | snat, refused
without a pool) and the XDP mode (refused to native where the driver has none), audit,
probes, the flow trace with its
"trace" notifications and explain: tests/trace_double.py) with synthetic, deterministic
figures, so the console is driven through exactly the code it uses against a
real agent. Methods, parameters, error codes, reasons and answer shapes come
from xlb.api.protocol, the one schema (a test checks its snapshots conform), so
the double cannot drift from the agent. It is never a data source of the
product: only tests and bench/ use it.
"""

from __future__ import annotations

import json
import math
import os
import select
import socketserver
import threading
import time
from typing import Any

from tests.bgp_double import BgpDouble
from tests.trace_double import BATCH, TraceDouble
from xlb.api import protocol as P
from xlb.errors import ErrorCode, InvalidParams, ReadOnlyError, RefusedError, XlbError

ANSWERED = ("status", "subscribe", "drain", "undrain", "weight", "audit", "probes",
            "probe_attach", "probe_detach", "trace_start", "trace_stop", "trace_status",
            "trace_subscribe", "trace_events", "explain", "bgp", "bgp_withdraw",
            "bgp_announce", "mode", "xdp_mode")  # the rest: NO_METHOD
HEARTBEAT = 1.0   # a trace watcher hears at least this often, events or not


class AgentDouble:
    def __init__(self, path: str, instance: str = "lb1", backends: int = 3, vips: int = 2,
                 queues: int = 4, cpus: int = 2, operator: bool = True, frozen: bool = False,
                 tick: float = 0.2, hot_queue: int | None = 1, bgp: bool = True,
                 snat_pool_v4: str | None = "198.19.1.0/28",
                 snat_pool_v6: str | None = "fd00:5f1b:19:1::/124",
                 xdp_mode: P.XdpMode = "native", xdp_native: bool | None = True):
        self.path, self.instance, self.operator, self.frozen, self.tick = (
            path, instance, operator, frozen, tick)
        self.n_queues, self.n_cpus, self.hot_queue = queues, cpus, hot_queue
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.snat: P.Snat = {"pool_v4": snat_pool_v4, "pool_v6": snat_pool_v6,
                             "port_min": 1024, "port_max": 65535, "table_size": 65536}
        self.xdp_mode: P.XdpMode = xdp_mode
        self.xdp_native = xdp_native  # False: the driver has no native XDP (refused)
        self.alarms: list[P.Alarm] = []  # what the snapshots say is wrong underneath
        self.non_syn_misses = 0.0  # TCP non-SYN connection-table misses per second
        self.audit: list[dict[str, Any]] = []
        # probe name -> state, as on this kernel: tcp falls back, no probe is off by default
        self.probe_states: dict[str, P.ProbeState] = {n: "attached" for n in P.PROBES}
        self.lock = threading.Lock()
        self.n = 0
        self.started = 1_700_000_000.0
        self.vips: list[dict[str, Any]] = []
        for v in range(vips):
            self.vips.append({
                "name": ["web", "dns", "api", "img"][v % 4] + (str(v // 4) if v >= 4 else ""),
                "vip": f"198.19.0.{10 + v}:{[80, 53, 443, 8080][v % 4]}/"
                       f"{'udp' if v % 4 == 1 else 'tcp'}",
                "mode": "dsr",  # knobs: "snat_share" (of its pps; default all or
                # nothing by mode), "no_port" (SNAT drops for want of a port, ever)
                "backends": [{"address": _backend_address(b), "weight": 1 + (b % 3 == 2),
                              "state": "active", "health": "up"} for b in range(backends)]})
        self.tracer = TraceDouble(self.vips, frozen, self.started)
        self.bgp = BgpDouble(self.vips, instance, frozen, self.started, enabled=bgp)
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- life ------------------------------------------------------------------------------
    def start(self) -> AgentDouble:
        if os.path.exists(self.path):
            os.unlink(self.path)
        double = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                double._serve(self)

        server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        server.daemon_threads = True
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go away like a killed agent: the socket disappears, connections drop."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if os.path.exists(self.path):
            os.unlink(self.path)

    # -- protocol ----------------------------------------------------------------------------
    def _serve(self, h: socketserver.StreamRequestHandler) -> None:
        """One connection: answers, then snapshots every tick once subscribed, and trace
        batches every BATCH (at least every HEARTBEAT) once it watches the trace."""
        subscribed = False
        watching: int | None = None   # events of the trace this connection has had
        sock, buf = h.connection, b""
        next_snap = next_batch = last_batch = time.monotonic()
        while not self._stopping.is_set():
            due = [t for t, on in ((next_snap, subscribed), (next_batch, watching is not None))
                   if on]
            wait = max(min(due) - time.monotonic(), 0.0) if due else self.tick
            ready, _, _ = select.select([sock], [], [], wait)
            if ready:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply, name, params = self._handle(line)
                if not _send(h, reply):
                    return
                if name == "subscribe":
                    subscribed, next_snap = True, time.monotonic()
                elif name == "trace_subscribe":
                    first, watching = self.tracer.subscribe_batch(params["history"])
                    if not _send(h, _notification("trace", first)):
                        return
                    next_batch = last_batch = time.monotonic() + BATCH
            now = time.monotonic()
            if subscribed and now >= next_snap:
                next_snap = now + self.tick
                if not _send(h, _notification("snapshot", self.snapshot())):
                    return
            if watching is not None and now >= next_batch:
                self.tracer.produce()
                batch, watching = self.tracer.batch(watching, now - next_batch + BATCH)
                next_batch = now + BATCH
                if batch["events"] or batch["skipped"] or now - last_batch >= HEARTBEAT:
                    last_batch = now
                    if not _send(h, _notification("trace", batch)):
                        return

    def _handle(self, line: bytes) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
        """The answer to one request line; the method's name and checked parameters when
        it succeeded (None and {} otherwise)."""
        req = json.loads(line)
        name, rid = req["method"], req.get("id")
        with self.lock:
            self.calls.append((name, req.get("params", {})))
        method = P.METHODS.get(name)
        if method is None or name not in ANSWERED:
            return _error(rid, ErrorCode.NO_METHOD, f"unknown method {name!r}"), None, {}
        try:
            params = method.check(req.get("params", {}))
            if method.operator and not self.operator:
                raise ReadOnlyError("tester (uid 1000) is read-only")
            result = self._answer(name, params)
        except XlbError as e:
            return _error(rid, e.rpc_code, str(e)), None, {}
        return {"jsonrpc": P.JSONRPC, "id": rid, "result": result}, name, params

    def _answer(self, name: str, params: dict[str, Any]) -> Any:
        if name == "status":
            status: P.Status = {**self.snapshot(),
                                "caller": {"user": "tester", "operator": self.operator}}
            return status
        if name == "subscribe":
            return P.Subscribed(subscribed=True, tick=self.tick)
        if name == "audit":
            with self.lock:
                return self.audit[-params["n"]:]
        if name == "probes":
            return self.probes()
        if name in ("probe_attach", "probe_detach"):
            return self._probe_change(name, params["name"])
        if name.startswith("trace_") or name == "explain":
            return self._trace(name, params)
        if name == "bgp":
            with self.lock:
                return self.bgp.status()
        if name.startswith("bgp_"):
            return self._bgp_change(name, params)
        if name == "xdp_mode":
            return self._xdp_mode(params["mode"])
        change = self._mode(params) if name == "mode" else self._change(name, params)
        with self.lock:
            self.audit.append({"time": time.time(), "uid": 1000, "user": "tester",
                               "action": name, "params": params, "before": change["before"],
                               "after": change["after"], "result": "ok"})
        return change

    def _trace(self, name: str, params: dict[str, Any]) -> Any:
        t = self.tracer
        if name == "trace_start":
            return t.start(params["filter"], params["seconds"] or P.DEFAULT_TRACE_SECONDS,
                           "tester")
        if name == "trace_stop":
            return t.stop()
        if name == "trace_events":
            return t.events(params["n"])
        if name == "explain":
            return t.explain(params["src"], params.get("sport"), params["dst"],
                             params["dport"], params["protocol"], params["syn"])
        with t.lock:  # trace_status, trace_subscribe
            return t.current()

    def _change(self, method: str, p: dict[str, Any]) -> P.ChangeResult:
        with self.lock:
            vip = next((v for v in self.vips if v["name"] == p.get("vip")), None)
            if vip is None:
                raise RefusedError(f"backend {p.get('address')} is not in VIP {p.get('vip')!r}")
            b = next((b for b in vip["backends"] if b["address"] == p.get("address")), None)
            if b is None:
                raise RefusedError(f"backend {p.get('address')} is not in VIP {vip['name']!r}")
            new = dict(b)
            if method == "drain":
                new["state"] = "drained"
            elif method == "undrain":
                new["state"] = "active"
            else:
                w = p.get("weight")
                if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 65535:
                    raise InvalidParams("parameter 'weight' must be 0..65535")
                new["weight"] = w
            others = [x for x in vip["backends"] if x is not b and _serving(x)]
            if _serving(b) and not _serving(new) and not others and not p.get("force"):
                raise RefusedError(f"{method} {b['address']} would leave VIP {vip['name']} "
                                   "without a healthy backend: refused (use --force to do it "
                                   "anyway)")
            before = _configured(b)
            b.update(new)
            b["changed"] = time.time()
            return {"vips": [vip["name"]], "before": {vip["name"]: before},
                    "after": {vip["name"]: _configured(b)}}

    def _mode(self, p: dict[str, Any]) -> P.ChangeResult:
        """A VIP's forwarding mode, refused as the agent's config rules do (no pool of the
        VIP's family); the answer and the audit show the VIP's table before and after."""
        with self.lock:
            vip = next((v for v in self.vips if v["name"] == p["vip"]), None)
            if vip is None:
                raise RefusedError(f"no VIP named {p['vip']!r} (known: "
                                   + ", ".join(repr(v["name"]) for v in self.vips) + ")")
            family = 6 if vip["vip"].startswith("[") else 4
            pool = self.snat["pool_v4"] if family == 4 else self.snat["pool_v6"]
            if p["mode"] == "snat" and pool is None:
                raise RefusedError(f"VIP {vip['name']} cannot use snat: vip[{vip['name']!r}]."
                                   f"mode: snat needs instance.snat_pool_v{family} (an IPv"
                                   f"{family} VIP's backends see an address of that pool)")
            before = _vip_config(vip)
            vip["mode"] = p["mode"]
            return {"vips": [vip["name"]], "before": {vip["name"]: before},
                    "after": {vip["name"]: _vip_config(vip)}}

    def _xdp_mode(self, mode: P.XdpMode) -> P.XdpModeChange:
        """The XDP mode: native refused where the driver has none (nothing changes); the
        same mode again answers with before == after and no gap."""
        with self.lock:
            before = self.xdp_mode
            if mode == "native" and before != "native" and self.xdp_native is False:
                raise RefusedError("native XDP refused: the driver of veth-lb1 has no native "
                                   "XDP (the kernel lists no xdp-features for it); the program "
                                   "stays attached in generic mode")
            gap = 0.0 if mode == before else 0.0042
            self.xdp_mode = mode
            self.audit.append({"time": time.time(), "uid": 1000, "user": "tester",
                               "action": "xdp_mode", "params": {"mode": mode},
                               "before": {"XDP on veth-lb1": {"mode": before}},
                               "after": {"XDP on veth-lb1": {"mode": mode}}, "result": "ok"})
        return {"interface": "veth-lb1", "before": before, "after": mode,
                "gap_seconds": gap}

    def _bgp_change(self, name: str, params: dict[str, Any]) -> P.BgpChange:
        """bgp_withdraw / bgp_announce, audited as the agent does (keyed by prefix, or
        "maintenance" for all)."""
        action = name.removeprefix("bgp_")
        with self.lock:
            before = self.bgp.status()
            change = self.bgp.change("tester", action, params.get("vip"), params["all"])
            key = "maintenance" if params["all"] else change["prefixes"][0]["prefix"]

            def state(doc: P.Bgp) -> dict[str, Any]:
                if params["all"]:
                    return {"maintenance": doc["maintenance"]}
                p = next(p for p in doc["prefixes"] if p["prefix"] == key)
                return {"announced": p["announced"], "cause": p["cause"]}

            self.audit.append({"time": time.time(), "uid": 1000, "user": "tester",
                               "action": name, "params": params, "before": {key: state(before)},
                               "after": {key: state(self.bgp.status())}, "result": "ok"})
        return change

    def _probe_change(self, method: str, probe: str) -> P.ProbeChange:
        want: P.ProbeState = "attached" if method == "probe_attach" else "off"
        with self.lock:
            changed = self.probe_states[probe] != want
            self.probe_states[probe] = want
            self.audit.append({"time": time.time(), "uid": 1000, "user": "tester",
                               "action": method, "params": {"name": probe}, "before": {},
                               "after": {}, "result": "ok"})
        return {"probe": next(p for p in self.probes() if p["name"] == probe),
                "changed": changed}

    def probes(self) -> list[P.Probe]:
        """The probes as this lab kernel has them: no kprobes, so tcp reports its fallback."""
        out: list[P.Probe] = []
        for name in P.PROBES:
            kind, target, doc = PROBE_DOCS[name]
            state = self.probe_states[name]
            on = state == "attached"
            reason = ("kprobe tcp_v4_send_reset unavailable: this kernel has no kprobes (no "
                      "kprobe_events in tracefs); using tracepoint tcp:tcp_send_reset"
                      if name == "tcp" else "")
            out.append({"name": name, "kind": kind, "target": target, "state": state,
                        "reason": reason, "doc": doc, "needs": f"tracefs event {target}",
                        "feeds": f"kernel.{name}", "events_per_s": 120.0 * (1 + len(name))
                        if on else 0.0, "ns_per_run": 85.0 + 10 * len(name) if on else None,
                        "cpu_percent": 0.01 * len(name) if on else None})
        return out

    def kernel(self, n: int, now: float) -> P.Kernel:
        """Realistic probe figures: a few kernel drop reasons with examples, one XDP abort,
        two NAPI instances of the LB interface plus loopback's, NET_RX softirq per CPU."""
        on = self.probe_states
        k = P.empty_kernel()
        k["probes"] = self.probes()
        if on["drops"] == "attached":
            k["drops_since"] = now - 600
            for code, reason, rate in ((2, "NO_SOCKET", 40.0 + n % 5), (5, "TCP_CSUM", 3.0),
                                       (16, "IP_NOPROTO", 0.5)):
                t0 = self.started if self.frozen else now
                ex: list[P.Packet] = [{"time": t0 - i, "protocol": "udp",
                                       "src": f"10.0.0.{i + 2}", "sport": 40000 + i,
                                       "dst": "198.19.0.11", "dport": 9999}
                                      for i in range(3)]
                k["drops"].append({"reason": reason, "code": code, "per_s": rate,
                                   "total": int(rate * 600), "lb_total": int(rate * 300),
                                   "addresses": {"198.19.0.11": int(rate * 300)},
                                   "examples": ex})
        if on["xdp"] == "attached":
            k["xdp_errors"].append({"kind": "exception", "prog_id": 42, "program": "xlb_lb",
                                    "interface": "veth-lb1", "action": "ABORTED",
                                    "per_s": 0.0, "total": 3})
        if on["napi"] == "attached":
            for i in range(self.n_queues):
                k["napi"].append({"device": "veth-lb1", "napi_id": 8193 + i,
                                  "cpu": i % self.n_cpus, "polls_per_s": 500.0,
                                  "packets_per_poll": 12.0 if i != self.hot_queue else 64.0,
                                  "budget_exhausted": 0.6 if i == self.hot_queue else 0.01,
                                  "polls": 300_000, "packets": 3_600_000, "exhausted": 3000})
            k["napi"].append({"device": "lo", "napi_id": 0, "cpu": 0, "polls_per_s": 2.0,
                              "packets_per_poll": 1.0, "budget_exhausted": 0.0, "polls": 1200,
                              "packets": 1200, "exhausted": 0})
        if on["softirq"] == "attached":
            k["softirq"] = [{"cpu": c, "percent": 8.0 + 4 * c, "runs_per_s": 900.0,
                             "seconds": 48.0 + c} for c in range(self.n_cpus)]
        if on["runtime"] == "attached":
            k["programs"] = [{"id": 42, "name": "xlb_lb", "type": 6, "owner": "xlb",
                              "runs_per_s": 4000.0, "ns_per_run": 180.0, "cpu_percent": 0.07,
                              "runs": 2_400_000, "run_time_ns": 432_000_000}]
        return k

    # -- figures ------------------------------------------------------------------------------
    def backend(self, vip: str, address: str) -> dict[str, Any]:
        with self.lock:
            v = next(v for v in self.vips if v["name"] == vip)
            return dict(next(b for b in v["backends"] if b["address"] == address))

    def snapshot(self) -> P.Snapshot:
        with self.lock:
            if not self.frozen:
                self.n += 1
            n = self.n if not self.frozen else 7
            now = time.time()
            wave = (lambda i: 1.0) if self.frozen else (
                lambda i: 1.0 + 0.3 * math.sin(n / 3.0 + i))
            queues = [round(1000.0 * wave(i) * (3.0 if i == self.hot_queue else 1.0), 1)
                      for i in range(self.n_queues)]
            vips: list[P.Vip] = []
            for v in self.vips:
                rows: list[P.Backend] = []
                live = [b for b in v["backends"] if _serving(b)]
                wsum = sum(b["weight"] for b in live) or 1
                for i, b in enumerate(v["backends"]):
                    share = b["weight"] / wsum if _serving(b) else 0.0
                    state: P.BackendState = "active" if b["state"] == "active" else "drained"
                    rows.append({"address": b["address"], "weight": b["weight"], "state": state,
                                 "health": b["health"], "ring_share": round(share, 6),
                                 "pps": round(800.0 * share * wave(i), 1),
                                 "new_connections_per_s": round(50.0 * share * wave(i + 1), 1),
                                 "active_connections": int(120 * share) + (
                                     3 if state == "drained" else 0),
                                 "changed": b.get("changed", now - 600)})
                pps = round(sum(r["pps"] for r in rows), 1)
                vips.append({"name": v["name"], "vip": v["vip"], "mode": v["mode"],
                             "modes": _modes(v, rows, pps), "backends": rows, "pps": pps,
                             "active_connections": sum(r["active_connections"] for r in rows),
                             "healthy": sum(1 for r in rows if r["health"] == "up"),
                             "total": len(rows), "panic": v.get("panic", False)})
            reasons = {r: 0.0 for r in P.REASONS}
            reasons["tx_encap"] = round(sum(queues) * 0.97, 1)
            reasons["pass_not_vip"] = round(sum(queues) * 0.02, 1)
            reasons["drop_no_backend"] = round(sum(queues) * 0.01, 1)
            totals = {r: int(x * 600) for r, x in reasons.items()}
            totals["drop_fragment"] = 12
            used = sorted({v["mode"] for v in self.vips})
            return {"instance": self.instance, "host": "lab-host",
                    "lb_mode": "+".join(used) if used else "dsr",
                    "time": now, "uptime": 3723.0, "xdp_mode": self.xdp_mode,
                    "xdp_native": self.xdp_native, "snat": P.Snat(**self.snat),
                    "interface": "veth-lb1", "metrics_port": 0,
                    "totals": {"pps": round(sum(queues), 1),
                               "bps": float(round(sum(queues) * 8 * 600)),
                               "drop_pps": reasons["drop_no_backend"]},
                    "queues": queues, "reasons": reasons, "reason_totals": totals,
                    "misses": {"tcp_syn": round(sum(b["new_connections_per_s"] for v in vips
                                                    for b in v["backends"]), 1),
                               "tcp_non_syn": self.non_syn_misses, "udp": 0.0},
                    "cpus": [{"busy": 35.0 + 20 * c, "softirq": 12.0 + 5 * c}
                             for c in range(self.n_cpus)],
                    "vips": vips, "alarms": list(self.alarms), "tick_failures": 0,
                    "kernel": self.kernel(n, now), "bgp": self.bgp.status()}


PROBE_DOCS: dict[str, tuple[str, str, str]] = {
    "drops": ("tracepoint", "skb:kfree_skb", "packets the kernel dropped, by its drop reason"),
    "xdp": ("tracepoint", "xdp:xdp_exception", "XDP programs that aborted or failed a redirect"),
    "napi": ("tracepoint", "napi:napi_poll", "NAPI polls per queue and CPU, budget exhaustion"),
    "softirq": ("tracepoint", "irq:softirq_entry", "% of each CPU spent in NET_RX softirq"),
    "tcp": ("tracepoint", "tcp:tcp_send_reset", "TCP resets and retransmits of this host"),
    "runtime": ("bpf_stats", "BPF_ENABLE_STATS", "run time of every BPF program on the host"),
}


def _serving(b: dict[str, Any]) -> bool:
    return b["state"] == "active" and b["weight"] > 0 and b["health"] == "up"


def _backend_address(i: int) -> str:
    return f"198.18.{2 + i // 250}.{1 + i % 250}"


def _modes(v: dict[str, Any], rows: list[P.Backend], pps: float) -> P.VipModes:
    """Per-mode figures: the VIP's traffic in its mode, unless the test sets "snat_share"
    (after a switch, established flows keep the mode they started in)."""
    snat = round(pps * v.get("snat_share", 1.0 if v["mode"] == "snat" else 0.0), 1)
    new = sum(r["new_connections_per_s"] for r in rows)
    return {"dsr_pps": round(pps - snat, 1), "snat_pps": snat,
            "reply_pps": round(snat * 0.8, 1),
            "translations_per_s": round(new * snat / pps, 1) if pps else 0.0,
            "no_port": v.get("no_port", 0)}


def _vip_config(v: dict[str, Any]) -> P.VipConfig:
    """A VIP as the agent's change answers show it (its [[vip]] table)."""
    addr, _, rest = v["vip"].rpartition(":")
    port, _, protocol = rest.partition("/")
    return {"name": v["name"], "address": addr.strip("[]"), "port": int(port),
            "protocol": protocol, "mode": v["mode"],
            "backend": [_configured(b) for b in v["backends"]]}


def _configured(b: dict[str, Any]) -> P.BackendConfig:
    """A backend as the agent's change answers show it (its [[vip.backend]] table)."""
    return {"address": b["address"], "weight": b["weight"], "state": b["state"]}


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": P.JSONRPC, "id": rid, "error": {"code": int(code), "message": message}}


def _notification(method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": P.JSONRPC, "method": method, "params": params}


def _send(h: socketserver.StreamRequestHandler, msg: dict[str, Any]) -> bool:
    try:
        h.wfile.write(json.dumps(msg).encode() + b"\n")
        h.wfile.flush()
        return True
    except OSError:
        return False


if __name__ == "__main__":  # for a look by hand: python -m tests.agent_double SOCKET [BACKENDS]
    import sys

    d = AgentDouble(sys.argv[1], backends=int(sys.argv[2]) if len(sys.argv) > 2 else 3,
                    tick=1.0).start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        d.stop()
