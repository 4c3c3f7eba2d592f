"""What every probe is: a description (kind, target, needs, feeds) and a life (attach,
read each tick, detach). BccProbe is the common case: a C file of probes/ compiled by
BCC, whose tracepoint (or kprobe) functions attach when it loads."""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlb import resources
from xlb.dataplane import bpfsys
from xlb.errors import XlbError
from xlb.probes import kernel

log = logging.getLogger(__name__)


class Unavailable(XlbError):
    """This kernel cannot run the probe; the message says why, in plain words."""


@dataclass(frozen=True)
class Spec:
    """A probe as people read about it (`xlb probes`, the console's `?`)."""

    name: str
    kind: str          # tracepoint, raw_tracepoint, kprobe, bpf_stats
    target: str        # what it attaches to
    needs: str         # what it needs from the kernel
    feeds: str         # what it feeds (snapshot fields, metrics)
    doc: str           # one line: what it shows
    default: str       # on, off, auto (the [probes] setting's default)


class Probe:
    """One probe: attach() makes it run (Unavailable says why it cannot), read() gives its
    part of the snapshot's `kernel` document, detach() stops it. `kind` and `target`
    may differ from the spec's after a fallback; `note` says so."""

    spec: Spec

    def __init__(self) -> None:
        self.kind = self.spec.kind
        self.target = self.spec.target
        self.note = ""  # a fallback, or a part this kernel lacks

    def attach(self) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        raise NotImplementedError

    def read(self, now: float) -> dict[str, Any]:
        """This probe's fields of the snapshot's `kernel` document."""
        raise NotImplementedError

    def prog_fds(self) -> list[int]:
        """The fds of the BPF programs it runs (their run time is its cost)."""
        return []

    def events(self) -> int:
        """Events it counted since attached (events/s when run-time stats are off)."""
        return 0


class BccProbe(Probe):
    """A probe whose C file is compiled with BCC: loading it attaches its
    TRACEPOINT_PROBE (and kprobe__) functions; cleanup detaches them."""

    source = ""  # file name in probes/
    raw_capable = False  # its C has a raw tracepoint variant (-DRAW)

    def __init__(self) -> None:
        super().__init__()
        self.bpf: Any = None
        self.attached_at = 0.0

    def cflags(self) -> list[str]:
        """Per-probe compile flags (offsets and features of the running kernel)."""
        return []

    def tracepoints(self) -> list[str]:
        """The tracepoints it needs (category:name): all must exist."""
        return []

    def allowed(self) -> None:
        """Unavailable if this process may not load tracing programs or read tracefs:
        checked first, so that "forbidden" is never reported as "missing"."""
        refused = kernel.tracing_refused() or kernel.tracefs_refused()
        if refused:
            raise Unavailable(refused)

    def attach(self) -> None:
        self.allowed()
        root = kernel.tracefs()
        if root is None:
            raise Unavailable("tracefs is not mounted and could not be mounted (run the "
                              "agent in the host's root mount namespace, as root)")
        for tp in self.tracepoints():
            if kernel.event_dir(tp) is None:
                raise Unavailable(f"tracepoint {tp} does not exist in this kernel "
                                  f"(no {root}/events/{tp.replace(':', '/')})")
        flags = self.cflags()
        raw = self.raw_capable and self.use_raw()
        try:
            self._load([*flags, "-DRAW"] if raw else flags)
        except Unavailable as e:
            if not raw:
                raise
            raw = False
            self.note = f"the raw tracepoint did not load ({e}); using the tracepoint"
            self._load(flags)
        if self.raw_capable:
            self.kind = "raw_tracepoint" if raw else "tracepoint"
        self.attached_at = time.monotonic()
        self.reset()

    def use_raw(self) -> bool:
        """Whether to attach as a raw tracepoint: no trace record is formatted for it,
        so it costs the kernel less per event than a tracepoint."""
        return kernel.raw_tracepoints()

    def _load(self, flags: list[str]) -> None:
        from bcc import BPF  # only the agent compiles

        src = resources.data_dir("probes") / self.source
        try:
            self.bpf = BPF(src_file=str(src).encode(),
                           cflags=[f"-I{resources.data_dir('probes')}", "-w", *flags])
        except Exception as e:  # BCC raises Exception for compile and attach failures
            raise Unavailable(f"{self.source} did not load here: {e}") from e

    def reset(self) -> None:
        """Forget what was read before (a new attach starts from zero)."""

    def detach(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None

    def prog_fds(self) -> list[int]:
        if self.bpf is None:
            return []
        return [int(f.fd) for f in self.bpf.funcs.values()]

    def map_fd(self, name: str) -> int:
        return int(self.bpf[name.encode()].map_fd)


# -- reading maps in batches -------------------------------------------------------------
@functools.cache
def cpus() -> int:
    """Slots of a per-CPU map value (possible CPUs: fixed while the system runs)."""
    return bpfsys.possible_cpus()


def read_array(fd: int, entries: int, value_size: int, percpu: bool,
               start: int = 0) -> np.ndarray:
    """`entries` entries of an array map from index `start`, in one call: bytes of shape
    (entries, cpus, value_size) (cpus 1 for a plain array)."""
    n = cpus() if percpu else 1
    stride = (value_size + 7) // 8 * 8 if percpu else value_size
    keys = (ctypes.c_uint32 * entries)()
    raw = (ctypes.c_uint8 * (entries * n * stride))()
    got = bpfsys.lookup_batch(fd, keys, raw, entries, start)
    values = np.frombuffer(memoryview(raw).cast("B"), dtype=np.uint8)
    out = values.reshape(entries, n, stride)[:, :, :value_size]
    return out[:got]


def read_hash(fd: int, key_size: int, value_size: int, percpu: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """Every entry of a hash map in batches: (keys (n, key_size), values (n, cpus,
    value_size)) as bytes."""
    n = cpus() if percpu else 1
    stride = (value_size + 7) // 8 * 8 if percpu else value_size
    ks, vs = [], []
    for k, v in bpfsys.hash_batches(fd, key_size, stride * n, count=1024):
        ks.append(k)
        vs.append(v.reshape(len(v), n, stride)[:, :, :value_size])
    if not ks:
        return (np.zeros((0, key_size), dtype=np.uint8),
                np.zeros((0, n, value_size), dtype=np.uint8))
    return np.concatenate(ks), np.concatenate(vs)


def u64s(values: np.ndarray) -> np.ndarray:
    """Bytes (..., k*8) as uint64 (..., k)."""
    v = np.ascontiguousarray(values)
    return v.view(np.uint64).reshape(*v.shape[:-1], v.shape[-1] // 8)


def close_fd(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
