"""Prometheus metrics, by Prometheus's conventions: the data plane's counters as counters.

Every figure that grows is exported as the cumulative `_total` the data plane keeps
(packets and bytes per VIP, backend, RX queue and verdict reason; new connections;
connection-table misses; SNAT per VIP and direction, translations, port exhaustion),
so Prometheus takes rate() over its own window and sums correctly; gauges only for
states (weight, drained, healthy, Maglev share as a ratio, table sizes, modes). No
`instance` label: the scraper adds it. Plus `xlb_build_info` and the client library's
process, platform and GC collectors.

Served on 127.0.0.1 by default (`[agent] metrics = "host:port"`, "" = off): every local
user can read them there, as they can read `xlb status`. `metrics = "unix:PATH"`
serves them on a Unix socket owned by the API socket's group, mode 0660, so only that
group reads them (scrape through a proxy in the group, or `curl --unix-socket`).

A scrape reads what the last tick read (the agent's own poll of the data plane) and
the last snapshot: it never touches the data plane, so scrapes cannot slow the agent
down. At most MAX_SCRAPES are served at once (more are closed at once), and a scraper
has SCRAPE_TIMEOUT to send its request and read the answer, so idle connections cannot
pile up descriptors or threads in the agent.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    make_wsgi_app,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from xlb import statefile
from xlb.agent.rates import (
    SNAT_BYTES,
    SNAT_NO_PORT,
    SNAT_PACKETS,
    SNAT_REPLY_BYTES,
    SNAT_REPLY_PACKETS,
    SNAT_TRANSLATIONS,
)
from xlb.api.protocol import MODES, Bgp, BgpSessionState, Snapshot, empty_bgp
from xlb.dataplane import structs as S
from xlb.dataplane.manager import Counters
from xlb.probes.metrics import ProbeCollector
from xlb.schema import UNIX_PREFIX

MAX_SCRAPES = 8
SCRAPE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Counted:
    """The data plane's cumulative counters as one tick read them, with the rows they were
    indexed by at that tick: VIP name -> row of counters.vips, backend address -> row of
    counters.backends. Kept by the agent for the scrapes."""

    counters: Counters
    vips: dict[str, int]
    backends: dict[str, int]


@dataclass(frozen=True)
class Published:
    """What a scrape reads: the last snapshot (states), the last counters, fixed facts."""

    snapshot: Snapshot
    counted: Counted | None
    build: dict[str, str] = field(default_factory=dict)   # version, kernel
    since: float = 0.0            # Unix time the data plane's maps (its counters) were made
    max_connections: int = 0      # connection table entries
    ring_size: int = 0            # Maglev table entries per VIP
    drained: frozenset[tuple[str, str]] = frozenset()  # (VIP, backend) drained by operators
    trace: dict[str, int] = field(default_factory=dict)  # events, lost, skipped (trace.py)


class AgentCollector(Collector):
    def __init__(self, published: Callable[[], Published]):
        self.published = published

    def collect(self) -> Iterator[Metric]:
        p = self.published()
        s = p.snapshot
        yield InfoMetricFamily("xlb_build", "the running xlb: version, kernel, XDP mode "
                               "and forwarding mode",
                               value={**p.build, "xdp_mode": s.get("xdp_mode") or "",
                                      "forwarding_mode": s.get("lb_mode", "")})
        yield InfoMetricFamily("xlb_load_balancer", "the instance this agent runs",
                               value={"name": s.get("instance", ""),
                                      "interface": s.get("interface") or ""})
        yield _gauge("xlb_dataplane_start_time_seconds", "when the data plane's maps were "
                     "made (Unix time): its counters count from then; a new value means "
                     "they restarted from zero", p.since)
        yield _gauge("xlb_connection_table_max_entries", "size of the connection table",
                     p.max_connections)
        yield _gauge("xlb_maglev_table_entries", "size of each VIP's Maglev table",
                     p.ring_size)
        failed = CounterMetricFamily("xlb_tick_failures", "ticks that failed (the agent logs "
                                     "each streak and carries on)")
        failed.add_metric([], s.get("tick_failures", 0))
        yield failed
        alarm = GaugeMetricFamily("xlb_alarm", "1 while something the agent owns was changed "
                                  "under it (what: attach, pins); 0 once put right",
                                  labels=["what"])
        for a in s.get("alarms", []):
            alarm.add_metric([a["what"]], 1.0 if a["active"] else 0.0)
        yield alarm
        yield from _trace(p.trace)
        if p.counted is not None:
            yield from _counters(p.counted)
        yield from _states(s, p.drained)
        yield from _bgp(s.get("bgp") or empty_bgp())


def _trace(totals: dict[str, int]) -> Iterator[Metric]:
    """The flow trace's figures, since the agent started (lost: since the data plane's
    maps were made, the data plane's own counter)."""
    for name, text in (("events", "trace events read from the data plane's ring buffer "
                        "(and kernel drops of traced flows)"),
                       ("lost", "trace events the data plane could not write: its ring "
                        "buffer was full"),
                       ("skipped", "trace events not forwarded to a watcher: over "
                        "[trace] forward_rate, or the watcher was behind")):
        c = CounterMetricFamily(f"xlb_trace_{name}", text)
        c.add_metric([], totals.get(name, 0))
        yield c


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, text)
    g.add_metric([], value)
    return g


