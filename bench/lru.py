"""One connection-table insert in each LRU hash flavour, on one CPU and on all at once.

Usage: sudo .venv/bin/python bench/lru.py [--repeat N] [--runs 5] [--entries N] [--json]

xlb's connection table `conns` is an LRU hash; which flavour it uses decides what a new
flow's entry costs and how that cost scales with CPUs. Each variant is a tiny XDP program
(BPF_PROG_TEST_RUN, --repeat repetitions) that inserts one NEW key per repetition, with
xlb's key and value (struct xlb_flow_key, struct xlb_conn from bpf/xlb_shared.h): a
per-CPU counter bumped each repetition is the key's source address, the CPU its source
port, so every CPU writes keys of its own. Every table is filled before it is measured,
so each measured insert also evicts, as under a flood of new flows. The tables are far
bigger than a CPU's caches at the default size, so cache misses are part of the figure;
a small --entries (e.g. 8192) shows the code path alone. With a per-CPU list or a table
per CPU, one CPU's inserts cycle through its share only (--entries / CPUs), with a common
list through the whole table: that too is part of each layout's cost.

  percpu_list   lru_hash with BPF_F_NO_COMMON_LRU: a list per CPU (what xlb uses); the
                kernel splits --entries over the possible CPUs
  common_list   lru_hash with one list shared by every CPU (and its lock)
  map_in_map    Katran's layout: an array of maps indexed by CPU, one common-list lru_hash
                of --entries / CPUs per CPU, each written by its CPU only
  key_only      the same program without the insert (counter, key): the "net" baseline
  floor         XDP_PASS only, as in bench/dataplane.py (the "x floor" column)

"1 CPU" runs on --cpu alone; "all CPUs" runs one process per CPU of this process's
affinity set, each pinned, released together, and gives the mean of their ns per insert
and the aggregate inserts per second (the sum of each CPU's rate while all run). Every
figure is the median over --runs; the runs are interleaved so a slow moment of the
machine falls on every variant. Checks (else "bench is wrong"): each run's counter moved
by --repeat on each CPU that ran, no insert failed, the last keys each CPU inserted are in
its table, the table is full, and an insert costs more than key_only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing as mp
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlb import resources  # noqa: E402
from xlb.dataplane import bpfsys  # noqa: E402
from xlb.dataplane import structs as S  # noqa: E402
from xlb.schema import INSTANCE  # noqa: E402

XDP_ABORTED, XDP_PASS = 0, 2
PACKET = bytes(64)  # never read: the key comes from the counter
LOCAL_FREE_SLACK = 256  # entries a common LRU may hold back per CPU (its local free lists)
MIN_INSERT_NS = 10.0  # an insert (hash, LRU list, eviction) below this is no insert at all

SOURCE = r"""
#include <uapi/linux/bpf.h>
#include "xlb_shared.h"

BPF_PERCPU_ARRAY(seq, u64, 1);
TABLES

