"""XDP exceptions and redirect errors (xdp:xdp_exception, xdp:xdp_redirect_err, and
xdp:xdp_redirect_map_err where the kernel has it): a count per program, interface and
action. Interface indexes are per network namespace: the program id says which program
it was, and the interface is found where that program is attached (in the background:
the tick never waits for netlink)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np

from xlb.agent.rates import counter_rates
from xlb.api import protocol as P
from xlb.dataplane import bpfsys
from xlb.probes import kernel
from xlb.probes.base import BccProbe, Spec, read_hash, u64s

log = logging.getLogger(__name__)

SPEC = Spec(
    name="xdp", kind="tracepoint",
    target="xdp:xdp_exception, xdp:xdp_redirect_err, xdp:xdp_redirect_map_err",
    needs="tracepoints xdp:xdp_exception and xdp:xdp_redirect_err (xdp_redirect_map_err "
          "where the kernel has it)",
    feeds="kernel.xdp_errors (xlb drops, the Drops view), xlb_xdp_errors_total",
    doc="XDP programs that aborted, returned a bad action or failed to redirect",
    default="on")

KINDS: tuple[P.XdpErrorKind, ...] = ("exception", "redirect_error", "redirect_map_error")
ACTIONS = {0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}
KEY_SIZE = 16


class XdpProbe(BccProbe):
    spec = SPEC
    source = "xdp.c"

    def __init__(self) -> None:
        super().__init__()
        self.prev: dict[bytes, int] = {}
        self.prev_at = 0.0
        self.known: dict[int, str] = {}   # prog id -> "interface" (given by the agent)
        self.names: dict[tuple[int, int], str] = {}  # (prog id, ifindex) -> interface
        self.prog_names: dict[int, str] = {}
        self._looking: set[tuple[int, int]] = set()
        self._lock = threading.Lock()

    def tracepoints(self) -> list[str]:
        return ["xdp:xdp_exception", "xdp:xdp_redirect_err"]

    def cflags(self) -> list[str]:
        if kernel.event_dir("xdp:xdp_redirect_map_err") is not None:
            self.target, self.note = SPEC.target, ""
            return ["-DHAVE_REDIRECT_MAP_ERR"]
        self.target = "xdp:xdp_exception, xdp:xdp_redirect_err"
        self.note = ("this kernel has no xdp:xdp_redirect_map_err tracepoint: map redirect "
                     "errors count as xdp_redirect_err")
        return []

    def reset(self) -> None:
        self.prev = {}

    def events(self) -> int:
        return sum(self.prev.values())

    def read(self, now: float) -> dict[str, Any]:
        keys, vals = read_hash(self.map_fd("xdp_errors"), KEY_SIZE, 8, True)
        totals = u64s(vals)[:, :, 0].sum(axis=1) if len(keys) else np.zeros(0, np.uint64)
        out: list[P.XdpError] = []
        interval = now - self.prev_at
        cur: dict[bytes, int] = {}
        for k, total in zip(keys, totals, strict=True):
            raw = bytes(k)
            prog_id, ifindex, act, kind = np.frombuffer(raw, dtype=np.int32)
            old = self.prev.get(raw)
            rate = (float(counter_rates(np.array([old]), np.array([total]), interval)[0])
                    if old is not None and interval > 0 else 0.0)
            cur[raw] = int(total)
            out.append({"kind": KINDS[min(int(kind), 2)], "prog_id": int(prog_id),
                        "program": self._program(int(prog_id)),
                        "interface": self._interface(int(prog_id), int(ifindex)),
                        "action": ACTIONS.get(int(act) & 0xFFFFFFFF, str(int(act))),
                        "per_s": round(rate, 1), "total": int(total)})
        self.prev, self.prev_at = cur, now
        out.sort(key=lambda d: (-d["per_s"], -d["total"]))
        return {"xdp_errors": out}

    def _program(self, prog_id: int) -> str:
        if prog_id not in self.prog_names:
            info = bpfsys.prog_info_by_id(prog_id) if prog_id > 0 else None
            self.prog_names[prog_id] = info.name.decode(errors="replace") if info else ""
        return self.prog_names[prog_id]

    def _interface(self, prog_id: int, ifindex: int) -> str:
        if prog_id in self.known:
            return self.known[prog_id]
        with self._lock:
            name = self.names.get((prog_id, ifindex))
            if name is None and (prog_id, ifindex) not in self._looking:
                self._looking.add((prog_id, ifindex))
                threading.Thread(target=self._look, args=(prog_id, ifindex), daemon=True,
                                 name="xlb-probe-ifname").start()
        return name or f"ifindex {ifindex}"

    def _look(self, prog_id: int, ifindex: int) -> None:
        """Find the interface with this index that has this program attached, in this
        namespace or a named one."""
        found = find_interface(prog_id, ifindex)
        with self._lock:
            self.names[(prog_id, ifindex)] = found or f"ifindex {ifindex}"


def find_interface(prog_id: int, ifindex: int) -> str | None:
    from pyroute2 import IPRoute, NetNS

    try:
        spaces = [""] + sorted(os.listdir("/run/netns"))
    except OSError:
        spaces = [""]
    for ns in spaces:
        try:
            with (NetNS(ns) if ns else IPRoute()) as ipr:
                links = ipr.get_links(ifindex)
        except Exception:  # no such index there, or the namespace went away
            continue
        for link in links:
            name = link.get_attr("IFLA_IFNAME")
            xdp = link.get_attr("IFLA_XDP")
            attached = xdp.get_attr("IFLA_XDP_PROG_ID") if xdp is not None else 0
            label = f"{name}@{ns}" if ns else name
            if attached == prog_id:
                return str(label)
    return None