def _counters(c: Counted) -> Iterator[Metric]:
    """The data plane's cumulative counters, per-CPU summed, as the tick read them."""
    n = c.counters
    q_pkts = CounterMetricFamily("xlb_rx_queue_packets", "packets XDP saw per RX queue",
                                 labels=["queue"])
    q_bytes = CounterMetricFamily("xlb_rx_queue_bytes", "bytes XDP saw per RX queue",
                                  labels=["queue"])
    actions = CounterMetricFamily("xlb_xdp_action_packets", "packets per RX queue and XDP "
                                  "verdict (aborted, drop, pass, tx, redirect)",
                                  labels=["queue", "action"])
    for i in range(len(n.queues)):
        if not n.queues[i, 0]:
            continue  # a queue that never carried traffic
        q_pkts.add_metric([str(i)], float(n.queues[i, 0]))
        q_bytes.add_metric([str(i)], float(n.queues[i, 1]))
        for j, action in enumerate(S.XDP_ACTIONS):
            actions.add_metric([str(i), action], float(n.queues[i, 2 + j]))
    yield from (q_pkts, q_bytes, actions)
    r_pkts = CounterMetricFamily("xlb_verdict_packets", "packets per verdict reason (every "
                                 "packet XDP sees has exactly one)", labels=["reason"])
    r_bytes = CounterMetricFamily("xlb_verdict_bytes", "bytes per verdict reason",
                                  labels=["reason"])
    for r in S.Reason:
        if r < len(n.reasons):
            r_pkts.add_metric([r.label], float(n.reasons[r, 0]))
            r_bytes.add_metric([r.label], float(n.reasons[r, 1]))
    yield from (r_pkts, r_bytes)
    misses = CounterMetricFamily("xlb_connection_table_misses", "packets of a flow the "
                                 "connection table does not know, by kind: tcp_syn (a new "
                                 "connection), tcp_non_syn (a flow whose state was lost), udp",
                                 labels=["kind"])
    for m in S.Miss:
        misses.add_metric([m.label], float(n.misses[m, 0]))
    yield misses
    v_pkts = CounterMetricFamily("xlb_vip_packets", "packets balanced per VIP",
                                 labels=["vip"])
    v_bytes = CounterMetricFamily("xlb_vip_bytes", "bytes balanced per VIP", labels=["vip"])
    for name, row in c.vips.items():
        v_pkts.add_metric([name], float(n.vips[row, 0]))
        v_bytes.add_metric([name], float(n.vips[row, 1]))
    yield from (v_pkts, v_bytes)
    yield from _snat(c)
    b_pkts = CounterMetricFamily("xlb_backend_packets", "packets sent to a backend (all its "
                                 "VIPs)", labels=["backend"])
    b_bytes = CounterMetricFamily("xlb_backend_bytes", "bytes sent to a backend",
                                  labels=["backend"])
    b_new = CounterMetricFamily("xlb_backend_new_connections", "connection entries made for "
                                "a backend (new flows, and flows moved to it)",
                                labels=["backend"])
    b_active = GaugeMetricFamily("xlb_backend_active_connections", "flows that sent a packet "
                                 "in the last complete activity epoch (~8.6 s)",
                                 labels=["backend"])
    for address, row in sorted(c.backends.items()):
        b_pkts.add_metric([address], float(n.backends[row, 0]))
        b_bytes.add_metric([address], float(n.backends[row, 1]))
        b_new.add_metric([address], float(n.backends[row, 2]))
        if row < len(n.active):
            b_active.add_metric([address], float(n.active[row]))
    yield from (b_pkts, b_bytes, b_new, b_active)


