"""Prometheus metrics: the figures the console shows, from the agent's last snapshot.

Served on 127.0.0.1 by default (`[agent] metrics = "host:port"`, "" = off).
A scrape reads the snapshot the tick already built: it never touches the
data plane, so scrapes cannot slow the agent down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from xlb.api.protocol import Snapshot


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]):
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.snapshot()
        inst = s.get("instance", "")

        def gauge(name: str, text: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"xlb_{name}", text, labels=["instance", *labels])

        up = gauge("up", "1 while the agent publishes snapshots", [])
        up.add_metric([inst], 1.0 if s else 0.0)
        yield up
        if not s:
            return
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


def serve(listen: str, snapshot: Callable[[], Snapshot]) -> int:
    """Start the exporter thread; returns the bound port (listen may say port 0)."""
    host, _, port = listen.rpartition(":")
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snapshot))
    server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    return int(server.server_port)
