"""TCP resets sent and segments retransmitted by this host. Resets come from a kprobe
on tcp_v4_send_reset/tcp_v6_send_reset where the kernel has kprobes, else from the
tcp:tcp_send_reset tracepoint (which also gives the reset's reason and 5-tuple);
retransmits from tcp:tcp_retransmit_skb. This is the probe that shows the kprobe path
and its fallback: it says which one it uses and why."""

from __future__ import annotations

from typing import Any

import numpy as np

from xlb.agent.rates import counter_rates
from xlb.api import protocol as P
from xlb.probes import kernel
from xlb.probes.base import BccProbe, Spec, Unavailable, read_array, read_hash, u64s
from xlb.probes.layout import EXAMPLES, TUPLE_SIZE, packets

KPROBES = ("tcp_v4_send_reset", "tcp_v6_send_reset")
TRACEPOINT = "tcp:tcp_send_reset"
RETRANSMIT = "tcp:tcp_retransmit_skb"

SPEC = Spec(
    name="tcp", kind="kprobe", target="tcp_v4_send_reset, tcp_v6_send_reset; "
                                      "tcp:tcp_retransmit_skb",
    needs="kprobes (kprobe_events in tracefs) and the two symbols in /proc/kallsyms; "
          "else tracepoint tcp:tcp_send_reset; tracepoint tcp:tcp_retransmit_skb",
    feeds="kernel.tcp and kernel.tcp_examples, xlb_tcp_events_total",
    doc="TCP resets this host sent (and why) and segments it retransmitted",
    default="auto")

KINDS: tuple[str, str] = ("reset", "retransmit")


def kprobe_problem() -> str:
    """Why the kprobes cannot attach here ("" if they can)."""
    ok, why = kernel.has_kprobes()
    if not ok:
        return why
    missing = [s for s in KPROBES if not kernel.kernel_symbol(s)]
    if missing:
        return f"{', '.join(missing)} not in /proc/kallsyms"
    return ""


class TcpProbe(BccProbe):
    spec = SPEC
    source = "tcp.c"

    def __init__(self, prefer_kprobes: bool = True) -> None:
        super().__init__()
        self.prefer_kprobes = prefer_kprobes
        self.use_kprobes = False
        self.reasons: dict[int, str] = {}
        self.prev: dict[tuple[int, int], int] = {}
        self.prev_at = 0.0

    def tracepoints(self) -> list[str]:
        return [RETRANSMIT] + ([] if self.use_kprobes else [TRACEPOINT])

    def attach(self) -> None:
        self.allowed()
        why = kprobe_problem() if self.prefer_kprobes else "kprobes not wanted"
        self.use_kprobes = not why
        if self.use_kprobes:
            self.kind, self.target, self.note = "kprobe", SPEC.target, ""
        else:
            if kernel.event_dir(TRACEPOINT) is None:
                raise Unavailable(f"kprobe {KPROBES[0]} unavailable: {why}; and no "
                                  f"tracepoint {TRACEPOINT} to fall back on")
            self.kind, self.target = "tracepoint", f"{TRACEPOINT}, {RETRANSMIT}"
            self.note = (f"kprobe {KPROBES[0]} unavailable: {why}; using tracepoint "
                         f"{TRACEPOINT}")
        try:
            super().attach()
        except Unavailable:
            if not self.use_kprobes:
                raise
            # the kprobes were there but did not attach: the tracepoint may
            self.prefer_kprobes = False
            self.attach()
            self.prefer_kprobes = True

    def cflags(self) -> list[str]:
        if self.use_kprobes:
            return ["-DUSE_KPROBES", f"-DEXAMPLES={EXAMPLES}"]
        self.reasons = kernel.symbolic(TRACEPOINT, "reason")
        return ([f"-DEXAMPLES={EXAMPLES}"] + (["-DRST_REASON"] if self.reasons else []))

    def reset(self) -> None:
        self.prev = {}

    def events(self) -> int:
        return sum(self.prev.values())

    def read(self, now: float) -> dict[str, Any]:
        keys, vals = read_hash(self.map_fd("tcp_events"), 8, 8, True)
        totals = u64s(vals)[:, :, 0].sum(axis=1) if len(keys) else np.zeros(0, np.uint64)
        interval = now - self.prev_at
        cur: dict[tuple[int, int], int] = {}
        out: list[P.TcpEvent] = []
        for k, total in zip(keys.view(np.uint32).reshape(-1, 2), totals, strict=True):
            kind, reason = int(k[0]), int(k[1])
            old = self.prev.get((kind, reason))
            rate = (float(counter_rates(np.array([old]), np.array([total]), interval)[0])
                    if old is not None and interval > 0 else 0.0)
            cur[(kind, reason)] = int(total)
            out.append({"kind": "reset" if kind == 0 else "retransmit",
                        "reason": self.reasons.get(reason, "") if kind == 0 else "",
                        "per_s": round(rate, 1), "total": int(total)})
        self.prev, self.prev_at = cur, now
        rows = read_array(self.map_fd("tcp_examples"), 2 * EXAMPLES, TUPLE_SIZE, False)
        out.sort(key=lambda e: (e["kind"], -e["total"]))
        return {"tcp": out, "tcp_examples": packets(rows[:, 0, :])}
