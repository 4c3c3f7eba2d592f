"""NET_RX softirq time per CPU (irq:softirq_entry/softirq_exit): the % of each CPU
spent receiving packets (XDP in native mode runs there too). The Overview uses it for
its per-CPU panel when attached (psutil's softirq figure otherwise)."""

from __future__ import annotations

from typing import Any

import numpy as np

from xlb.agent.rates import counter_rates
from xlb.api import protocol as P
from xlb.probes.base import BccProbe, Spec, read_array, u64s

SPEC = Spec(
    name="softirq", kind="raw_tracepoint", target="irq:softirq_entry, irq:softirq_exit",
    needs="tracepoints irq:softirq_entry and irq:softirq_exit (raw where the kernel can)",
    feeds="kernel.softirq (the Overview's per-CPU panel), "
          "xlb_net_rx_softirq_seconds_total",
    doc="% of each CPU spent in NET_RX softirq (receiving packets)",
    default="on")


class SoftirqProbe(BccProbe):
    spec = SPEC
    source = "softirq.c"
    raw_capable = True

    def __init__(self) -> None:
        super().__init__()
        self.prev: np.ndarray | None = None
        self.prev_at = 0.0

    def tracepoints(self) -> list[str]:
        return ["irq:softirq_entry", "irq:softirq_exit"]

    def reset(self) -> None:
        self.prev = None

    def events(self) -> int:
        return int(self.prev[:, 1].sum()) if self.prev is not None else 0

    def read(self, now: float) -> dict[str, Any]:
        per_cpu = u64s(read_array(self.map_fd("net_rx"), 1, 24, True))[0][:, :2]  # ns, runs
        interval = now - self.prev_at
        rates = (counter_rates(self.prev, per_cpu, interval)
                 if self.prev is not None and interval > 0 else np.zeros(per_cpu.shape))
        self.prev, self.prev_at = per_cpu.copy(), now
        online = _online()
        out: list[P.SoftirqCpu] = [
            {"cpu": c, "percent": round(min(100.0, float(rates[c, 0]) / 1e7), 2),
             "runs_per_s": round(float(rates[c, 1]), 1),
             "seconds": round(float(per_cpu[c, 0]) / 1e9, 6)}
            for c in range(len(per_cpu)) if c in online]
        return {"softirq": out}


def _online() -> set[int]:
    try:
        with open("/sys/devices/system/cpu/online") as f:
            text = f.read().strip()
    except OSError:
        return set(range(1024))
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out
