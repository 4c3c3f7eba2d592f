"""Katran's XDP balancer measured as bench/dataplane.py measures xlb (a figure, not a test).

Usage: sudo .venv/bin/python bench/katran.py [--repeat N] [--runs 5] [--json] [--no-xlb]

Katran (bench/peers/katran: upstream's balancer.bpf.c, built as upstream's Makefile-bpf
builds it, clang -O2 -emit-llvm | llc -march=bpf, with its default features: Maglev rings,
IP-in-IP encapsulation, per-CPU LRU connection tables, per-CPU counters) gets one VIP per
class with 100 reals, configured as Katran's userspace would: the gateway MAC in ctl_array,
vip_map, reals (ids from 1), a Maglev ring of RING_SIZE entries per VIP in ch_rings, and one
LRU connection table per CPU in lru_mapping (the LruSize split over the CPUs, as KatranLb
does for its forwarding cores; the fallback LRU is never used, and the run checks that).

Every figure is the median over --runs of the kernel's mean ns per run with --repeat
repetitions, and its ratio to the same XDP_PASS floor program as bench/dataplane.py. The runs
are interleaved (floor, then each class of each program, --runs times) so that a slow moment
of the machine falls on every column; "spread" is (max - min) / median of a class's runs.
Katran's TX classes run a build with -DKATRAN_BENCH_RESTORE (the vendored copy's one patch:
pop the outer header and write the Ethernet header back after the encapsulation, like xlb's
-DXLB_BENCH_RESTORE); push_pop_overhead is what such a step costs alone.

Classes: established_v4/_v6 (TCP ACK of a flow in the connection table), udp_established_v4
(a UDP packet of a flow with an entry), syn_new_flow_v4 (the same SYN repeated: ring lookup
and a connection-table write every time), non_vip_pass (upstream build). Katran stops writing
new flows to its LRU above MAX_CONN_RATE (125000 per second per CPU), which a repeated SYN
passes at once; syn_new_flow_v4 therefore runs a build with that limit raised (xlb's row
keeps its own new-flow limit unreached too) and syn_flood_guard_v4 shows the default build.

The process stays on one CPU (--cpu), since a Katran flow's entry is in that CPU's table.
xlb's same rows come from bench/dataplane.py's config, packets and builds (plus a UDP VIP).
clang and llc are installed with apt-get if missing (said on stderr).
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import functools
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scapy.layers.inet import IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from bench import dataplane as xlb_bench  # noqa: E402
from xlb import resources  # noqa: E402
from xlb.dataplane import bpfsys, maglev  # noqa: E402
from xlb.dataplane.structs import net_port  # noqa: E402

KATRAN_SRC = Path(__file__).resolve().parent / "peers" / "katran"
# katran/lib/Makefile-bpf (what build_bpf_modules_opensource.sh runs), minus nothing
KATRAN_CFLAGS = ("-DDEBUG", "-D__KERNEL__", "-Wno-unused-value", "-Wno-pointer-sign",
                 "-Wno-compare-distinct-pointer-types", "-O2", "-emit-llvm", "-c", "-g")
RING_SIZE = 65537  # balancer_consts.h
MAX_VIPS = 512  # balancer_consts.h: the global counters sit at MAX_VIPS + n in `stats`
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = 0, 1, 2, 3
IPPROTO_TCP, IPPROTO_UDP = 6, 17
F_IPV6 = 1  # real_definition.flags
# stats map: MAX_VIPS + these (balancer_consts.h)
LRU_CNTRS, LRU_MISS_CNTR, FALLBACK_LRU_CNTR = 0, 1, 3
XDP_TOTAL_CNTR, XDP_TX_CNTR, XDP_DROP_CNTR, XDP_PASS_CNTR = 16, 17, 18, 19
XLB_MAX_CONNECTIONS = int(cast(dict[str, Any], xlb_bench.CONFIG["instance"])["max_connections"])
GATEWAY_MAC = bytes.fromhex("02000000000b")
UDP_PORT = 53
TCP_CLASSES = ("established_v4", "established_v6", "syn_new_flow_v4", "non_vip_pass")
CLASSES = ("established_v4", "established_v6", "udp_established_v4", "syn_new_flow_v4",
           "non_vip_pass")
# the restore step alone: keep the Ethernet header, push 20 bytes, pop them, write it back
RESTORE_SRC = """
#include "katran/lib/linux_includes/bpf.h"
#include "katran/lib/linux_includes/bpf_helpers.h"
SEC("xdp")
int restore(struct xdp_md *ctx) {
  void *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;
  unsigned char eth[14];
  if (d + 14 > e) return XDP_ABORTED;
  __builtin_memcpy(eth, d, 14);
  if (bpf_xdp_adjust_head(ctx, -20)) return XDP_ABORTED;
  if (bpf_xdp_adjust_head(ctx, 20)) return XDP_ABORTED;
  d = (void *)(long)ctx->data;
  e = (void *)(long)ctx->data_end;
  if (d + 14 > e) return XDP_ABORTED;
  __builtin_memcpy(d, eth, 14);
  return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""


# ---- Katran's structs (balancer_structs.h), as its userspace writes them ----

class VipDefinition(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint8 * 16), ("port", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class VipMeta(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint32), ("vip_num", ctypes.c_uint32)]


class RealDefinition(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint8 * 16), ("flags", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 3)]


