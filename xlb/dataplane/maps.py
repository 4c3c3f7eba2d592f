"""Typed access to one instance's pinned maps (bpffs), without BCC.

Opening checks each map's key/value sizes against the ctypes mirrors, so a
layout change is refused with a clear message rather than misread.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlb.dataplane import bpfsys
from xlb.dataplane import structs as S
from xlb.errors import LayoutError, NotLoadedError
from xlb.paths import PIN_ROOT


@dataclass(frozen=True)
class MapSpec:
    key: Any    # ctypes types; Any because mypy cannot follow ctypes' metaclass arithmetic
    value: Any
    percpu: bool = False


# pin name -> layout; the names match the BPF_TABLE_PINNED paths in bpf/xlb.c
SPECS: dict[str, MapSpec] = {
    "meta": MapSpec(ctypes.c_uint32, S.Meta),
    "ctl": MapSpec(ctypes.c_uint32, S.LbConfig),
    "vips": MapSpec(S.VipKey, S.VipMeta),
    "vip_addrs": MapSpec(S.AddrKey, ctypes.c_uint32),
    "vip_index": MapSpec(ctypes.c_uint32, S.VipSlot),
    "rings": MapSpec(ctypes.c_uint32, ctypes.c_uint32),
    "backends": MapSpec(ctypes.c_uint32, S.Backend),
    "conns": MapSpec(S.FlowKey, S.Conn),
    "queue_stats": MapSpec(ctypes.c_uint32, S.QueueStats, percpu=True),
    "vip_stats": MapSpec(ctypes.c_uint32, S.Traffic, percpu=True),
    "backend_stats": MapSpec(ctypes.c_uint32, S.BackendStats, percpu=True),
    "reason_stats": MapSpec(ctypes.c_uint32, S.Traffic, percpu=True),
    "flow_guard": MapSpec(ctypes.c_uint32, S.FlowGuard, percpu=True),
    "miss_stats": MapSpec(ctypes.c_uint32, S.Traffic, percpu=True),
    "trace_stats": MapSpec(ctypes.c_uint32, S.TraceStats, percpu=True),
    "snat_rev": MapSpec(S.SnatKey, S.SnatEntry),
    "snat_stats": MapSpec(ctypes.c_uint32, S.SnatStats, percpu=True),
}
# the flow-trace ring buffer: pinned beside the maps above, but no key/value map
# (xlb/dataplane/trace.py reads it)
TRACE_EVENTS = "trace_events"
# maps a later xlb added without changing the layout of the others: pins made before them
# are adopted, and loading the program creates what is missing (BPF_TABLE_PINNED)
ADDED_LATER: frozenset[str] = frozenset({"miss_stats", "vip_index"})


def pin_dir(instance: str, root: str = PIN_ROOT) -> str:
    return os.path.join(root, instance)


class PinnedMap:
    """One pinned map: get/set/delete/iterate with the mirror types."""

    def __init__(self, path: str, spec: MapSpec):
        self.path = path
        self.spec = spec
        self.fd = bpfsys.obj_get(path)
        info = bpfsys.map_info(self.fd)
        self.max_entries = int(info.max_entries)
        want = (ctypes.sizeof(spec.key), ctypes.sizeof(spec.value))
        have = (int(info.key_size), int(info.value_size))
        if want != have:
            os.close(self.fd)
            raise LayoutError(
                f"{path}: key/value sizes {have} differ from this xlb's {want}; "
                "the pinned state was made by another version: unload it with --remove-pins")
        self.ncpu = bpfsys.possible_cpus() if spec.percpu else 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _value_buf(self) -> ctypes.Array:  # type: ignore[type-arg]
        return (self.spec.value * self.ncpu)()

    def get(self, key: object) -> Any:
        val = self.spec.value()
        return val if bpfsys.lookup(self.fd, self._key(key), val) else None  # type: ignore[arg-type]

    def set(self, key: object, value: object) -> None:
        bpfsys.update(self.fd, self._key(key), value)

    def delete(self, key: object) -> bool:
        return bpfsys.delete(self.fd, self._key(key))

    def keys(self) -> list:
        return list(bpfsys.keys(self.fd, self.spec.key))

    def items(self) -> list[tuple[object, object]]:
        out = []
        for k in self.keys():
            v = self.get(k)
            if v is not None:
                out.append((k, v))
        return out

    def _key(self, key: object) -> object:
        if isinstance(key, int):
            return self.spec.key(key)
        return key

    # -- arrays ----------------------------------------------------------------
    def write_u32_range(self, start: int, values: np.ndarray) -> None:
        """Write consecutive u32 entries (a Maglev ring) in one batch call."""
        self.write_rows(start, np.ascontiguousarray(values, dtype=np.uint32))

    def write_rows(self, start: int, rows: np.ndarray) -> None:
        """Write consecutive entries from `start` in one batch call: one row of `rows`
        (contiguous, each row exactly one value's bytes) per entry."""
        n = len(rows)
        keys = np.arange(start, start + n, dtype=np.uint32)
        bpfsys.update_batch(self.fd, _np_ptr(keys), _np_ptr(np.ascontiguousarray(rows)), n)

    def read_u32_range(self, start: int, count: int) -> np.ndarray:
        keys = np.zeros(count, dtype=np.uint32)
        out = np.zeros(count, dtype=np.uint32)
        got = bpfsys.lookup_batch(self.fd, _np_ptr(keys), _np_ptr(out), count, start)
        return out[:got]

    def read_structs(self) -> ctypes.Array:  # type: ignore[type-arg]
        """Every entry of a (non-per-CPU) array map of structs, in one call."""
        n = self.max_entries
        keys = (ctypes.c_uint32 * n)()
        vals = (self.spec.value * n)()
        got = bpfsys.lookup_batch(self.fd, keys, vals, n)
        return vals[:got]  # type: ignore[no-any-return]

    def read_rows(self) -> np.ndarray:
        """Every entry of a (non-per-CPU) array map as rows of bytes, in one call."""
        n, size = self.max_entries, ctypes.sizeof(self.spec.value)
        keys = np.zeros(n, dtype=np.uint32)
        vals = np.zeros(n * size, dtype=np.uint8)
        got = bpfsys.lookup_batch(self.fd, _np_ptr(keys), _np_ptr(vals), n)
        return vals.reshape(n, size)[:got]

    def read_array(self) -> np.ndarray:
        """Every entry of an array map as rows of u64 fields (per-CPU summed).

        One batch syscall for the whole map: the agent's tick cost depends on
        the number of queues/VIPs/backends, never on the number of flows.
        """
        return self.read_percpu().sum(axis=1)

    def read_percpu(self, rows: int | None = None) -> np.ndarray:
        """Every entry (or the first `rows`) as (entries, cpus, u64 fields), in one batch
        syscall.

        For fields that must not be summed blindly (backend_stats' active-flow
        epochs); a map that is not per-CPU reads as one CPU.
        """
        n = self.max_entries if rows is None else max(1, min(rows, self.max_entries))
        fields = ctypes.sizeof(self.spec.value) // 8
        keys = np.zeros(n, dtype=np.uint32)
        vals = np.zeros(n * self.ncpu * fields, dtype=np.uint64)
        got = bpfsys.lookup_batch(self.fd, _np_ptr(keys), _np_ptr(vals), n)
        return vals.reshape(n, self.ncpu, fields)[:got]

    def zero(self, index: int) -> None:
        """Reset one entry (per-CPU: every CPU's copy), e.g. counters of a reused id."""
        bpfsys.update(self.fd, self._key(index), self._value_buf())


def _np_ptr(arr: np.ndarray) -> ctypes.c_char:
    return ctypes.c_char.from_address(arr.ctypes.data)


class InstanceMaps:
    """All pinned maps of one instance, opened together."""

    def __init__(self, instance: str, root: str = PIN_ROOT):
        self.instance = instance
        self.dir = pin_dir(instance, root)
        if not os.path.isdir(self.dir):
            raise NotLoadedError(f"no data plane pinned for instance {instance!r} ({self.dir})")
        self.maps: dict[str, PinnedMap] = {}
        try:
            for name, spec in SPECS.items():
                self.maps[name] = PinnedMap(os.path.join(self.dir, name), spec)
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str) -> PinnedMap:
        return self.maps[name]

    def close(self) -> None:
        for m in self.maps.values():
            m.close()
        self.maps.clear()

    def __enter__(self) -> InstanceMaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def meta(self) -> S.Meta:
        m = self["meta"].get(0)
        assert isinstance(m, S.Meta)
        return m
