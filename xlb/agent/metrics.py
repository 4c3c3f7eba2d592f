"""Prometheus metrics: the figures the console shows, from the agent's last snapshot.

Served on 127.0.0.1 by default (`[agent] metrics = "host:port"`, "" = off): every local
user can read them there, as they can read `xlb status`. `metrics = "unix:PATH"`
serves them on a Unix socket owned by the API socket's group, mode 0660, so only that
group reads them (scrape through a proxy in the group, or `curl --unix-socket`).

A scrape reads the snapshot the tick already built: it never touches the data plane,
so scrapes cannot slow the agent down. At most MAX_SCRAPES are served at once (more are
closed at once), and a scraper has SCRAPE_TIMEOUT to send its request and read the
answer, so idle connections cannot pile up descriptors or threads in the agent.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from xlb import statefile
from xlb.api.protocol import Snapshot
from xlb.probes.metrics import ProbeCollector
from xlb.schema import UNIX_PREFIX

MAX_SCRAPES = 8
SCRAPE_TIMEOUT = 5.0


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]):
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.snapshot()
        inst = s.get("instance", "")

        def gauge(name: str, text: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"xlb_{name}", text, labels=["instance", *labels])

        up = gauge("up", "1 while the agent publishes snapshots", [])
        up.add_metric([inst], 1.0 if s else 0.0)
        yield up
        if not s:
            return
        failed = CounterMetricFamily("xlb_tick_failures", "ticks that failed (the agent logs "
                                     "each streak and carries on)", labels=["instance"])
        failed.add_metric([inst], s["tick_failures"])
        yield failed
        totals = s["totals"]
        for name, text, value in (
                ("packets_per_second", "packets per second seen by XDP", totals["pps"]),
                ("bits_per_second", "bits per second seen by XDP", totals["bps"]),
                ("drop_packets_per_second", "packets per second dropped or aborted by XDP",
                 totals["drop_pps"])):
            g = gauge(name, text, [])
            g.add_metric([inst], value)
            yield g
        q = gauge("queue_packets_per_second", "packets per second per RX queue", ["queue"])
        for i, rate in enumerate(s["queues"]):
            q.add_metric([inst, str(i)], rate)
        yield q
        r = gauge("reason_packets_per_second", "packets per second per verdict reason",
                  ["reason"])
        for reason, rate in s["reasons"].items():
            r.add_metric([inst, reason], rate)
        yield r
        vip_pps = gauge("vip_packets_per_second", "packets per second per VIP", ["vip"])
        healthy = gauge("vip_backends_healthy", "healthy backends per VIP", ["vip"])
        total = gauge("vip_backends", "backends per VIP", ["vip"])
        panic = gauge("vip_panic", "1 while the VIP fails open: too few healthy backends, so "
                      "all serving ones take new flows", ["vip"])
        vip_active = gauge("vip_active_connections",
                           "sum of the VIP's backends' active connections", ["vip"])
        per_backend: dict[str, GaugeMetricFamily] = {
            "pps": gauge("backend_packets_per_second", "packets per second", ["vip", "backend"]),
            "new_connections_per_s": gauge("backend_new_connections_per_second",
                                     "new connections per second", ["vip", "backend"]),
            "active_connections": gauge("backend_active_connections",
                                  "flows that sent a packet in the last complete activity "
                                  "epoch (~8.6 s), counted in the data plane",
                                  ["vip", "backend"]),
            "ring_share": gauge("backend_ring_share", "share of the Maglev table",
                                ["vip", "backend"]),
            "weight": gauge("backend_weight", "configured weight", ["vip", "backend"]),
        }
        b_up = gauge("backend_up", "1 if health checks pass", ["vip", "backend"])
        for v in s["vips"]:
            vip_pps.add_metric([inst, v["name"]], v["pps"])
            healthy.add_metric([inst, v["name"]], v["healthy"])
            total.add_metric([inst, v["name"]], v["total"])
            panic.add_metric([inst, v["name"]], 1.0 if v["panic"] else 0.0)
            vip_active.add_metric([inst, v["name"]], v["active_connections"])
            for b in v["backends"]:
                labels = [inst, v["name"], b["address"]]
                for key, g in per_backend.items():
                    g.add_metric(labels, b[key])  # type: ignore[literal-required]
                b_up.add_metric(labels, 1.0 if b["health"] == "up" else 0.0)
        yield from (vip_pps, healthy, total, panic, vip_active, *per_backend.values(), b_up)


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


def serve(listen: str, snapshot: Callable[[], Snapshot], group: str) -> Exporter:
    """Start the exporter thread on host:port (port 0 = any) or unix:PATH (mode 0660,
    owned by `group`)."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snapshot))
    registry.register(ProbeCollector(snapshot))  # the probes' families: xlb/probes/metrics.py
    app = make_wsgi_app(registry)
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
