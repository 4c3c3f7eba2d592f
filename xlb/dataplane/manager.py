"""The data plane manager: applies a Config to an instance's pinned maps.

apply() is all-or-nothing. Everything is validated and computed first
(backend ids, VIP ids, Maglev rings); then maps are written in an order
where the data plane never sees a half-made VIP (rings before the VIP entry
that points at them, removals last), and every write records how to undo
it. Any failure undoes what was written and leaves the previous state.

A VIP whose pool (the backends that take new flows, with their weights and ids) is
the one last applied (applied.json records it) costs nothing: its ring is neither
rebuilt nor read back, so an apply costs a ring per VIP that changed, not per VIP.
Rings are the slow part (a Maglev build and a 65537-entry map write each); `stage()`
writes them ahead into free slots, for a caller that wants to hold its own lock only
while the VIP entries are switched over.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlb import statefile
from xlb.dataplane import bpfsys, maglev, vipindex
from xlb.dataplane import structs as S
from xlb.dataplane.config import Config, VipConfig, vip_label
from xlb.dataplane.loader import Geometry, geometry_from_pins
from xlb.dataplane.maps import InstanceMaps, PinnedMap
from xlb.dataplane.structs import IPAddress
from xlb.dataplane.trace import check_config as check_trace_config
from xlb.errors import ApplyError
from xlb.paths import PIN_ROOT, RUN_ROOT, run_dir

PROTOCOLS = {"tcp": 6, "udp": 17}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}

Pool = tuple[tuple[S.IPAddress, int], ...]
"""A VIP's backends that take new flows, with their weights, in config order."""


def pool_of(vip: VipConfig) -> Pool:
    """All a VIP's Maglev ring depends on. Drained and weight-0 backends claim no slot, so
    leaving them out gives the same ring, and draining, removing or invalidating such a
    backend never makes a VIP's ring change."""
    return tuple((b.address, b.effective_weight) for b in vip.backends if b.effective_weight)


def geometry_of(cfg: Config) -> Geometry:
    i = cfg.instance
    return Geometry(i.ring_size, i.max_vips, i.max_backends, i.max_connections, i.snat_entries)


def vip_key(vip: VipConfig) -> S.VipKey:
    return S.VipKey(addr=S.pack_addr(vip.address), port=S.net_port(vip.port),
                    proto=PROTOCOLS[vip.protocol], family=S.family_of(vip.address))


def addr_key(addr: S.IPAddress) -> S.AddrKey:
    return S.AddrKey(addr=S.pack_addr(addr), family=S.family_of(addr))


@functools.lru_cache(maxsize=1 << 16)
def _backend_row(addr: S.IPAddress) -> bytes:
    """The backends map's row of a valid backend at `addr` (applies compare thousands)."""
    return bytes(S.Backend(addr=S.pack_addr(addr), family=S.family_of(addr),
                           flags=S.XLB_BACKEND_VALID))


_ROW_ADDRESS = S.Backend.flags.offset  # a row's address and family, before its flags


def _row_address(row: bytes) -> S.IPAddress:
    b = S.Backend.from_buffer_copy(row)
    return S.unpack_addr(b.addr, b.family)


def _kt(key: ctypes.Structure) -> bytes:
    """Hashable identity of a map key."""
    return bytes(key)


def new_flow_limit(max_connections: int, turnover: float, cpus: int) -> int:
    """Connection entries one CPU may make per second (0: no limit).

    The table's LRU lists are per CPU (each holds max_connections / possible CPUs), and
    so is the limit: each CPU's share must last `turnover` seconds of new flows."""
    if turnover <= 0:
        return 0
    return max(1, min(0xFFFFFFFF, int(max_connections / cpus / turnover)))


VIP_FILTER_MAX_BITS = 16  # more set: 0, no filter (most other addresses would pass it)