def _snat(c: Counted) -> Iterator[Metric]:
    """SNAT per VIP: packets and bytes translated each way, translations made, and new
    flows dropped for want of a free SNAT port (the pool is too small for the load)."""
    snat = c.counters.snat
    d = ["vip", "direction"]
    pkts = CounterMetricFamily("xlb_snat_packets", "packets translated by SNAT: forward "
                               "(client to backend) and reply (backend to client)", labels=d)
    octets = CounterMetricFamily("xlb_snat_bytes", "bytes translated by SNAT, by direction",
                                 labels=d)
    made = CounterMetricFamily("xlb_snat_translations", "SNAT address and port claimed for "
                               "new flows", labels=["vip"])
    no_port = CounterMetricFamily("xlb_snat_no_port", "new SNAT flows dropped: no free SNAT "
                                  "address and port (reason drop_snat_no_port)", labels=["vip"])
    for name, row in c.vips.items():
        if row >= len(snat):
            continue
        for direction, p, b in (("forward", SNAT_PACKETS, SNAT_BYTES),
                                ("reply", SNAT_REPLY_PACKETS, SNAT_REPLY_BYTES)):
            pkts.add_metric([name, direction], float(snat[row, p]))
            octets.add_metric([name, direction], float(snat[row, b]))
        made.add_metric([name], float(snat[row, SNAT_TRANSLATIONS]))
        no_port.add_metric([name], float(snat[row, SNAT_NO_PORT]))
    yield from (pkts, octets, made, no_port)


def _states(s: Snapshot, drained_by: frozenset[tuple[str, str]]) -> Iterator[Metric]:
    """Gauges of states, from the snapshot: per VIP, and per backend of each VIP."""
    def gauge(name: str, text: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"xlb_{name}", text, labels=labels)

    total = gauge("vip_backends", "backends of the VIP", ["vip"])
    healthy = gauge("vip_backends_healthy", "backends of the VIP that pass their checks",
                    ["vip"])
    panic = gauge("vip_panic", "1 while the VIP fails open: too few healthy backends, so "
                  "all serving ones take new flows", ["vip"])
    vip_active = gauge("vip_active_connections",
                       "sum of the VIP's backends' active connections", ["vip"])
    vip_mode = gauge("vip_mode", "1 for the forwarding mode the VIP's new flows take (dsr, "
                     "snat); established flows keep the mode they started in",
                     ["vip", "mode"])
    xdp_mode = gauge("xdp_mode", "1 for the XDP mode the program is attached in (native, "
                     "generic)", ["mode"])
    for m in ("native", "generic"):
        xdp_mode.add_metric([m], 1.0 if s.get("xdp_mode") == m else 0.0)
    pair = ["vip", "backend"]
    weight = gauge("backend_weight", "configured weight (0: no new flows)", pair)
    drained = gauge("backend_drained", "1 if drained by an operator (no new flows)", pair)
    up = gauge("backend_healthy", "1 if its health checks pass", pair)
    share = gauge("backend_ring_share_ratio", "share of the VIP's Maglev table", pair)
    for v in s.get("vips", []):
        name = v["name"]
        total.add_metric([name], v["total"])
        healthy.add_metric([name], v["healthy"])
        panic.add_metric([name], 1.0 if v["panic"] else 0.0)
        vip_active.add_metric([name], v["active_connections"])
        for m in MODES:
            vip_mode.add_metric([name, m], 1.0 if v.get("mode", "dsr") == m else 0.0)
        for b in v["backends"]:
            labels = [name, b["address"]]
            weight.add_metric(labels, b["weight"])
            drained.add_metric(labels, 1.0 if (name, b["address"]) in drained_by else 0.0)
            up.add_metric(labels, 1.0 if b["health"] == "up" else 0.0)
            share.add_metric(labels, b["ring_share"])
    yield from (total, healthy, panic, vip_active, vip_mode, xdp_mode, weight, drained, up,
                share)


_SESSION_STATES: tuple[BgpSessionState, ...] = ("idle", "connected", "established", "down")


