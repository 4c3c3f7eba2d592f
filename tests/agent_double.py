"""AgentDouble: a TEST DOUBLE of the xlb agent, for console tests and the console bench.

It speaks the agent's real protocol (JSON-RPC 2.0 lines on a Unix socket:
status, subscribe with snapshot/event notifications, drain/undrain/weight
with the last-healthy-backend refusal, audit) with synthetic, deterministic
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

from xlb.api import protocol as P
from xlb.errors import ErrorCode, InvalidParams, ReadOnlyError, RefusedError, XlbError

ANSWERED = ("status", "subscribe", "drain", "undrain", "weight", "audit")  # the rest: NO_METHOD


class AgentDouble:
    def __init__(self, path: str, instance: str = "lb1", backends: int = 3, vips: int = 2,
                 queues: int = 4, cpus: int = 2, operator: bool = True, frozen: bool = False,
                 tick: float = 0.2, hot_queue: int | None = 1):
        self.path, self.instance, self.operator, self.frozen, self.tick = (
            path, instance, operator, frozen, tick)
        self.n_queues, self.n_cpus, self.hot_queue = queues, cpus, hot_queue
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.alarms: list[P.Alarm] = []  # what the snapshots say is wrong underneath
        self.non_syn_misses = 0.0  # TCP non-SYN connection-table misses per second
        self.audit: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.n = 0
        self.started = 1_700_000_000.0
        self.vips: list[dict[str, Any]] = []
        for v in range(vips):
            self.vips.append({
                "name": ["web", "dns", "api", "img"][v % 4] + (str(v // 4) if v >= 4 else ""),
                "vip": f"198.19.0.{10 + v}:{[80, 53, 443, 8080][v % 4]}/"
                       f"{'udp' if v % 4 == 1 else 'tcp'}",
                "backends": [{"address": _backend_address(b), "weight": 1 + (b % 3 == 2),
                              "state": "active", "health": "up"} for b in range(backends)]})
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
        subscribed = False
        sock, buf = h.connection, b""
        while not self._stopping.is_set():
            ready, _, _ = select.select([sock], [], [], self.tick)
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
                reply, sub = self._handle(line)
                subscribed = subscribed or sub
                if not _send(h, reply):
                    return
            if subscribed and not _send(h, {"jsonrpc": "2.0", "method": "snapshot",
                                            "params": self.snapshot()}):
                return

    def _handle(self, line: bytes) -> tuple[dict[str, Any], bool]:
        req = json.loads(line)
        name, rid = req["method"], req.get("id")
        with self.lock:
            self.calls.append((name, req.get("params", {})))
        method = P.METHODS.get(name)
        if method is None or name not in ANSWERED:
            return _error(rid, ErrorCode.NO_METHOD, f"unknown method {name!r}"), False
        try:
            params = method.check(req.get("params", {}))
            if method.operator and not self.operator:
                raise ReadOnlyError("tester (uid 1000) is read-only")
            result: Any
            if name == "status":
                status: P.Status = {**self.snapshot(),
                                    "caller": {"user": "tester", "operator": self.operator}}
                result = status
            elif name == "subscribe":
                result = P.Subscribed(subscribed=True, tick=self.tick)
            elif name == "audit":
                with self.lock:
                    result = self.audit[-params["n"]:]
            else:
                change = self._change(name, params)
                with self.lock:
                    self.audit.append({"time": time.time(), "uid": 1000, "user": "tester",
                                       "action": name, "params": params,
                                       "before": change["before"], "after": change["after"],
                                       "result": "ok"})
                result = change
        except XlbError as e:
            return _error(rid, e.rpc_code, str(e)), False
        return {"jsonrpc": P.JSONRPC, "id": rid, "result": result}, name == "subscribe"

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
                vips.append({"name": v["name"], "vip": v["vip"], "backends": rows,
                             "pps": round(sum(r["pps"] for r in rows), 1),
                             "active_connections": sum(r["active_connections"] for r in rows),
                             "healthy": sum(1 for r in rows if r["health"] == "up"),
                             "total": len(rows), "panic": v.get("panic", False)})
            reasons = {r: 0.0 for r in P.REASONS}
            reasons["tx_encap"] = round(sum(queues) * 0.97, 1)
            reasons["pass_not_vip"] = round(sum(queues) * 0.02, 1)
            reasons["drop_no_backend"] = round(sum(queues) * 0.01, 1)
            totals = {r: int(x * 600) for r, x in reasons.items()}
            totals["drop_fragment"] = 12
            return {"instance": self.instance, "host": "lab-host", "lb_mode": "dsr",
                    "time": now, "uptime": 3723.0, "xdp_mode": "native",
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
                    "kernel": P.empty_kernel()}


def _serving(b: dict[str, Any]) -> bool:
    return b["state"] == "active" and b["weight"] > 0 and b["health"] == "up"


def _backend_address(i: int) -> str:
    return f"198.18.{2 + i // 250}.{1 + i % 250}"


def _configured(b: dict[str, Any]) -> P.BackendConfig:
    """A backend as the agent's change answers show it (its [[vip.backend]] table)."""
    return {"address": b["address"], "weight": b["weight"], "state": b["state"]}


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": P.JSONRPC, "id": rid, "error": {"code": int(code), "message": message}}


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
