"""Kernel drops by reason (skb:kfree_skb), attributed to the instance's VIPs and
backends, with the last few dropped packets per reason as examples.

Reason names are the running kernel's (its tracepoint format, or BTF): reason numbers
change between kernels, so no table is compiled in. The sk_buff offsets the C needs
come from BTF too."""

from __future__ import annotations

import ctypes
import time
from typing import Any

import numpy as np

from xlb.agent.rates import counter_rates
from xlb.api import protocol as P
from xlb.dataplane import bpfsys
from xlb.probes import kernel
from xlb.probes.base import BccProbe, Spec, Unavailable, read_array, read_hash, u64s
from xlb.probes.layout import EXAMPLES, MAX_REASONS, MAX_WATCHED, TUPLE_SIZE, addr_key, packets

SPEC = Spec(
    name="drops", kind="tracepoint", target="skb:kfree_skb",
    needs="tracepoint skb:kfree_skb with a reason field; drop reason names from its "
          "format file or BTF; sk_buff offsets from BTF",
    feeds="kernel.drops (xlb drops, the Drops view), xlb_kernel_drops_total",
    doc="packets the kernel dropped, by the kernel's reason name, with examples",
    default="on")


SKB_WINDOW = 64  # bytes of sk_buff the C reads at once for its three fields, at most


class DropsProbe(BccProbe):
    spec = SPEC
    source = "drops.c"

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[int, str] = {}
        self.ids: dict[str, int] = {}        # watched address -> id
        self.prev: np.ndarray | None = None
        self.prev_at = 0.0
        self.since = 0.0
        self.example_cache: dict[int, tuple[int, list[P.Packet]]] = {}  # reason: (total, ...)

    def tracepoints(self) -> list[str]:
        return ["skb:kfree_skb"]

    def cflags(self) -> list[str]:
        names, where = kernel.drop_reasons()
        if not names:
            raise Unavailable(f"no drop reason names: found {where}")
        self.names = names
        b = kernel.btf()
        if b is None:
            raise Unavailable("no kernel BTF (/sys/kernel/btf/vmlinux): the sk_buff layout "
                              "of this kernel is unknown")
        try:
            off = [b.member_offset("sk_buff", m)
                   for m in ("head", "network_header", "transport_header")]
        except KeyError as e:
            raise Unavailable(f"BTF: {e.args[0]}") from None
        flags = [f"-DSKB_HEAD={off[0]}", f"-DSKB_NH={off[1]}", f"-DSKB_TH={off[2]}",
                 f"-DMAX_REASONS={MAX_REASONS}", f"-DEXAMPLES={EXAMPLES}",
                 f"-DMAX_WATCHED={MAX_WATCHED}"]
        start, end = min(off), max(off[0] + 8, off[1] + 2, off[2] + 2)  # head: a pointer
        if end - start <= SKB_WINDOW:  # the three fields in one read
            flags += [f"-DSKB_WIN={end - start}", f"-DSKB_WIN_AT={start}"]
        return flags

    def reset(self) -> None:
        self.prev, self.ids, self.example_cache = None, {}, {}
        self.since = time.time()

    def watch(self, addresses: set[str]) -> None:
        """Count drops from or to these addresses (the instance's VIPs and backends)."""
        if self.bpf is None:
            return
        fd = self.map_fd("watched")
        for gone in set(self.ids) - addresses:
            bpfsys.delete(fd, addr_key(gone))
            del self.ids[gone]
        for addr in sorted(addresses - set(self.ids))[: MAX_WATCHED - len(self.ids)]:
            self.ids[addr] = max(self.ids.values(), default=0) + 1
            bpfsys.update(fd, addr_key(addr), ctypes.c_uint32(self.ids[addr]))

    def events(self) -> int:
        return int(self.prev.sum()) if self.prev is not None else 0

    def read(self, now: float) -> dict[str, Any]:
        totals = u64s(read_array(self.map_fd("reasons"), MAX_REASONS, 8, True))[:, :, 0]
        totals = totals.sum(axis=1)
        rates = (counter_rates(self.prev, totals, now - self.prev_at)
                 if self.prev is not None and now > self.prev_at else np.zeros(len(totals)))
        self.prev, self.prev_at = totals, now
        by_addr: dict[int, dict[str, int]] = {}  # reason -> address -> drops (id 0: any)
        if self.ids:
            keys, vals = read_hash(self.map_fd("by_addr"), 8, 8, True)
            names = {i: a for a, i in self.ids.items()}
            for k, v in zip(keys.view(np.uint32).reshape(-1, 2), u64s(vals)[:, :, 0].sum(1),
                            strict=True):
                addr = names.get(int(k[1]), "" if k[1] == 0 else None)
                if addr is not None:
                    by_addr.setdefault(int(k[0]), {})[addr] = int(v)
        busy = np.flatnonzero(totals)
        out: list[P.KernelDrop] = []
        for r in busy:
            addrs = dict(by_addr.get(int(r), {}))
            lb = addrs.pop("", 0)
            out.append({"reason": self.name(int(r)), "code": int(r),
                        "per_s": round(float(rates[r]), 1), "total": int(totals[r]),
                        "lb_total": lb, "addresses": addrs,
                        "examples": self._examples(int(r), int(totals[r]))})
        out.sort(key=lambda d: (-d["per_s"], -d["total"]))
        return {"drops": out, "drops_since": self.since}

    def _examples(self, reason: int, total: int) -> list[P.Packet]:
        """A reason's examples, read again only when it counted new drops."""
        seen = self.example_cache.get(reason)
        if seen is not None and seen[0] == total:
            return seen[1]
        rows = read_array(self.map_fd("examples"), EXAMPLES, TUPLE_SIZE, False,
                          start=reason * EXAMPLES)
        found = packets(rows[:, 0, :])
        self.example_cache[reason] = (total, found)
        return found

    def name(self, code: int) -> str:
        if code == MAX_REASONS - 1 and code not in self.names:
            return "OTHER_SUBSYSTEM"
        return self.names.get(code, f"REASON_{code}")
