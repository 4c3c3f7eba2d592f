"""The probes' figures as Prometheus metrics, from the agent's last snapshot (its
`kernel` document): cumulative `_total` counters since each probe attached (a probe
attached again starts from zero, which Prometheus's rate() reads as a reset), and
gauges only for states. Registered by the agent's exporter (xlb/agent/metrics.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from xlb.api.protocol import Snapshot


class ProbeCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]):
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.snapshot()
        k = s.get("kernel") if s else None
        if not k:
            return
        attached = GaugeMetricFamily("xlb_probe_attached", "1 while the probe is attached "
                                     "(0: off or unavailable on this kernel)",
                                     labels=["probe", "kind"])
        for p in k["probes"]:
            attached.add_metric([p["name"], p["kind"]], 1.0 if p["state"] == "attached" else 0)
        yield attached
        drops = CounterMetricFamily("xlb_kernel_drops", "packets the kernel dropped, by the "
                                    "running kernel's drop reason name", labels=["reason"])
        lb = CounterMetricFamily("xlb_kernel_drops_lb", "of them, packets from or to one of "
                                 "this instance's VIPs or backends", labels=["reason"])
        for d in k["drops"]:
            drops.add_metric([d["reason"]], d["total"])
            lb.add_metric([d["reason"]], d["lb_total"])
        yield from (drops, lb)
        xdp = CounterMetricFamily("xlb_xdp_errors", "XDP exceptions and redirect errors",
                                  labels=["kind", "action", "interface", "program"])
        for e in k["xdp_errors"]:
            xdp.add_metric([e["kind"], e["action"], e["interface"],
                            e["program"] or str(e["prog_id"])], e["total"])
        yield xdp
        polls = CounterMetricFamily("xlb_napi_polls", "NAPI polls", labels=["device", "cpu"])
        packets = CounterMetricFamily("xlb_napi_packets", "packets taken by NAPI polls",
                                      labels=["device", "cpu"])
        full = CounterMetricFamily("xlb_napi_budget_exhausted", "NAPI polls that used their "
                                   "whole budget (the queue is saturated)",
                                   labels=["device", "cpu"])
        for q in k["napi"]:
            labels = [q["device"], str(q["cpu"])]
            polls.add_metric(labels, q["polls"])
            packets.add_metric(labels, q["packets"])
            full.add_metric(labels, q["exhausted"])
        yield from (polls, packets, full)
        softirq = CounterMetricFamily("xlb_net_rx_softirq_seconds", "time in NET_RX softirq",
                                      labels=["cpu"])
        for c in k["softirq"]:
            softirq.add_metric([str(c["cpu"])], c["seconds"])
        yield softirq
        tcp = CounterMetricFamily("xlb_tcp_events", "TCP resets sent and segments "
                                  "retransmitted by this host", labels=["kind", "reason"])
        for t in k["tcp"]:
            tcp.add_metric([t["kind"], t["reason"]], t["total"])
        yield tcp
        run_s = CounterMetricFamily("xlb_bpf_program_run_seconds", "run time of a BPF "
                                    "program while the runtime probe holds the kernel's "
                                    "statistics on", labels=["id", "name", "owner"])
        runs = CounterMetricFamily("xlb_bpf_program_runs", "runs of a BPF program, counted "
                                   "the same way", labels=["id", "name", "owner"])
        for prog in k["programs"]:
            labels = [str(prog["id"]), prog["name"], prog["owner"]]
            run_s.add_metric(labels, prog["run_time_ns"] / 1e9)
            runs.add_metric(labels, prog["runs"])
        yield from (run_s, runs)
