"""NAPI polls per queue (napi:napi_poll): per NAPI instance (a device's RX queue) and
CPU, polls per second, packets per poll and the share of polls that used their whole
budget: a queue that keeps exhausting its budget is saturated."""

from __future__ import annotations

from typing import Any

import numpy as np

from xlb.api import protocol as P
from xlb.probes import kernel
from xlb.probes.base import BccProbe, Spec, read_hash

SPEC = Spec(
    name="napi", kind="raw_tracepoint", target="napi:napi_poll",
    needs="tracepoint napi:napi_poll (raw, with napi_struct and net_device offsets from "
          "BTF, where the kernel can)",
    feeds="kernel.napi (the Overview's per-queue budget marks), xlb_napi_polls_total",
    doc="NAPI polls per queue and CPU: packets per poll, budget exhausted",
    default="on")

KEY_SIZE, VALUE_SIZE = 16, 48


class NapiProbe(BccProbe):
    spec = SPEC
    source = "napi.c"
    raw_capable = True

    def __init__(self) -> None:
        super().__init__()
        self.prev: dict[bytes, np.ndarray] = {}
        self.prev_at = 0.0
        self.offsets: dict[str, int] = {}

    def tracepoints(self) -> list[str]:
        return ["napi:napi_poll"]

    def cflags(self) -> list[str]:
        self.offsets = {"NAPI_ID": _offset("napi_struct", "napi_id"),
                        "NAPI_DEV": _offset("napi_struct", "dev"),
                        "DEV_NAME": _offset("net_device", "name")}
        return [f"-D{k}={v}" for k, v in self.offsets.items()]

    def use_raw(self) -> bool:
        """Raw only if BTF says where the device's name is (the raw tracepoint gets the
        napi_struct, not the formatted record with the name)."""
        return (super().use_raw() and self.offsets["NAPI_DEV"] >= 0
                and self.offsets["DEV_NAME"] >= 0)

    def reset(self) -> None:
        self.prev = {}

    def events(self) -> int:
        return int(sum(int(v[0]) for v in self.prev.values()))

    def read(self, now: float) -> dict[str, Any]:
        keys, vals = read_hash(self.map_fd("napi"), KEY_SIZE, VALUE_SIZE, False)
        interval = now - self.prev_at
        cur: dict[bytes, np.ndarray] = {}
        out: list[P.NapiQueue] = []
        for k, v in zip(keys, vals[:, 0, :], strict=True):
            counts = np.frombuffer(bytes(v[:24]), dtype=np.uint64)  # polls, work, full
            device = bytes(v[24:40]).split(b"\0", 1)[0].decode(errors="replace")
            napi_id = int(np.frombuffer(bytes(v[40:44]), dtype=np.uint32)[0])
            cpu = int(np.frombuffer(bytes(k[8:12]), dtype=np.uint32)[0])
            old = self.prev.get(bytes(k))
            d = (counts - old) if old is not None and (counts >= old).all() else None
            cur[bytes(k)] = counts
            polls, work, full = (float(x) for x in d) if d is not None else (0.0, 0.0, 0.0)
            out.append({"device": device, "napi_id": napi_id, "cpu": cpu,
                        "polls_per_s": round(polls / interval, 1) if interval > 0 else 0.0,
                        "packets_per_poll": round(work / polls, 2) if polls else 0.0,
                        "budget_exhausted": round(full / polls, 4) if polls else 0.0,
                        "polls": int(counts[0]), "packets": int(counts[1]),
                        "exhausted": int(counts[2])})
        self.prev, self.prev_at = cur, now
        out.sort(key=lambda q: (q["device"], q["cpu"]))
        return {"napi": out}


def _offset(struct: str, member: str) -> int:
    """A member's offset from the running kernel's BTF, -1 if unknown."""
    b = kernel.btf()
    try:
        return b.member_offset(struct, member) if b is not None else -1
    except KeyError:
        return -1