def _bgp(b: Bgp) -> Iterator[Metric]:
    """The BGP speaker, from the snapshot (families without samples when there is none)."""
    up = GaugeMetricFamily("xlb_bgp_session_up", "1 while the BGP session with the neighbor "
                           "is established", labels=["peer"])
    state = GaugeMetricFamily("xlb_bgp_session_state", "1 for the session's current state "
                              "(idle, connected, established, down)", labels=["peer", "state"])
    sent = CounterMetricFamily("xlb_bgp_updates_sent", "BGP UPDATE messages sent to the "
                               "neighbor since the agent started", labels=["peer"])
    received = CounterMetricFamily("xlb_bgp_updates_received", "BGP UPDATE messages received "
                                   "from the neighbor since the agent started", labels=["peer"])
    for n in b["neighbors"]:
        up.add_metric([n["peer"]], 1.0 if n["state"] == "established" else 0.0)
        for st in _SESSION_STATES:
            state.add_metric([n["peer"], st], 1.0 if n["state"] == st else 0.0)
        sent.add_metric([n["peer"]], n["updates_sent"])
        received.add_metric([n["peer"]], n["updates_received"])
    announced = GaugeMetricFamily("xlb_bgp_prefix_announced", "1 while the VIP prefix is "
                                  "announced (route health injection), 0 while withdrawn",
                                  labels=["prefix"])
    for p in b["prefixes"]:
        announced.add_metric([p["prefix"]], 1.0 if p["announced"] else 0.0)
    restarts = CounterMetricFamily("xlb_bgp_speaker_restarts", "times ExaBGP was started "
                                   "again after it died, since the agent started")
    maintenance = GaugeMetricFamily("xlb_bgp_maintenance", "1 while an operator keeps every "
                                    "VIP of this load balancer withdrawn")
    if b["enabled"]:
        restarts.add_metric([], b["restarts"])
        maintenance.add_metric([], 1.0 if b["maintenance"] else 0.0)
    yield from (up, state, sent, received, announced, restarts, maintenance)


def registry_of(published: Callable[[], Published]) -> CollectorRegistry:
    """The exporter's registry: the agent's metrics and the process, platform and GC
    collectors of the client library (process_*, python_info, python_gc_*)."""
    registry = CollectorRegistry()
    registry.register(AgentCollector(published))
    registry.register(ProbeCollector(lambda: published().snapshot))  # xlb/probes/metrics.py
    for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(c)
    return registry


@dataclass
class Exporter:
    port: int    # 0 on a Unix socket
    server: WSGIServer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.server.address_family == socket.AF_UNIX:
            try:
                os.unlink(self.server.server_address)  # type: ignore[arg-type]
            except OSError:
                pass


def serve(listen: str, published: Callable[[], Published], group: str) -> Exporter:
    """Start the exporter thread on host:port (port 0 = any) or unix:PATH (mode 0660,
    owned by `group`)."""
    app = make_wsgi_app(registry_of(published))
    server: _Server
    if listen.startswith(UNIX_PREFIX):
        path = listen[len(UNIX_PREFIX):]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket of a previous agent
        server = _UnixServer(path, _Handler)  # type: ignore[arg-type]
        statefile.share_with_group(path, group)
        port = 0
    else:
        host, _, text = listen.rpartition(":")
        family, *_, sockaddr = socket.getaddrinfo(host.strip("[]"), int(text),
                                                  type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
        server = type("_InetServer", (_Server,), {"address_family": family})(
            sockaddr[:2], _Handler)
        port = int(server.server_port)
    server.set_app(app)
    threading.Thread(target=server.serve_forever, args=(0.1,), name="xlb-metrics",
                     daemon=True).start()  # polls for shutdown() every 0.1 s
    return Exporter(port, server)


class _Handler(WSGIRequestHandler):
    timeout = SCRAPE_TIMEOUT  # on the connection: a scraper that stalls is dropped

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape is not news


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per scrape, at most MAX_SCRAPES at once."""

    daemon_threads = True
    request_queue_size = 64  # the backlog: excess connections are accepted and closed

    def server_activate(self) -> None:
        self.slots = threading.BoundedSemaphore(MAX_SCRAPES)
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: this one is closed
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self.slots.release()


class _UnixServer(_Server):
    address_family = socket.AF_UNIX
    allow_reuse_address = False

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no host name to look up: a path
        self.server_name, self.server_port = "localhost", 0
        self.setup_environ()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, _ = self.socket.accept()
        return sock, ("local", 0)  # a Unix peer has no address; WSGI wants one