class CtlValue(ctypes.Structure):
    _fields_ = [("mac", ctypes.c_uint8 * 8)]


class FlowKey(ctypes.Structure):
    _fields_ = [("src", ctypes.c_uint8 * 16), ("dst", ctypes.c_uint8 * 16),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


class RealPosLru(ctypes.Structure):
    _fields_ = [("pos", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("atime", ctypes.c_uint64)]


assert ctypes.sizeof(VipDefinition) == 20 and ctypes.sizeof(RealDefinition) == 20
assert ctypes.sizeof(FlowKey) == 40 and ctypes.sizeof(RealPosLru) == 16


def _addr16(addr: str) -> ctypes.Array[ctypes.c_uint8]:
    """Katran's address unions: an IPv4 address in the first 4 bytes, network order."""
    raw = ipaddress.ip_address(addr).packed
    return (ctypes.c_uint8 * 16)(*raw.ljust(16, b"\0"))


@dataclass(frozen=True)
class Vip:
    address: str
    port: int
    proto: int
    reals: tuple[str, ...]


def _reals(v6: bool) -> tuple[str, ...]:
    """The same 100 backends as bench/dataplane.py's VIPs."""
    return tuple(f"2001:db8:1::{i + 1:x}" if v6 else f"10.0.{i // 250}.{i % 250 + 1}"
                 for i in range(100))


VIPS = (Vip("10.100.0.10", 80, IPPROTO_TCP, _reals(False)),
        Vip("2001:db8::10", 80, IPPROTO_TCP, _reals(True)),
        Vip("10.100.0.10", UDP_PORT, IPPROTO_UDP, _reals(False)))

VIP_OF = {"established_v4": VIPS[0], "established_v6": VIPS[1], "udp_established_v4": VIPS[2],
          "syn_new_flow_v4": VIPS[0]}


def packets() -> dict[str, tuple[bytes, int]]:
    """bench/dataplane.py's packets, plus a UDP one of the same size."""
    tcp = xlb_bench.packets()
    udp = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
           / IP(src="198.51.100.7", dst="10.100.0.10") / UDP(sport=40005, dport=UDP_PORT)
           / Raw(b"x" * 12))
    out = {name: tcp[name] for name in TCP_CLASSES}
    out["udp_established_v4"] = (bytes(udp), XDP_TX)
    return {name: out[name] for name in CLASSES}


# ---- build, load, configure ----

def _run(cmd: list[str], what: str, **kw: object) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if r.returncode != 0:
        raise SystemExit(f"{what} failed ({' '.join(cmd)}):\n{r.stderr}{r.stdout}")
    return str(r.stdout)


def ensure_toolchain() -> tuple[str, str]:
    """clang and llc, installed with apt-get when missing (idempotent)."""
    if not (shutil.which("clang") and shutil.which("llc")):
        print("bench/katran.py: clang/llc missing, running apt-get install -y clang llvm",
              file=sys.stderr)
        _run(["apt-get", "install", "-y", "clang", "llvm"], "apt-get install clang",
             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    clang, llc = shutil.which("clang"), shutil.which("llc")
    if not (clang and llc):
        raise SystemExit("bench/katran.py: clang and llc are still missing after apt-get")
    return clang, llc


def compile_bpf(toolchain: tuple[str, str], src: Path, out: Path,
                defines: tuple[str, ...] = ()) -> Path:
    """Katran's own pipeline: host-target clang to LLVM IR, then llc -march=bpf."""
    clang, llc = toolchain
    arch_inc = f"/usr/include/{os.uname().machine}-linux-gnu"
    ir = out.with_suffix(".bc")
    _run([clang, f"-I{KATRAN_SRC}", f"-I{arch_inc}", *defines, *KATRAN_CFLAGS, str(src),
          "-o", str(ir)], f"compiling {src.name}")
    _run([llc, "-march=bpf", "-filetype=obj", "-o", str(out), str(ir)], "llc")
    return out


class Loaded:
    """One loaded object: its pinned program and maps under pin_dir."""

    def __init__(self, obj: Path, pin_dir: str) -> None:
        self.pin_dir = pin_dir
        self.maps_dir = os.path.join(pin_dir, "maps")
        os.makedirs(pin_dir)
        _run(["bpftool", "prog", "load", str(obj), os.path.join(pin_dir, "prog"), "type", "xdp",
              "pinmaps", self.maps_dir], f"bpftool prog load {obj.name}")
        self.prog_fd = bpfsys.obj_get(os.path.join(pin_dir, "prog"))
        self._fds: dict[str, int] = {}

    def fd(self, name: str) -> int:
        if name not in self._fds:
            self._fds[name] = bpfsys.obj_get(os.path.join(self.maps_dir, name))
        return self._fds[name]

    def close(self) -> None:
        for fd in [self.prog_fd, *self._fds.values()]:
            os.close(fd)


def configure(k: Loaded, lru_per_cpu: int, ncpus: int) -> None:
    """What KatranLb does for these VIPs: gateway MAC, VIPs, reals, rings, per-CPU LRUs."""
    ctl = CtlValue()
    ctl.mac[:6] = list(GATEWAY_MAC)
    bpfsys.update(k.fd("ctl_array"), ctypes.c_uint32(0), ctl)
    next_real = 1  # real id 0 means "no real" in the ring
    for vip_num, vip in enumerate(VIPS):
        key = VipDefinition(addr=_addr16(vip.address), port=net_port(vip.port), proto=vip.proto)
        bpfsys.update(k.fd("vip_map"), key, VipMeta(flags=0, vip_num=vip_num))
        ids = {}
        for addr in vip.reals:
            flags = F_IPV6 if ipaddress.ip_address(addr).version == 6 else 0
            bpfsys.update(k.fd("reals"), ctypes.c_uint32(next_real),
                          RealDefinition(addr=_addr16(addr), flags=flags))
            ids[addr] = next_real
            next_real += 1
        table = maglev.build_table([(a, 1) for a in vip.reals], RING_SIZE)
        ring = np.array([ids[vip.reals[i]] for i in table], dtype=np.uint32)
        keys = np.arange(vip_num * RING_SIZE, (vip_num + 1) * RING_SIZE, dtype=np.uint32)
        bpfsys.update_batch(k.fd("ch_rings"), np.ctypeslib.as_ctypes(keys),
                            np.ctypeslib.as_ctypes(ring), RING_SIZE)
    for cpu in range(ncpus):  # KatranLb::initLrus + attachLrus, every CPU forwarding
        path = os.path.join(k.maps_dir, f"katran_lru{cpu}")
        _run(["bpftool", "map", "create", path, "type", "lru_hash", "key", "40", "value", "16",
              "entries", str(lru_per_cpu), "name", f"katran_lru{cpu}"], "bpftool map create")
        _run(["bpftool", "map", "update", "pinned", os.path.join(k.maps_dir, "lru_mapping"),
              "key", *[str(b) for b in cpu.to_bytes(4, sys.byteorder)], "value", "pinned",
              path], "bpftool map update lru_mapping")


def stats(k: Loaded, ncpus: int) -> dict[str, tuple[int, int]]:
    """Katran's global per-CPU counters that say which path packets took (summed)."""
    out = {}
    for name, idx in (("lru", LRU_CNTRS), ("lru_miss", LRU_MISS_CNTR),
                      ("fallback_lru", FALLBACK_LRU_CNTR), ("total", XDP_TOTAL_CNTR),
                      ("tx", XDP_TX_CNTR), ("drop", XDP_DROP_CNTR), ("pass", XDP_PASS_CNTR)):
        vals = (ctypes.c_uint64 * (2 * ncpus))()
        bpfsys.lookup(k.fd("stats"), ctypes.c_uint32(MAX_VIPS + idx), vals)
        out[name] = (sum(vals[0::2]), sum(vals[1::2]))
    return out


def lru_entry(k: Loaded, cpu: int, pkt: bytes) -> int | None:
    """The real id that `cpu`'s connection table holds for the packet's flow."""
    e = Ether(pkt)
    ip = e[IP] if IP in e else e[IPv6]
    l4 = ip.payload
    key = FlowKey(src=_addr16(ip.src), dst=_addr16(ip.dst), sport=net_port(l4.sport),
                  dport=net_port(l4.dport), proto=ip.proto if IP in e else ip.nh)
    val = RealPosLru()
    fd = bpfsys.obj_get(os.path.join(k.maps_dir, f"katran_lru{cpu}"))
    try:
        return int(val.pos) if bpfsys.lookup(fd, key, val) else None
    finally:
        os.close(fd)


# ---- path checks ----

def check_frame(name: str, pkt: bytes, out: bytes, vip: Vip, entry: str | None) -> str:
    """Upstream build, one run: the frame must be IP-in-IP to one of the VIP's reals (the
    one the flow's table entry names, if it has one), with the client's IP packet inside,
    sent to the gateway MAC."""
    e = Ether(out)
    inner = bytes(Ether(pkt).payload)
    if IP in e and e[IP].proto == 4:
        outer, hdr = e[IP].dst, 20
    elif IPv6 in e and e[IPv6].nh in (4, 41):
        outer, hdr = e[IPv6].dst, 40
    else:
        raise SystemExit(f"katran {name}: not IP-in-IP: {e.summary()}: bench is wrong")
    if e.dst != GATEWAY_MAC.hex(":") or bytes(e.payload)[hdr:] != inner:
        raise SystemExit(f"katran {name}: encapsulated frame is not the client's: bench is wrong")
    reals = {str(ipaddress.ip_address(a)) for a in vip.reals}
    if outer not in reals or (entry is not None and outer != entry):
        raise SystemExit(f"katran {name}: sent to {outer}, not the VIP's real {entry or ''}")
    return f"IP-in-IP to {outer}" + (", the real of the flow's entry" if entry else "")


def real_of(k: Loaded, real_id: int | None) -> str | None:
    """The address of Katran's real `real_id` (reals map)."""
    if real_id is None:
        return None
    r = RealDefinition()
    bpfsys.lookup(k.fd("reals"), ctypes.c_uint32(real_id), r)
    raw = bytes(r.addr)
    return str(ipaddress.ip_address(raw if r.flags & F_IPV6 else raw[:4]))


def check_counts(name: str, d: dict[str, tuple[int, int]], n: int) -> str:
    """The counters' change over a class's n packets must show the intended path."""
    want: dict[str, tuple[str, int, int]] = {
        "pass": ("pass", 0, n), "tx": ("tx", 0, n),
        "vip packets": ("lru", 0, 0 if name == "non_vip_pass" else n),
        "ring lookups (LRU misses)": ("lru", 1, n if name.startswith("syn") else 0),
        "SYN misses": ("lru_miss", 0, n if name.startswith("syn") else 0),
        "non-SYN TCP misses": ("lru_miss", 1, 0), "fallback LRU uses": ("fallback_lru", 0, 0),
    }
    if name == "non_vip_pass":
        want["tx"] = ("tx", 0, 0)
    else:
        want["pass"] = ("pass", 0, 0)
    bad = [f"{label} {d[k][i]} (wanted {v})" for label, (k, i, v) in want.items()
           if d[k][i] != v]
    if bad:
        raise SystemExit(f"katran {name}: wrong path: {', '.join(bad)}: bench is wrong")
    return ", ".join(f"{label} {v}" for label, (k, i, v) in want.items() if v)


# ---- measuring ----

def sample(fd: int, pkt: bytes, expect: int, repeat: int, same_out: bool = False) -> float:
    action, out, ns = bpfsys.test_run(fd, pkt, repeat=repeat)
    if action != expect:
        raise SystemExit(f"unexpected XDP action {action} (wanted {expect}): bench is wrong")
    if same_out and out != pkt:
        raise SystemExit("the restore step did not give the client's frame back: bench is wrong")
    return float(ns)


Row = Callable[[], float]


def insns(prog_fd: int) -> int:
    """The program's size as the kernel runs it (xlated BPF instructions)."""
    return int(bpfsys.prog_info(prog_fd).xlated_prog_len) // 8


def xlb_rows(pin_root: str, run_root: str, pk: dict[str, tuple[bytes, int]],
             repeat: int) -> tuple[dict[str, Row], int]:
    """xlb's same classes, built and configured as bench/dataplane.py does (plus a UDP VIP)."""
    from xlb.dataplane import loader
    from xlb.dataplane.config import parse_config
    from xlb.dataplane.manager import Dataplane, geometry_of

    raw: dict[str, Any] = copy.deepcopy(xlb_bench.CONFIG)
    raw["vip"].append({"name": "katran-udp", "address": "10.100.0.10", "port": UDP_PORT,
                       "protocol": "udp", "backend": [{"address": a} for a in _reals(False)]})
    cfg = parse_config(raw)
    geo = geometry_of(cfg)
    prod = loader.load("prod", geo, pin_root)
    bench = loader.load("bench", geo, pin_root, extra_cflags=("-DXLB_BENCH_RESTORE",))
    for inst in ("prod", "bench"):
        with Dataplane(inst, pin_root, run_root) as dp:
            dp.apply(cfg)
    for name in ("established_v4", "established_v6"):  # their SYNs make the entries
        syn = Ether(pk[name][0])
        syn[TCP].flags = "S"
        bpfsys.test_run(bench.prog_fd, bytes(syn), repeat=1)
    bpfsys.test_run(bench.prog_fd, pk["udp_established_v4"][0], repeat=1)
    rows: dict[str, Row] = {}
    for name, (pkt, expect) in pk.items():
        fd = bench.prog_fd if expect == XDP_TX else prod.prog_fd
        rows[name] = functools.partial(sample, fd, pkt, expect, repeat)
    return rows, insns(prod.prog_fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-xlb", action="store_true", help="Katran's rows only")
    ap.add_argument("--lru-size", type=int, default=XLB_MAX_CONNECTIONS,
                    help="Katran's LruSize, split over the CPUs (default: xlb's "
                         "max_connections in bench/dataplane.py; Katran's own default is 8000000)")
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)))
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/katran.py needs root (BPF)")
    os.sched_setaffinity(0, {args.cpu})
    toolchain = ensure_toolchain()
    from bcc import BPF

    ncpus = bpfsys.possible_cpus()
    pk = packets()
    n = args.repeat * args.runs
    build = Path(tempfile.mkdtemp(prefix="xlb-katran-build-"))
    pin_root = tempfile.mkdtemp(prefix="xlb-katran-", dir="/sys/fs/bpf")
    run_root = tempfile.mkdtemp(prefix="xlb-katran-run-")
    loaded: list[Loaded] = []
    try:
        src = KATRAN_SRC / "katran" / "lib" / "bpf" / "balancer.bpf.c"
        objs = {
            "upstream": compile_bpf(toolchain, src, build / "upstream.o"),
            "restore": compile_bpf(toolchain, src, build / "restore.o",
                                   ("-DKATRAN_BENCH_RESTORE",)),
            "restore_rate": compile_bpf(toolchain, src, build / "restore_rate.o", (
                "-DKATRAN_BENCH_RESTORE", "-DMAX_CONN_RATE=1000000000000ULL")),
        }
        (build / "push_pop.c").write_text(RESTORE_SRC)
        push_pop_obj = compile_bpf(toolchain, build / "push_pop.c", build / "push_pop.o")
        ks = {name: Loaded(obj, os.path.join(pin_root, f"katran-{name}"))
              for name, obj in objs.items()}
        loaded.extend(ks.values())
        for k in ks.values():
            configure(k, max(1, args.lru_size // ncpus), ncpus)
        push_pop = Loaded(push_pop_obj, os.path.join(pin_root, "push-pop"))
        loaded.append(push_pop)
        floor_bpf = BPF(src_file=str(resources.data_dir("bpf") / "pass.c").encode())
        floor = floor_bpf.load_func(b"xlb_floor", BPF.XDP)

        # the first packet of each flow makes its connection-table entry
        frames = {}
        for kp in (ks["upstream"], ks["restore"]):
            for name in ("established_v4", "established_v6"):
                syn = Ether(pk[name][0])
                syn[TCP].flags = "S"
                sample(kp.prog_fd, bytes(syn), XDP_TX, 1)
            sample(kp.prog_fd, pk["udp_established_v4"][0], XDP_TX, 1)
        up = ks["upstream"]
        for name, vip in VIP_OF.items():
            entry = None
            if name != "syn_new_flow_v4":
                for kp in (up, ks["restore"]):
                    if lru_entry(kp, args.cpu, pk[name][0]) is None:
                        raise SystemExit(f"katran {name}: no entry in CPU {args.cpu}'s table")
                entry = real_of(up, lru_entry(up, args.cpu, pk[name][0]))
            _, out, _ = bpfsys.test_run(up.prog_fd, pk[name][0], repeat=1)
            frames[name] = check_frame(name, pk[name][0], out, vip, entry)

        kname = {"established_v4": "restore", "established_v6": "restore",
                 "udp_established_v4": "restore", "syn_new_flow_v4": "restore_rate",
                 "syn_flood_guard_v4": "restore", "non_vip_pass": "upstream"}
        kpk = {**pk, "syn_flood_guard_v4": pk["syn_new_flow_v4"]}
        rows: dict[str, Row] = {"floor_xdp_pass": lambda: sample(
            floor.fd, pk["non_vip_pass"][0], XDP_PASS, args.repeat)}
        for name, prog in kname.items():
            pkt, expect = kpk[name]
            rows[f"katran {name}"] = functools.partial(
                sample, ks[prog].prog_fd, pkt, expect, args.repeat, same_out=expect == XDP_TX)
        rows["katran push_pop_overhead"] = functools.partial(
            sample, push_pop.prog_fd, pk["non_vip_pass"][0], XDP_PASS, args.repeat, True)
        sizes = {"katran": insns(ks["upstream"].prog_fd)}
        if not args.no_xlb:
            xrows, sizes["xlb"] = xlb_rows(pin_root, run_root, pk, args.repeat)
            for name, row in xrows.items():
                rows[f"xlb {name}"] = row

        samples: dict[str, list[float]] = {name: [] for name in rows}
        counts: dict[str, dict[str, tuple[int, int]]] = {}  # a class's own runs, summed
        for _ in range(args.runs):
            for name, row in rows.items():
                built = kname.get(name.removeprefix("katran "))
                if name.startswith("katran ") and built:
                    before = stats(ks[built], ncpus)
                    samples[name].append(row())
                    after = stats(ks[built], ncpus)
                    acc = counts.setdefault(name.removeprefix("katran "),
                                            {c: (0, 0) for c in after})
                    for c, (v1, v2) in after.items():
                        acc[c] = (acc[c][0] + v1 - before[c][0], acc[c][1] + v2 - before[c][1])
                else:
                    samples[name].append(row())
        if lru_entry(ks["restore_rate"], args.cpu, pk["syn_new_flow_v4"][0]) is None:
            raise SystemExit("katran syn_new_flow_v4: the SYN wrote no entry: bench is wrong")
        checks = {}
        for cls, delta in counts.items():
            checks[cls] = check_counts(cls, delta, n)
            if cls == "syn_new_flow_v4":
                checks[cls] += ", the flow's entry written"
            if cls in frames:
                checks[cls] += f"; {frames[cls]}"
    finally:
        for k in loaded:
            k.close()
        shutil.rmtree(pin_root, ignore_errors=True)
        shutil.rmtree(run_root, ignore_errors=True)
        shutil.rmtree(build, ignore_errors=True)

    med = {name: float(statistics.median(s)) for name, s in samples.items()}
    floor_ns = med["floor_xdp_pass"]
    med["katran push_pop_overhead"] -= floor_ns
    spread = {name: round((max(s) - min(s)) / statistics.median(s), 3)
              for name, s in samples.items()}
    doc = {"repeat": args.repeat, "runs": args.runs, "cpu": args.cpu,
           "lru_size": args.lru_size, "ns_per_packet": med,
           "ratio_to_floor": {k: round(v / floor_ns, 2) for k, v in med.items()},
           "spread": spread, "xlated_insns": sizes, "katran_path_checks": checks}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"Katran{'' if args.no_xlb else ' and xlb'}, BPF_PROG_TEST_RUN on CPU {args.cpu}, "
          f"repeat {args.repeat}, "
          f"median of {args.runs} interleaved runs; floor {floor_ns:.1f} ns "
          f"(spread {spread['floor_xdp_pass']:.0%})")
    hdr = f"{'class':<22}{'katran ns':>10}{'x floor':>8}{'spread':>7}"
    if not args.no_xlb:
        hdr += f"{'xlb ns':>8}{'x floor':>8}{'spread':>7}{'xlb/katran':>11}"
    print(hdr)
    for cls in [*CLASSES, "syn_flood_guard_v4", "push_pop_overhead"]:
        kt = med[f"katran {cls}"]
        line = f"{cls:<22}{kt:>10.1f}{kt / floor_ns:>8.2f}{spread[f'katran {cls}']:>7.0%}"
        if f"xlb {cls}" in med:
            x = med[f"xlb {cls}"]
            line += f"{x:>8.1f}{x / floor_ns:>8.2f}{spread[f'xlb {cls}']:>7.0%}{x / kt:>11.2f}"
        print(line)
    print("TX classes of both include a benchmark-only restore step (push_pop_overhead: about "
          f"{med['katran push_pop_overhead']:.0f} ns); syn_new_flow_v4: Katran's new-flow rate "
          "limit raised so every SYN writes its entry; syn_flood_guard_v4: upstream's limit "
          "(125000/s/CPU), passed at once, so most SYNs skip the write")
    print("program size (xlated instructions, production builds): "
          + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    print("Katran paths (its counters over all runs, and one upstream-build frame):")
    for cls, text in checks.items():
        print(f"  {cls}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