def vip_filter(addresses: Iterable[IPAddress]) -> int:
    """ctl's vip_filter: bit vip_filter_bit(a) of bpf/xlb.c set for each VIP address, so
    the data plane passes most other destinations (the host's own traffic, SNAT replies)
    without a map lookup. 0 (no filter: every destination is looked up) when more than
    VIP_FILTER_MAX_BITS bits would be set."""
    f = 0
    for a in addresses:
        w = S.pack_addr(a)
        f |= 1 << ((((w[0] ^ w[1] ^ w[2] ^ w[3]) * 0x9E3779B1) & 0xFFFFFFFF) >> 27)
    return f if bin(f).count("1") <= VIP_FILTER_MAX_BITS else 0


def lb_config(cfg: Config) -> S.LbConfig:
    i = cfg.instance
    c = S.LbConfig(mtu=i.mtu, new_flow_limit=new_flow_limit(
        i.max_connections, i.flow_table_turnover, bpfsys.possible_cpus()))
    c.vip_filter = vip_filter(v.address for v in cfg.vips)
    if i.nexthop_mac:
        c.nexthop_mac[:] = list(i.nexthop_mac)
        c.has_nexthop_mac = 1
    c.src4_net = S.pack_addr(i.encap_source_v4.network_address)[0]
    c.src4_mask = S.pack_addr(i.encap_source_v4.hostmask)[0]
    c.src6_net[:] = S.pack_addr(i.encap_source_v6.network_address)
    c.src6_mask[:] = S.pack_addr(i.encap_source_v6.hostmask)
    # SNAT pools, stored like the encap source (net, host bits); ports in host order
    if i.snat_pool_v4 is not None:
        c.has_snat4 = 1
        c.snat4_net = S.pack_addr(i.snat_pool_v4.network_address)[0]
        c.snat4_mask = S.pack_addr(i.snat_pool_v4.hostmask)[0]
    if i.snat_pool_v6 is not None:
        c.has_snat6 = 1
        c.snat6_net[:] = S.pack_addr(i.snat_pool_v6.network_address)
        c.snat6_mask[:] = S.pack_addr(i.snat_pool_v6.hostmask)
    c.snat_port_min, c.snat_port_max = i.snat_port_min, i.snat_port_max
    c.snat_tcp_timeout = i.snat_tcp_timeout
    c.snat_udp_timeout = i.snat_udp_timeout
    c.snat_close_timeout = i.snat_close_timeout
    return c


def vip_flags(vip: VipConfig) -> int:
    """xlb_vip_meta.flags of a VIP: its mode for new flows."""
    return S.XLB_VIP_F_SNAT if vip.mode == "snat" else 0


@dataclass
class ApplyResult:
    vips_added: list[str] = field(default_factory=list)
    vips_removed: list[str] = field(default_factory=list)
    vips_changed: list[str] = field(default_factory=list)
    backends_added: list[str] = field(default_factory=list)
    backends_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # the layout as applied, for readers that must not read the maps back: backend
    # address -> id, VIP label -> counter row, and the rings written (VIP label -> ring)
    backend_ids: dict[str, int] = field(default_factory=dict, repr=False)
    vip_ids: dict[str, int] = field(default_factory=dict, repr=False)
    rings: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


@dataclass
class Counters:
    """Cumulative counters (per-CPU summed) as read at one instant."""

    at: float
    queues: np.ndarray    # (queues, 2 + actions): packets, bytes, aborted..redirect
    vips: np.ndarray      # (max_vips, 2): packets, bytes
    backends: np.ndarray  # (max_backends, 3): packets, bytes, new connections
    reasons: np.ndarray   # (reasons, 2): packets, bytes
    # (XLB_MAX_MISSES, 2): connection-table misses by S.Miss, packets and bytes
    misses: np.ndarray = field(default_factory=lambda: np.zeros((S.XLB_MAX_MISSES, 2),
                                                                  dtype=np.uint64))
    # (max_backends,): distinct flows that sent a packet in epoch `active_epoch`
    # (by default the last complete one); a gauge, not a cumulative counter
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    active_epoch: int = -1
    # (max_vips, 6): SNAT per VIP, struct xlb_snat_stats' columns (packets, bytes,
    # reply_packets, reply_bytes, translations, no_port), summed over CPUs
    snat: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), dtype=np.uint64))


