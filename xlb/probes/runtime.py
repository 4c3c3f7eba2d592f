"""BPF program run time, bpftop-style: for every BPF program on the host, runs per
second, average ns per run and % of a CPU, from the kernel's run-time statistics.

The statistics cost a little on every program run, so they are on only while this
probe holds the BPF_ENABLE_STATS descriptor: detaching it, or the agent ending (even
killed), turns them off again. The kernel.bpf_stats_enabled sysctl is never touched
(it shows only what was written to it)."""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

from xlb.api import protocol as P
from xlb.dataplane import bpfsys
from xlb.errors import BpfError
from xlb.probes import kernel
from xlb.probes.base import Probe, Spec, Unavailable

log = logging.getLogger(__name__)

SPEC = Spec(
    name="runtime", kind="bpf_stats", target="BPF_ENABLE_STATS (BPF_STATS_RUN_TIME)",
    needs="the bpf() command BPF_ENABLE_STATS (kernel 5.8+, CAP_SYS_ADMIN)",
    feeds="kernel.programs, each probe's ns per run and CPU %, "
          "xlb_bpf_program_run_seconds_total",
    doc="every BPF program's runs/s, ns per run and CPU %, the probes' own cost included",
    default="on")


class RuntimeProbe(Probe):
    spec = SPEC

    def __init__(self) -> None:
        super().__init__()
        self.fd: int | None = None
        self.prev: dict[int, tuple[int, int]] = {}  # prog id -> (run_time_ns, run_cnt)
        self.prev_at = 0.0
        self.owners: dict[int, str] = {}

    def attach(self) -> None:
        try:
            self.fd = bpfsys.enable_stats()
        except BpfError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            extra = f" ({kernel.needs('CAP_SYS_ADMIN')})" if e.errno == errno.EPERM else ""
            raise Unavailable(f"attach failed: BPF_ENABLE_STATS: {why}{extra}") from None
        self.prev = {}

    def detach(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def events(self) -> int:
        return 0

    def read(self, now: float) -> dict[str, Any]:
        interval = now - self.prev_at
        cur: dict[int, tuple[int, int]] = {}
        out: list[P.Program] = []
        for pid in bpfsys.prog_ids():
            info = bpfsys.prog_info_by_id(pid)
            if info is None:
                continue
            t, n = int(info.run_time_ns), int(info.run_cnt)
            cur[pid] = (t, n)
            old = self.prev.get(pid)
            dt, dn = (t - old[0], n - old[1]) if old and t >= old[0] and n >= old[1] else (0, 0)
            out.append({"id": pid, "name": info.name.decode(errors="replace"),
                        "type": int(info.type), "owner": self.owners.get(pid, ""),
                        "runs_per_s": round(dn / interval, 1) if interval > 0 else 0.0,
                        "ns_per_run": round(dt / dn, 1) if dn else 0.0,
                        "cpu_percent": round(dt / interval / 1e7, 3) if interval > 0 else 0.0,
                        "runs": n, "run_time_ns": t})
        self.prev, self.prev_at = cur, now
        out.sort(key=lambda p: (-p["cpu_percent"], -p["runs_per_s"], p["id"]))
        return {"programs": out[:P.MAX_PROGRAMS]}