int insert(struct xdp_md *ctx)
{
    u32 zero = 0, cpu = bpf_get_smp_processor_id();
    u64 *seqp = seq.lookup(&zero);
    if (!seqp)
        return XDP_ABORTED;
    u64 n = (*seqp)++;
    struct xlb_flow_key k = {};
    k.src[0] = (u32)n;              /* a new client address per repetition */
    k.src[1] = (u32)(n >> 32);
    k.dst[0] = bpf_htonl(0x0a64000a);
    k.sport = (u16)cpu;             /* each CPU's keys its own */
    k.dport = bpf_htons(80);
    k.proto = 6;
    k.family = XLB_AF_INET;
    struct xlb_conn v = {};
    v.backend_id = (u32)n & 127;
    v.last_seen_ns = n;
    v.hash = (u32)n;
    INSERT
    return XDP_PASS;
}
"""

TABLE = 'BPF_F_TABLE("lru_hash", struct xlb_flow_key, struct xlb_conn, {name}, {n}, {flags});'
DIRECT = "if (conns.update(&k, &v)) return XDP_ABORTED;"
VIA_CPU = """void *t = lru_mapping.lookup(&cpu);
    if (!t) return XDP_ABORTED;
    if (bpf_map_update_elem(t, &k, &v, BPF_ANY)) return XDP_ABORTED;"""


@dataclass
class Variant:
    name: str
    doc: str
    bpf: Any = None  # the BCC module
    fd: int = -1
    tables: dict[int, Any] = field(default_factory=dict)  # CPU -> the table it writes
    capacity: int = 0  # entries the tables hold when full (for the CPUs that write)

    @property
    def inserts(self) -> bool:
        return bool(self.tables)

    def seq(self, cpu: int) -> int:
        return int(self.bpf["seq"][0][cpu]) if self.name != "floor" else 0


def build(name: str, entries: int, cpus: list[int]) -> Variant:
    """Compile one variant (BCC) and fill in its tables' handles."""
    from bcc import BPF

    ncpu = bpfsys.possible_cpus()
    if name == "floor":
        b = BPF(src_file=str(resources.data_dir("bpf") / "pass.c").encode())
        return Variant(name, "XDP_PASS", b, b.load_func(b"xlb_floor", BPF.XDP).fd)
    if name == "map_in_map":
        per_cpu = max(1, entries // len(cpus))
        tables = "\n".join(TABLE.format(name=f"inner_{c}", n=per_cpu, flags=0)
                           for c in range(ncpu))
        tables += f'\nBPF_ARRAY_OF_MAPS(lru_mapping, "inner_0", {ncpu});'
        insert, doc = VIA_CPU, f"array of maps by CPU, {len(cpus)} x {per_cpu} common"
    elif name in ("percpu_list", "common_list", "key_only"):
        flags = "BPF_F_NO_COMMON_LRU" if name == "percpu_list" else "0"
        tables = TABLE.format(name="conns", n=entries, flags=flags)
        insert = "" if name == "key_only" else DIRECT
        doc = {"percpu_list": "BPF_F_NO_COMMON_LRU (xlb)", "common_list": "common LRU list",
               "key_only": "no insert (baseline)"}[name]
    else:
        raise ValueError(name)
    text = SOURCE.replace("TABLES", tables).replace("INSERT", insert)
    b = BPF(text=text.encode(), cflags=[f"-I{resources.data_dir('bpf')}"])
    v = Variant(name, doc, b, b.load_func(b"insert", BPF.XDP).fd)
    if name == "map_in_map":
        outer = b["lru_mapping"]
        for c in cpus:
            outer[ctypes.c_int(c)] = ctypes.c_int(b[f"inner_{c}"].get_fd())
            v.tables[c] = b[f"inner_{c}"]
        v.capacity = per_cpu * len(cpus)
    elif name != "key_only":
        v.tables = {c: b["conns"] for c in cpus}
        # a per-CPU list holds max_entries / possible CPUs; only the CPUs that write fill theirs
        v.capacity = entries if name == "common_list" else entries * len(cpus) // ncpu
    return v


def run_on(cpu: int, fd: int, repeat: int) -> int:
    """test_run on `cpu`: the kernel's mean ns per repetition."""
    os.sched_setaffinity(0, {cpu})
    action, _, ns = bpfsys.test_run(fd, PACKET, repeat=repeat)
    if action != XDP_PASS:
        raise SystemExit(f"XDP action {action} on CPU {cpu} (an insert failed?): bench is wrong")
    return ns


def _worker(cpu: int, fd: int, repeat: int, barrier: Any, out: Any) -> None:
    try:
        os.sched_setaffinity(0, {cpu})
        barrier.wait()
        action, _, ns = bpfsys.test_run(fd, PACKET, repeat=repeat)
        out.put((cpu, action, ns))
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        out.put((cpu, -1, repr(e)))


def run_all(cpus: list[int], fd: int, repeat: int) -> dict[int, int]:
    """test_run on every CPU at once (one pinned process each, started by one barrier)."""
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(len(cpus)), ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, args=(c, fd, repeat, barrier, out)) for c in cpus]
    for p in procs:
        p.start()
    got = [out.get() for _ in cpus]
    for p in procs:
        p.join()
    result = {}
    for cpu, action, ns in got:
        if action != XDP_PASS:
            raise SystemExit(f"CPU {cpu}: XDP action {action} ({ns}): bench is wrong")
        result[cpu] = int(ns)
    return result


def counted(v: Variant, cpus: list[int], repeat: int, run: Callable[..., Any], *args: Any
            ) -> Any:
    """`run(*args)`, checking the program ran `repeat` times on exactly `cpus`."""
    before = {c: v.seq(c) for c in range(bpfsys.possible_cpus())}
    result = run(*args)
    if v.name != "floor":
        for c, n in before.items():
            want = repeat if c in cpus else 0
            if v.seq(c) - n != want:
                raise SystemExit(f"{v.name}: CPU {c} ran {v.seq(c) - n} times, not {want}: "
                                 "bench is wrong")
    return result