# columns of struct xlb_backend_stats read as u64 words
_ACTIVE = S.BackendStats.active.offset // 8              # active[0], active[1]
_ACTIVE_EPOCH = S.BackendStats.active_epoch.offset // 8  # active_epoch[0], active_epoch[1]
_BACKEND_SUMMED = _ACTIVE                                # packets, bytes, new_conns
_CONN_DTYPE = np.dtype([("backend_id", "<u4"), ("vip_id", "<u4"), ("last_seen_ns", "<u8"),
                        ("snat_addr", "<u4", (4,)), ("snat_port", "<u2"), ("mode", "u1"),
                        ("pad", "u1"), ("pad2", "<u4")])
assert _CONN_DTYPE.itemsize == ctypes.sizeof(S.Conn)


def activity_epoch(monotonic_ns: int) -> int:
    """The data plane's activity epoch at a CLOCK_MONOTONIC time (what
    bpf_ktime_get_coarse_ns() reads, give or take a jiffy)."""
    return monotonic_ns >> S.XLB_ACTIVE_EPOCH_SHIFT


def active_flows(rows: np.ndarray, epoch: int) -> np.ndarray:
    """Distinct flows per backend in `epoch`, from per-CPU backend_stats rows.

    rows: (backends, cpus, u64 words of struct xlb_backend_stats). Each CPU
    counts in slot epoch & 1 and records the epoch it counts for; a CPU whose
    slot holds another epoch (it saw no new or returning flow then) is stale
    and contributes nothing. O(backends x cpus), whatever the number of flows.
    """
    slot = epoch & 1
    counts = rows[:, :, _ACTIVE + slot]
    fresh = rows[:, :, _ACTIVE_EPOCH + slot] == np.uint64(epoch)
    return np.where(fresh, counts, np.uint64(0)).sum(axis=1, dtype=np.uint64)


class _Undo:
    """Writes that remember how to take themselves back."""

    def __init__(self) -> None:
        self.steps: list[Callable[[], object]] = []

    def put(self, m: PinnedMap, key: Any, new: Any, old: Any | None) -> None:
        m.set(key, new)
        if old is None:
            self.steps.append(lambda: m.delete(key))
        else:
            self.steps.append(lambda: m.set(key, old))

    def delete(self, m: PinnedMap, key: Any, old: Any) -> None:
        if m.delete(key):
            self.steps.append(lambda: m.set(key, old))

    def rollback(self) -> list[str]:
        errors = []
        for step in reversed(self.steps):
            try:
                step()
            except OSError as e:  # keep undoing the rest
                errors.append(str(e))
        return errors


Sig = tuple[Pool, tuple[int, ...]]
"""A ring's identity: its pool and the backend ids its entries hold."""


