"""Data-plane cost per packet through BPF_PROG_TEST_RUN (a figure, not a test).

Usage: sudo .venv/bin/python bench/dataplane.py [--repeat N] [--runs 5] [--json]

For each packet class: the median over --runs of the kernel's mean ns per run
with --repeat repetitions, and its ratio to a floor program that only returns
XDP_PASS. The kernel hands the *modified* frame to the next repetition, so the
encapsulating classes run a build with -DXLB_BENCH_RESTORE that undoes the
push (one extra bpf_xdp_adjust_head and a 14-byte write per packet); the
restore overhead is measured and shown so the figures can be read net of it.

SNAT (snat_* classes, VIPs in mode snat): the translation is in place, so the bench build
writes the addresses, ports and MACs back (snat_restore_overhead: about what that costs);
"snat_new_flow" runs a third build that also moves the client's port on after each
repetition, so every repetition is a new flow claiming a new (address, port) (the
connection table and snat_rev then run full and evict, as under a steady stream of new
flows; the DSR syn_new_flow rows replace one entry instead). "snat_established" is a
client packet of a translated flow, "snat_reply" a backend's reply translated back.

New flows: "syn_new_flow" repeats one SYN (its entry is replaced each time);
"new_5tuple_v4" runs the build that moves the client's port on after each repetition, so
every packet is a SYN of a new flow and inserts a connection entry (the table runs full
and evicts). "mix_90_10_v4" is computed, not measured: 0.9 x established_v4 + 0.1 x
new_5tuple_v4 (a stream where one packet in ten opens a flow). "udp_established_v4" is a
UDP packet of a flow that has an entry (made by the first packet).

Flow traces: every class above runs with tracing off (the default); "trace_off" and
"trace_on_no_match" are the established IPv4 flow again with the trace explicitly off,
then on with a filter the packet does not match (the cost a trace adds to the packets
it does not trace).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from xlb import resources  # noqa: E402
from xlb.dataplane import bpfsys, loader  # noqa: E402
from xlb.dataplane import structs as S  # noqa: E402
from xlb.dataplane.config import parse_config  # noqa: E402
from xlb.dataplane.manager import Dataplane, geometry_of  # noqa: E402
from xlb.dataplane.trace import filter_config  # noqa: E402

XDP_PASS, XDP_TX = 2, 3
CONFIG = {
    # the new-flow limit on (its check is part of a new flow's cost) but never reached
    "instance": {"name": "bench", "interface": "lo", "max_vips": 8, "max_backends": 256,
                 "max_connections": 262144, "flow_table_turnover": 0.01,
                 "snat_pool_v4": "198.19.0.0/24", "snat_pool_v6": "fd00:5f1b:19::/120"},
    "vip": [
        {"name": "web", "address": "10.100.0.10", "port": 80, "protocol": "tcp",
         "backend": [{"address": f"10.0.{i // 250}.{i % 250 + 1}"} for i in range(100)]},
        {"name": "web6", "address": "2001:db8::10", "port": 80, "protocol": "tcp",
         "backend": [{"address": f"2001:db8:1::{i + 1:x}"} for i in range(100)]},
        {"name": "snat", "address": "10.100.0.50", "port": 80, "protocol": "tcp",
         "mode": "snat",
         "backend": [{"address": f"10.0.{i // 250}.{i % 250 + 1}"} for i in range(100)]},
        {"name": "snat6", "address": "2001:db8::50", "port": 80, "protocol": "tcp",
         "mode": "snat", "backend": [{"address": f"2001:db8:1::{i + 1:x}"} for i in range(100)]},
        {"name": "dns", "address": "10.100.0.20", "port": 53, "protocol": "udp",
         "backend": [{"address": f"10.0.{i // 250}.{i % 250 + 1}"} for i in range(100)]},
    ],
}
PAD = Raw(b"x" * 20)  # the restore-cost program writes 58 bytes: frames at least that


def snat_packets() -> dict[str, bytes]:
    """Client packets to the SNAT VIPs (their replies are made from the translation)."""
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    v4 = IP(src="198.51.100.7", dst="10.100.0.50")
    v6 = IPv6(src="2001:db8:ffff::7", dst="2001:db8::50")
    return {
        "snat_new_flow_v4": bytes(e / v4 / TCP(sport=1, dport=80, flags="S") / PAD),
        "snat_new_flow_v6": bytes(e / v6 / TCP(sport=1, dport=80, flags="S") / PAD),
        "snat_established_v4": bytes(e / v4 / TCP(sport=40001, dport=80, flags="A") / PAD),
        "snat_established_v6": bytes(e / v6 / TCP(sport=40001, dport=80, flags="A") / PAD),
    }


def snat_reply(dp: Dataplane, client_pkt: bytes) -> bytes:
    """The backend's reply to the translated flow of `client_pkt` (its entry holds the
    SNAT address and port)."""
    c = Ether(client_pkt)
    ip = c[IP] if IP in c else c[IPv6]
    src, dst = ipaddress.ip_address(ip.src), ipaddress.ip_address(ip.dst)
    key = S.FlowKey(src=S.pack_addr(src), dst=S.pack_addr(dst), sport=S.net_port(c[TCP].sport),
                    dport=S.net_port(80), proto=6, family=S.family_of(dst))
    conn = dp.maps["conns"].get(key)
    assert conn is not None and conn.mode == S.XLB_MODE_SNAT, "no SNAT entry: bench is wrong"
    b = dp.maps["backends"].get(conn.backend_id)
    backend = S.unpack_addr(b.addr, b.family)
    snat = S.unpack_addr(conn.snat_addr, b.family)
    l3 = (IP(src=str(backend), dst=str(snat)) if src.version == 4
          else IPv6(src=str(backend), dst=str(snat)))
    return bytes(Ether(src="02:00:00:00:00:0b", dst="02:00:00:00:00:02") / l3
                 / TCP(sport=80, dport=S.host_port(conn.snat_port), flags="A") / PAD)


def packets() -> dict[str, tuple[bytes, int]]:
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    v4 = IP(src="198.51.100.7", dst="10.100.0.10")
    v6 = IPv6(src="2001:db8:ffff::7", dst="2001:db8::10")
    return {
        "syn_new_flow_v4": (bytes(e / v4 / TCP(sport=40000, dport=80, flags="S")), XDP_TX),
        "established_v4": (bytes(e / v4 / TCP(sport=40001, dport=80, flags="A")), XDP_TX),
        "established_v6": (bytes(e / v6 / TCP(sport=40001, dport=80, flags="A")), XDP_TX),
        "udp_established_v4": (bytes(e / IP(src="198.51.100.7", dst="10.100.0.20")
                                     / UDP(sport=40001, dport=53) / PAD), XDP_TX),
        "syn_new_flow_v6": (bytes(e / v6 / TCP(sport=40002, dport=80, flags="S")), XDP_TX),
        # TCP of no known connection (an ACK flood): Maglev, no entry made
        "ack_no_entry_v4": (bytes(e / v4 / TCP(sport=40003, dport=80, flags="A")), XDP_TX),
        "non_vip_pass": (bytes(e / IP(src="198.51.100.7", dst="192.0.2.1") / TCP(dport=80)),
                         XDP_PASS),
    }


def measure(fd: int, pkt: bytes, expect: int, repeat: int, runs: int) -> float:
    samples = []
    for _ in range(runs):
        action, _, ns = bpfsys.test_run(fd, pkt, repeat=repeat)
        if action != expect:
            raise SystemExit(f"unexpected XDP action {action} (wanted {expect}): bench is wrong")
        samples.append(ns)
    return float(statistics.median(samples))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/dataplane.py needs root (BPF)")
    from bcc import BPF

    pin_root = tempfile.mkdtemp(prefix="xlb-bench-", dir="/sys/fs/bpf")
    run_root = tempfile.mkdtemp(prefix="xlb-bench-run-")
    try:
        cfg = parse_config(CONFIG)
        geo = geometry_of(cfg)
        floor_bpf = BPF(src_file=str(resources.data_dir("bpf") / "pass.c").encode())
        floor = floor_bpf.load_func(b"xlb_floor", BPF.XDP)
        prod = loader.load("prod", geo, pin_root)
        bench = loader.load("bench", geo, pin_root, extra_cflags=("-DXLB_BENCH_RESTORE",))
        fresh = loader.load("fresh", geo, pin_root, extra_cflags=(
            "-DXLB_BENCH_RESTORE", "-DXLB_BENCH_NEW_FLOWS"))
        for inst in ("prod", "bench", "fresh"):
            with Dataplane(inst, pin_root, run_root) as dp:
                dp.apply(cfg)
        pk = packets()
        for name in ("established_v4", "established_v6", "udp_established_v4"):
            first = Ether(pk[name][0])  # a SYN (UDP: the packet itself) makes the entry
            if TCP in first:
                first[TCP].flags = "S"
            bpfsys.test_run(bench.prog_fd, bytes(first), repeat=1)
        floor_ns = measure(floor.fd, pk["non_vip_pass"][0], XDP_PASS, args.repeat, args.runs)
        results = {"floor_xdp_pass": floor_ns}
        for name, (pkt, expect) in pk.items():
            fd = bench.prog_fd if expect == XDP_TX else prod.prog_fd
            results[name] = measure(fd, pkt, expect, args.repeat, args.runs)
        new5 = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                     / IP(src="198.51.100.8", dst="10.100.0.10")
                     / TCP(sport=1, dport=80, flags="S"))
        results["new_5tuple_v4"] = measure(fresh.prog_fd, new5, XDP_TX, args.repeat, args.runs)
        results["mix_90_10_v4"] = (0.9 * results["established_v4"]
                                   + 0.1 * results["new_5tuple_v4"])
        sp = snat_packets()
        with Dataplane("bench", pin_root, run_root) as dp:
            for fam in ("v4", "v6"):
                est_pkt = sp[f"snat_established_{fam}"]
                syn = Ether(est_pkt)
                syn[TCP].flags = "S"
                bpfsys.test_run(bench.prog_fd, bytes(syn), repeat=1)  # the translation
                results[f"snat_established_{fam}"] = measure(bench.prog_fd, est_pkt, XDP_TX,
                                                             args.repeat, args.runs)
                results[f"snat_reply_{fam}"] = measure(bench.prog_fd, snat_reply(dp, est_pkt),
                                                       XDP_TX, args.repeat, args.runs)
        for fam in ("v4", "v6"):
            results[f"snat_new_flow_{fam}"] = measure(fresh.prog_fd, sp[f"snat_new_flow_{fam}"],
                                                      XDP_TX, args.repeat, args.runs)
        with Dataplane("bench", pin_root, run_root) as dp:
            est = pk["established_v4"][0]
            dp.set_trace(filter_config(mode=0))
            results["trace_off"] = measure(bench.prog_fd, est, XDP_TX, args.repeat, args.runs)
            # the client is 198.51.100.7: a filter on another source never matches
            dp.set_trace(filter_config(src=ipaddress.ip_network("192.0.2.0/24"), dport=80))
            results["trace_on_no_match"] = measure(bench.prog_fd, est, XDP_TX, args.repeat,
                                                   args.runs)
            dp.set_trace(filter_config(mode=0))
        # what the restore step alone costs: the same established flow, production
        # build, run once per call is dominated by syscall cost, so instead time
        # the restore pair (push + pop) directly in the bench build's floor terms
        restore = BPF(text=b"""
            #include <uapi/linux/bpf.h>
            int restore(struct xdp_md *ctx) {
                if (bpf_xdp_adjust_head(ctx, -20)) return XDP_ABORTED;
                if (bpf_xdp_adjust_head(ctx, 20)) return XDP_ABORTED;
                void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
                if (d + 14 > e) return XDP_ABORTED;
                __builtin_memset(d, 0x02, 12);
                return XDP_PASS;
            }""")
        rfn = restore.load_func(b"restore", BPF.XDP)
        results["push_pop_overhead"] = measure(rfn.fd, pk["non_vip_pass"][0], XDP_PASS,
                                               args.repeat, args.runs) - floor_ns
        # the SNAT restore step: MACs swapped back, IPv6 addresses and ports written
        copy = BPF(text=b"""
            #include <uapi/linux/bpf.h>
            int copy(struct xdp_md *ctx) {
                void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
                if (d + 14 + 40 + 4 > e) return XDP_ABORTED;
                unsigned char mac[6];
                __builtin_memcpy(mac, d, 6);
                __builtin_memcpy(d, d + 6, 6);
                __builtin_memcpy(d + 6, mac, 6);
                unsigned int x = ctx->rx_queue_index, *w = d + 22;
                #pragma unroll
                for (int i = 0; i < 9; i++)
                    w[i] = x + i;
                return XDP_PASS;
            }""")
        cfn = copy.load_func(b"copy", BPF.XDP)
        results["snat_restore_overhead"] = measure(cfn.fd, sp["snat_established_v6"], XDP_PASS,
                                                   args.repeat, args.runs) - floor_ns
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)
        shutil.rmtree(run_root, ignore_errors=True)
    doc = {"repeat": args.repeat, "runs": args.runs, "ns_per_packet": results,
           "ratio_to_floor": {k: round(v / floor_ns, 2) for k, v in results.items()}}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"xlb data plane, BPF_PROG_TEST_RUN, repeat {args.repeat}, median of {args.runs}")
    print(f"{'class':<22}{'ns/packet':>10}{'x floor':>9}")
    for k, v in results.items():
        print(f"{k:<22}{v:>10.0f}{v / floor_ns:>9.2f}")
    print("encapsulating classes include the benchmark-only restore step "
          f"(about {results['push_pop_overhead']:.0f} ns, push_pop_overhead); snat classes "
          f"write headers back (about {results['snat_restore_overhead']:.0f} ns); "
          "mix_90_10_v4 = 0.9 x established_v4 + 0.1 x new_5tuple_v4 (computed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