def check_tables(v: Variant, cpus: list[int]) -> int:
    """The last keys each CPU inserted are in its table, and the tables are full."""
    for c in cpus:
        n = v.seq(c)
        for i in range(max(0, n - 8), n):
            key = S.FlowKey(sport=c, proto=6, family=S.XLB_AF_INET)
            key.src[0], key.src[1] = i & 0xFFFFFFFF, i >> 32
            key.dst[0] = int.from_bytes(bytes([10, 100, 0, 10]), sys.byteorder)
            key.dport = S.net_port(80)
            val = S.Conn()
            if not bpfsys.lookup(v.tables[c].get_fd(), key, val) or val.hash != i & 0xFFFFFFFF:
                raise SystemExit(f"{v.name}: CPU {c}'s insert #{i} is not in its table: "
                                 "bench is wrong")
    count = 0
    for t in {id(t): t for t in v.tables.values()}.values():
        for keys, _ in bpfsys.hash_batches(t.get_fd(), ctypes.sizeof(S.FlowKey),
                                           ctypes.sizeof(S.Conn)):
            count += len(keys)
    if count < v.capacity - LOCAL_FREE_SLACK * bpfsys.possible_cpus():
        raise SystemExit(f"{v.name}: {count} entries, the full tables hold {v.capacity}: "
                         "bench is wrong")
    return count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cpus = sorted(os.sched_getaffinity(0))
    ap.add_argument("--repeat", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--entries", type=int, default=INSTANCE.default("max_connections"),
                    help="connection-table entries (default: max_connections's default)")
    ap.add_argument("--cpu", type=int, default=cpus[-1], help="the CPU of the 1-CPU runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/lru.py needs root (BPF)")
    if args.cpu not in cpus:
        raise SystemExit(f"--cpu {args.cpu} is not in this process's CPUs {cpus}")
    if args.entries < 1024 * len(cpus) or args.repeat < 1000 or args.runs < 1:
        raise SystemExit("want --entries >= 1024 per CPU, --repeat >= 1000, --runs >= 1")

    names = ("floor", "key_only", "percpu_list", "common_list", "map_in_map")
    variants = [build(n, args.entries, cpus) for n in names]
    for v in variants:  # fill every table: each measured insert evicts
        if v.inserts:
            for c in cpus:
                counted(v, [c], args.entries, run_on, c, v.fd, args.entries)
    one: dict[str, list[float]] = {v.name: [] for v in variants}
    every: dict[str, list[float]] = {v.name: [] for v in variants}
    rate: dict[str, list[float]] = {v.name: [] for v in variants}
    per_cpu: dict[str, list[dict[int, int]]] = {v.name: [] for v in variants}
    try:
        for _ in range(args.runs):
            for v in variants:
                one[v.name].append(counted(v, [args.cpu], args.repeat, run_on, args.cpu, v.fd,
                                           args.repeat))
                ns = counted(v, cpus, args.repeat, run_all, cpus, v.fd, args.repeat)
                per_cpu[v.name].append(ns)
                every[v.name].append(statistics.fmean(ns.values()))
                rate[v.name].append(sum(1e3 / x for x in ns.values()))  # M per second
    finally:
        os.sched_setaffinity(0, set(cpus))
    med = {k: {v: float(statistics.median(xs)) for v, xs in d.items()}
           for k, d in (("one", one), ("every", every), ("rate", rate))}
    floor, base = med["one"]["floor"], med["one"]["key_only"]
    entries_held = {}
    for v in variants:
        if v.inserts:
            entries_held[v.name] = check_tables(v, cpus)
            if med["one"][v.name] - base < MIN_INSERT_NS:
                raise SystemExit(f"{v.name}: {med['one'][v.name]:.0f} ns per insert, key_only "
                                 f"{base:.0f}: no insert is that cheap: bench is wrong")

    doc = {"repeat": args.repeat, "runs": args.runs, "entries": args.entries,
           "cpu": args.cpu, "cpus": cpus,
           "one_cpu_ns": med["one"], "all_cpu_mean_ns": med["every"],
           "all_cpu_minserts_per_s": med["rate"],
           "all_cpu_ns_by_cpu": {k: [{str(c): n for c, n in r.items()} for r in rs]
                                 for k, rs in per_cpu.items()},
           "entries_held": entries_held}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"LRU hash insert, BPF_PROG_TEST_RUN, repeat {args.repeat}, median of {args.runs}, "
          f"--entries {args.entries}; 1 CPU = CPU {args.cpu}, all = CPUs {cpus}")
    print(f"{'variant':<13}{'1-CPU ns':>9}{'x floor':>8}{'net':>6}"
          f"{f'{len(cpus)}-CPU ns':>10}{'net':>6}{'Mins/s':>8}  layout")
    for v in variants:
        o, e = med["one"][v.name], med["every"][v.name]
        net_o = f"{o - base:>6.0f}" if v.inserts else f"{'':>6}"
        net_e = f"{e - med['every']['key_only']:>6.0f}" if v.inserts else f"{'':>6}"
        print(f"{v.name:<13}{o:>9.0f}{o / floor:>8.2f}{net_o}{e:>10.0f}{net_e}"
              f"{med['rate'][v.name]:>8.2f}  {v.doc}")
    print("net = minus key_only (the counter and key alone); N-CPU ns = mean over the CPUs "
          "running at once; Mins/s = million repetitions per second, all CPUs together")
    return 0


if __name__ == "__main__":
    sys.exit(main())