class Dataplane:
    """One instance's pinned data plane, opened from bpffs (no compiler needed).

    One object may be shared by threads: `_mutex` makes its map writes one at a time,
    and is never held for more than one ring write by `stage()`.
    """

    def __init__(self, instance: str, pin_root: str = PIN_ROOT, run_root: str = RUN_ROOT):
        self.instance = instance
        self.run_dir = run_dir(instance, run_root)
        self.geometry = geometry_from_pins(instance, pin_root)
        self.maps = InstanceMaps(instance, pin_root)
        self._mutex = threading.Lock()
        # VIP key -> (signature, ring slot) as last applied (applied.json keeps it)
        self._written_cache: dict[bytes, tuple[Sig, int]] | None = None
        self._staged: dict[int, tuple[Sig, np.ndarray]] = {}  # free slot -> ring written ahead
        self._applies = 0  # successful applies so far
        self._rows_seen: tuple[bytes, dict[int, bytes]] = (b"", {})  # backends map, parsed

    def close(self) -> None:
        self.maps.close()

    def __enter__(self) -> Dataplane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading state -----------------------------------------------------------
    def vip_entries(self) -> dict[bytes, tuple[S.VipKey, S.VipMeta]]:
        return {_kt(k): (k, v) for k, v in self.maps["vips"].items()}  # type: ignore[misc,arg-type]

    def backend_entries(self) -> dict[int, S.Backend]:
        """id -> backend for every valid backend slot."""
        rows = self.maps["backends"].read_structs()
        return {i: b for i, b in enumerate(rows) if b.flags & S.XLB_BACKEND_VALID}

    def ring(self, slot: int) -> np.ndarray:
        g = self.geometry
        return self.maps["rings"].read_u32_range(slot * g.ring_size, g.ring_size)

    def applied_config(self) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.run_dir, "applied.json")) as f:
                return json.load(f)  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def counters(self, active_epoch: int | None = None,
                 backend_rows: int | None = None) -> Counters:
        """One batch read per stats map. `active` is for the last complete
        activity epoch unless `active_epoch` names another (tests: the current).

        `backend_rows`: read only the first rows of backend_stats (every id in use is
        below it; the cost of the read is per row of the map, in use or not); the
        rest read as zero, so the arrays keep the map's shape whatever is read."""
        m = self.maps
        at = time.monotonic_ns()
        if active_epoch is None:
            active_epoch = activity_epoch(at) - 1
        stats = m["backend_stats"]
        read = stats.read_percpu(backend_rows)
        summed = np.zeros((stats.max_entries, _BACKEND_SUMMED), dtype=np.uint64)
        summed[:len(read)] = read[:, :, :_BACKEND_SUMMED].sum(axis=1)
        active = np.zeros(stats.max_entries, dtype=np.uint64)
        active[:len(read)] = active_flows(read, active_epoch)
        return Counters(at / 1e9, m["queue_stats"].read_array(),
                        m["vip_stats"].read_array(), summed,
                        m["reason_stats"].read_array(), m["miss_stats"].read_array(),
                        active, active_epoch, m["snat_stats"].read_array())

    def drop_flows(self, pairs: set[tuple[int, int]], stop: Callable[[], bool] = lambda: False
                   ) -> dict[tuple[int, int], int]:
        """Delete the connection entries of these (VIP id, backend id) pairs, so that
        their flows' next packets ask Maglev again; how many per pair.

        For a backend that must stay valid (another VIP still uses it) while its flows in
        one VIP move: one pass over the whole connection table, in batches, so it costs
        O(connections). `stop()` is asked between batches."""
        dropped: dict[tuple[int, int], int] = {}
        if not pairs:
            return dropped
        m = self.maps["conns"]
        want = np.array([(v << 32) | b for v, b in pairs], dtype=np.uint64)
        for keys, values in bpfsys.hash_batches(m.fd, ctypes.sizeof(S.FlowKey),
                                                ctypes.sizeof(S.Conn)):
            conn = values.view(_CONN_DTYPE).reshape(-1)
            pair = (conn["vip_id"].astype(np.uint64) << np.uint64(32)) | conn["backend_id"]
            hit = np.isin(pair, want)
            if hit.any():
                bpfsys.delete_batch(m.fd, keys[hit])
                for p, n in zip(*np.unique(pair[hit], return_counts=True), strict=True):
                    key = (int(p) >> 32, int(p) & 0xFFFFFFFF)
                    dropped[key] = dropped.get(key, 0) + int(n)
            if stop():
                break
        return dropped

    # -- flow traces -----------------------------------------------------------------
    def set_trace(self, cfg: S.TraceConfig) -> None:
        """Start, change or stop (mode off) the data plane's flow trace: the trace part of
        `ctl`, written whole in one update (the rest of ctl is kept). Bad values raise
        InvalidParams and change nothing."""
        check_trace_config(cfg)
        with self._mutex:
            ctl = self.maps["ctl"].get(0)
            assert isinstance(ctl, S.LbConfig)
            ctl.trace = cfg
            self.maps["ctl"].set(0, ctl)

    def trace_config(self) -> S.TraceConfig:
        """The trace part of `ctl` as the data plane reads it."""
        ctl = self.maps["ctl"].get(0)
        assert isinstance(ctl, S.LbConfig)
        return S.TraceConfig.from_buffer_copy(ctl.trace)

    # -- applying a config ---------------------------------------------------------
    def stage(self, cfg: Config, stop: Callable[[], bool] = lambda: False) -> int:
        """Write ahead the rings that `cfg` changes, each into a free slot, where no packet
        looks: the slow part of apply (a Maglev build, then about 13 ms of bpf(2) per
        ring). A later apply(cfg) finds them there and only points the VIPs at them, so a
        caller can stage before taking its own lock. `stop()` is asked between rings.
        Returns how many rings were written."""
        with self._mutex:
            cur_vips = self.vip_entries()
            ids = self._ids(cfg, self._backend_rows())[0]
            written = self._written()
        todo: list[Sig] = []  # one per VIP that changes: each needs its own slot
        for vip in cfg.vips:
            pool = pool_of(vip)
            sig = (pool, tuple(ids[a] for a, _ in pool))
            old = cur_vips.get(_kt(vip_key(vip)))
            if old is None or written.get(_kt(vip_key(vip))) != (sig, old[1].ring_slot):
                todo.append(sig)
        done, seen = 0, -1
        used: set[int] = set()
        rings: dict[Sig, np.ndarray] = {}
        for sig in todo:
            if stop():
                break
            if sig not in rings:
                rings[sig] = self._ring_for(sig)
            ring = rings[sig]
            with self._mutex:  # one ring at a time: an apply never waits for more
                if seen != self._applies:  # VIPs may point elsewhere now
                    used = {m.ring_slot for _, m in self.vip_entries().values()}
                    seen = self._applies
                free = [s for s in range(self.geometry.ring_slots)
                        if s not in used and s not in self._staged]
                if not free:
                    break  # apply will find room (it may reuse staged slots)
                self.maps["rings"].write_u32_range(free[0] * self.geometry.ring_size, ring)
                self._staged[free[0]] = (sig, ring)
                done += 1
        return done

    def apply(self, cfg: Config) -> ApplyResult:
        started = time.monotonic()
        want_geo = geometry_of(cfg)
        if want_geo != self.geometry:
            raise ApplyError(
                f"instance {self.instance!r} was loaded with {self.geometry}, the config asks "
                f"for {want_geo}; these sizes are compiled in: unload with --remove-pins and load "
                "again (established flows are lost)")
        with self._mutex:
            plan = self._plan(cfg)
            undo = _Undo()
            try:
                self._write(plan, undo)
            except Exception as e:
                errors = undo.rollback()
                note = "previous state restored" if not errors else f"ROLLBACK INCOMPLETE: {errors}"
                raise ApplyError(f"applying the config failed ({e}); {note}") from e
            self._written_cache = plan.written
            self._staged = {}  # used now, or staged for a config that did not come
            self._applies += 1
            self._save_applied(cfg, plan)
        plan.result.backend_ids = {str(a): i for a, i in plan.backend_ids.items()}
        plan.result.vip_ids = {key_label(v.key): v.meta.vip_id for v in plan.vips}
        plan.result.rings = {key_label(v.key): v.ring for v in plan.vips if v.ring is not None}
        plan.result.seconds = time.monotonic() - started
        return plan.result

    def _backend_rows(self) -> dict[int, bytes]:
        """id -> row of every valid backend slot, in one batch read; parsed again only
        when the map's bytes changed since the last call."""
        rows = self.maps["backends"].read_rows()
        data = rows.tobytes()
        if data != self._rows_seen[0]:
            valid = np.flatnonzero(rows[:, S.Backend.flags.offset] & S.XLB_BACKEND_VALID)
            self._rows_seen = (data, {int(i): rows[i].tobytes() for i in valid})
        return dict(self._rows_seen[1])

    def _ids(self, cfg: Config, rows: dict[int, bytes]
             ) -> tuple[dict[S.IPAddress, int], list[str], dict[bytes, int]]:
        """Backend ids for `cfg`: kept where a backend has one (its address, whatever its
        flags), else the lowest free. Also the addresses added, and the ids no longer
        used (row -> id)."""
        by_addr = {row[:_ROW_ADDRESS]: (i, row) for i, row in rows.items()}
        free_ids = (i for i in range(self.geometry.max_backends) if i not in rows)
        ids: dict[S.IPAddress, int] = {}
        added: list[str] = []
        for addr in cfg.backend_addresses():
            found = by_addr.pop(_backend_row(addr)[:_ROW_ADDRESS], None)
            if found is not None:
                ids[addr] = found[0]
            else:
                try:
                    ids[addr] = next(free_ids)
                except StopIteration:
                    raise ApplyError(f"no free backend slot for {addr} "
                                     f"(max_backends {self.geometry.max_backends})") from None
                added.append(str(addr))
        return ids, added, {row: i for i, row in by_addr.values()}

    def _plan(self, cfg: Config) -> _Plan:
        g = self.geometry
        cur_vips = self.vip_entries()
        cur_backends = self._backend_rows()
        written = self._written()
        plan = _Plan(lb_config(cfg), current_backends=cur_backends)
        plan.backend_ids, plan.result.backends_added, gone = self._ids(cfg, cur_backends)
        plan.removed_backends = {i: cur_backends[i] for i in gone.values()}
        plan.result.backends_removed = [str(_row_address(r)) for r in gone]

        used_slots = {meta.ring_slot for _, meta in cur_vips.values()}
        staged: dict[Sig, list[int]] = {}
        for s, (st, _) in self._staged.items():
            if s not in used_slots:
                staged.setdefault(st, []).append(s)
        # fresh slots first; slots holding rings staged for other configs last
        free_slots = iter(sorted((s for s in range(g.ring_slots) if s not in used_slots),
                                 key=lambda s: s in self._staged))
        taken: set[int] = set()
        used_ids = {meta.vip_id for _, meta in cur_vips.values()}
        free_vip_ids = (i for i in range(g.max_vips) if i not in used_ids)
        seen: set[bytes] = set()
        for vip in cfg.vips:
            key = vip_key(vip)
            kb = _kt(key)
            seen.add(kb)
            pool = pool_of(vip)
            sig = (pool, tuple(plan.backend_ids[a] for a, _ in pool))
            old = cur_vips.get(kb)
            flags = vip_flags(vip)
            if old is not None and written.get(kb) == (sig, old[1].ring_slot):
                plan.vips.append(_same_ring(key, old[1], flags, plan.result, vip.name))
                plan.written[kb] = (sig, old[1].ring_slot)  # as applied: not even read
                continue
            slot = staged[sig].pop() if staged.get(sig) else None
            ring = self._staged[slot][1] if slot is not None else self._ring_for(sig)
            if old is not None and slot is None and np.array_equal(
                    self.ring(old[1].ring_slot), ring):
                plan.vips.append(_same_ring(key, old[1], flags, plan.result, vip.name))
                plan.written[kb] = (sig, old[1].ring_slot)
                continue
            try:
                write = slot is None
                while slot is None or slot in taken:
                    slot, write = next(free_slots), True
                vip_id = old[1].vip_id if old is not None else next(free_vip_ids)
            except StopIteration:
                raise ApplyError(f"no free VIP slot for {vip.name} "
                                 f"(max_vips {g.max_vips})") from None
            taken.add(slot)
            meta = S.VipMeta(vip_id=vip_id, ring_slot=slot, flags=flags)
            plan.vips.append(_VipPlan(key, meta, old[1] if old is not None else None, ring,
                                      write))
            plan.written[kb] = (sig, slot)
            (plan.result.vips_changed if old is not None else plan.result.vips_added).append(
                vip.name)
        plan.removed_vips = [(k, m) for kb, (k, m) in cur_vips.items() if kb not in seen]
        plan.result.vips_removed = [key_label(k) for k, _ in plan.removed_vips]
        plan.vip_addrs = {_kt(addr_key(v.address)): addr_key(v.address) for v in cfg.vips}
        return plan

    def _ring_for(self, sig: Sig) -> np.ndarray:
        """The ring of a pool whose backends have these ids: a Maglev build."""
        pool, ids = sig
        if not pool:
            return np.full(self.geometry.ring_size, S.XLB_NO_BACKEND, dtype=np.uint32)
        table = maglev.build_table([(str(a), w) for a, w in pool], self.geometry.ring_size)
        lut = np.array([*ids, S.XLB_NO_BACKEND], dtype=np.uint32)
        return lut[np.where(table >= 0, table, len(pool))]

    def _written(self) -> dict[bytes, tuple[Sig, int]]:
        """What is applied, ring by ring, as the last apply recorded it (so that a new
        object, e.g. after a restart, need not read every ring back)."""
        if self._written_cache is None:
            self._written_cache = {}
            try:
                for kb, (slot, rows) in (self.applied_config() or {}).get("rings", {}).items():
                    pool = tuple((ipaddress.ip_address(a), int(w)) for a, w, _ in rows)
                    self._written_cache[bytes.fromhex(kb)] = (
                        (pool, tuple(int(i) for _, _, i in rows)), int(slot))
            except (ValueError, TypeError, AttributeError):
                self._written_cache = {}  # unreadable: every ring is read back once
        return self._written_cache

    def _write(self, plan: _Plan, undo: _Undo) -> None:
        m = self.maps
        g = self.geometry
        old_ctl = m["ctl"].get(0)
        if old_ctl is not None:  # a trace is started and stopped by set_trace only
            plan.ctl.trace = old_ctl.trace
            plan.ctl.vip_index = old_ctl.vip_index  # the index moves once vips are written
        undo.put(m["ctl"], 0, plan.ctl, old_ctl)
        for addr, bid in plan.backend_ids.items():
            new = _backend_row(addr)
            old = plan.current_backends.get(bid)
            if old != new:
                if old is None:
                    m["backend_stats"].zero(bid)
                undo.put(m["backends"], bid, S.Backend.from_buffer_copy(new),
                         S.Backend.from_buffer_copy(old) if old is not None else S.Backend())
        for v in plan.vips:
            if v.write and v.ring is not None:  # a free slot: invisible until a VIP uses it
                self._staged.pop(v.meta.ring_slot, None)
                m["rings"].write_u32_range(v.meta.ring_slot * g.ring_size, v.ring)
        cur_addrs = {_kt(k): k for k in m["vip_addrs"].keys()}
        for kb, akey in plan.vip_addrs.items():
            if kb not in cur_addrs:
                undo.put(m["vip_addrs"], akey, ctypes.c_uint32(1), None)
        for v in plan.vips:
            if v.ring is None and v.meta is v.old:
                continue
            if v.old is None:
                m["vip_stats"].zero(v.meta.vip_id)
                m["snat_stats"].zero(v.meta.vip_id)
            undo.put(m["vips"], v.key, v.meta, v.old)
        self._write_vip_index(plan, undo)
        # removals last: the new state is complete before anything disappears
        for vkey, meta in plan.removed_vips:
            undo.delete(m["vips"], vkey, meta)
        for kb, akey in cur_addrs.items():
            if kb not in plan.vip_addrs:
                undo.delete(m["vip_addrs"], akey, ctypes.c_uint32(1))
        for bid, old in plan.removed_backends.items():
            undo.put(m["backends"], bid, S.Backend(), S.Backend.from_buffer_copy(old))

    def _write_vip_index(self, plan: _Plan, undo: _Undo) -> None:
        """The VIP index of the planned VIPs (xlb/dataplane/vipindex.py): written into the
        idle bank, then ctl points at it, so a packet sees the whole old index or the whole
        new one. Rolled back with ctl (the bank in use is never written)."""
        m = self.maps["vip_index"]
        entries = [(v.key, v.meta) for v in plan.vips]
        salt = vipindex.pick_salt([k for k, _ in entries])
        cur = plan.ctl.vip_index
        new = 0
        if salt:
            rows = vipindex.bank_rows(entries, salt)
            bank = vipindex.bank_of(cur)
            live = vipindex.bank(m.read_rows(), bank)
            if cur and cur == vipindex.descriptor(bank, salt) and np.array_equal(live, rows):
                return  # the index in use is this one already
            bank = 1 - bank if cur else 0
            m.write_rows(bank * vipindex.SLOTS, rows)
            new = vipindex.descriptor(bank, salt)
        if new != cur:
            ctl = S.LbConfig.from_buffer_copy(plan.ctl)
            ctl.vip_index = new
            undo.put(self.maps["ctl"], 0, ctl, plan.ctl)

    def _save_applied(self, cfg: Config, plan: _Plan) -> None:
        doc = {"config": cfg.to_dict(),
               "backend_ids": {str(a): i for a, i in plan.backend_ids.items()},
               "rings": {kb.hex(): [slot, [[str(a), w, i] for (a, w), i in zip(*sig, strict=True)]]
                         for kb, (sig, slot) in plan.written.items()},
               "applied_at": time.time()}
        statefile.write_json(os.path.join(self.run_dir, "applied.json"), doc)  # no indent:
        # the C encoder, ten times faster at thousands of backends


def _same_ring(key: S.VipKey, old: S.VipMeta, flags: int, result: ApplyResult,
               name: str) -> _VipPlan:
    """A VIP whose ring stays: untouched, or (its mode changed) its entry rewritten in
    place with the new flags, same ring and counters: no rebuild, no flow moved."""
    if old.flags == flags:
        return _VipPlan(key, old, old)
    result.vips_changed.append(name)
    return _VipPlan(key, S.VipMeta(vip_id=old.vip_id, ring_slot=old.ring_slot, flags=flags),
                    old)


@dataclass
class _VipPlan:
    key: S.VipKey
    meta: S.VipMeta                  # the entry to write (the old one itself if unchanged)
    old: S.VipMeta | None            # the entry there now, if any
    ring: np.ndarray | None = None   # the VIP's new ring; None: unchanged
    write: bool = False              # the ring still has to be written into meta's slot


@dataclass
class _Plan:
    ctl: S.LbConfig
    current_backends: dict[int, bytes]  # valid rows as read when planning
    backend_ids: dict[S.IPAddress, int] = field(default_factory=dict)
    removed_backends: dict[int, bytes] = field(default_factory=dict)
    vips: list[_VipPlan] = field(default_factory=list)
    removed_vips: list[tuple[S.VipKey, S.VipMeta]] = field(default_factory=list)
    vip_addrs: dict[bytes, S.AddrKey] = field(default_factory=dict)
    result: ApplyResult = field(default_factory=ApplyResult)
    # VIP key -> (signature, ring slot) once this plan is written
    written: dict[bytes, tuple[Sig, int]] = field(default_factory=dict)


def key_label(key: S.VipKey) -> str:
    """vip_label() of a VIP map key."""
    return vip_label(S.unpack_addr(key.addr, key.family), S.host_port(key.port),
                     PROTOCOL_NAMES.get(key.proto, str(key.proto)))
