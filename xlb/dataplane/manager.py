"""The data plane manager: applies a Config to an instance's pinned maps.

apply() is all-or-nothing. Everything is validated and computed first
(backend ids, VIP ids, Maglev rings); then maps are written in an order
where the data plane never sees a half-made VIP (rings before the VIP entry
that points at them, removals last), and every write records how to undo
it. Any failure undoes what was written and leaves the previous state.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlb import statefile
from xlb.dataplane import bpfsys, maglev
from xlb.dataplane import structs as S
from xlb.dataplane.config import Config, VipConfig, vip_label
from xlb.dataplane.loader import Geometry, geometry_from_pins
from xlb.dataplane.maps import InstanceMaps, PinnedMap
from xlb.errors import ApplyError
from xlb.paths import PIN_ROOT, RUN_ROOT, run_dir

PROTOCOLS = {"tcp": 6, "udp": 17}
PROTOCOL_NAMES = {v: k for k, v in PROTOCOLS.items()}


def geometry_of(cfg: Config) -> Geometry:
    i = cfg.instance
    return Geometry(i.ring_size, i.max_vips, i.max_backends, i.max_connections)


def vip_key(vip: VipConfig) -> S.VipKey:
    return S.VipKey(addr=S.pack_addr(vip.address), port=S.net_port(vip.port),
                    proto=PROTOCOLS[vip.protocol], family=S.family_of(vip.address))


def addr_key(addr: S.IPAddress) -> S.AddrKey:
    return S.AddrKey(addr=S.pack_addr(addr), family=S.family_of(addr))


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


def lb_config(cfg: Config) -> S.LbConfig:
    i = cfg.instance
    c = S.LbConfig(mtu=i.mtu, new_flow_limit=new_flow_limit(
        i.max_connections, i.flow_table_turnover, bpfsys.possible_cpus()))
    if i.nexthop_mac:
        c.nexthop_mac[:] = list(i.nexthop_mac)
        c.has_nexthop_mac = 1
    c.src4_net = S.pack_addr(i.encap_source_v4.network_address)[0]
    c.src4_mask = S.pack_addr(i.encap_source_v4.hostmask)[0]
    c.src6_net[:] = S.pack_addr(i.encap_source_v6.network_address)
    c.src6_mask[:] = S.pack_addr(i.encap_source_v6.hostmask)
    return c


@dataclass
class ApplyResult:
    vips_added: list[str] = field(default_factory=list)
    vips_removed: list[str] = field(default_factory=list)
    vips_changed: list[str] = field(default_factory=list)
    backends_added: list[str] = field(default_factory=list)
    backends_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Counters:
    """Cumulative counters (per-CPU summed) as read at one instant."""

    at: float
    queues: np.ndarray    # (queues, 2 + actions): packets, bytes, aborted..redirect
    vips: np.ndarray      # (max_vips, 2): packets, bytes
    backends: np.ndarray  # (max_backends, 3): packets, bytes, new connections
    reasons: np.ndarray   # (reasons, 2): packets, bytes
    # (max_backends,): distinct flows that sent a packet in epoch `active_epoch`
    # (by default the last complete one); a gauge, not a cumulative counter
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    active_epoch: int = -1


# columns of struct xlb_backend_stats read as u64 words
_ACTIVE = S.BackendStats.active.offset // 8              # active[0], active[1]
_ACTIVE_EPOCH = S.BackendStats.active_epoch.offset // 8  # active_epoch[0], active_epoch[1]
_BACKEND_SUMMED = _ACTIVE                                # packets, bytes, new_conns


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


class Dataplane:
    """One instance's pinned data plane, opened from bpffs (no compiler needed)."""

    def __init__(self, instance: str, pin_root: str = PIN_ROOT, run_root: str = RUN_ROOT):
        self.instance = instance
        self.run_dir = run_dir(instance, run_root)
        self.geometry = geometry_from_pins(instance, pin_root)
        self.maps = InstanceMaps(instance, pin_root)

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

    def counters(self, active_epoch: int | None = None) -> Counters:
        """One batch read per stats map. `active` is for the last complete
        activity epoch unless `active_epoch` names another (tests: the current)."""
        m = self.maps
        at = time.monotonic_ns()
        if active_epoch is None:
            active_epoch = activity_epoch(at) - 1
        backends = m["backend_stats"].read_percpu()
        return Counters(at / 1e9, m["queue_stats"].read_array(),
                        m["vip_stats"].read_array(),
                        backends[:, :, :_BACKEND_SUMMED].sum(axis=1),
                        m["reason_stats"].read_array(),
                        active_flows(backends, active_epoch), active_epoch)

    # -- applying a config ---------------------------------------------------------
    def apply(self, cfg: Config) -> ApplyResult:
        started = time.monotonic()
        want_geo = geometry_of(cfg)
        if want_geo != self.geometry:
            raise ApplyError(
                f"instance {self.instance!r} was loaded with {self.geometry}, the config asks "
                f"for {want_geo}; these sizes are compiled in: unload with --remove-pins and load "
                "again (established flows are lost)")
        plan = self._plan(cfg)
        undo = _Undo()
        try:
            self._write(plan, undo)
        except Exception as e:
            errors = undo.rollback()
            note = "previous state restored" if not errors else f"ROLLBACK INCOMPLETE: {errors}"
            raise ApplyError(f"applying the config failed ({e}); {note}") from e
        self._save_applied(cfg, plan)
        plan.result.seconds = time.monotonic() - started
        return plan.result

    def _plan(self, cfg: Config) -> _Plan:
        g = self.geometry
        cur_vips = self.vip_entries()
        cur_backends = self.backend_entries()
        by_addr = {S.unpack_addr(b.addr, b.family): i for i, b in cur_backends.items()}
        plan = _Plan(lb_config(cfg), current_backends=cur_backends)

        free_ids = (i for i in range(g.max_backends) if i not in cur_backends)
        for addr in cfg.backend_addresses():
            if addr in by_addr:
                plan.backend_ids[addr] = by_addr.pop(addr)
            else:
                try:
                    plan.backend_ids[addr] = next(free_ids)
                except StopIteration:
                    raise ApplyError(f"no free backend slot for {addr} "
                                     f"(max_backends {g.max_backends})") from None
                plan.result.backends_added.append(str(addr))
        plan.removed_backends = {i: cur_backends[i] for i in by_addr.values()}
        plan.result.backends_removed = [str(a) for a in by_addr]

        used_slots = {meta.ring_slot for _, meta in cur_vips.values()}
        free_slots = (s for s in range(g.ring_slots) if s not in used_slots)
        used_ids = {meta.vip_id for _, meta in cur_vips.values()}
        free_vip_ids = (i for i in range(g.max_vips) if i not in used_ids)
        seen: set[bytes] = set()
        for vip in cfg.vips:
            key = vip_key(vip)
            kb = _kt(key)
            seen.add(kb)
            ring = self._ring_for(vip, plan.backend_ids)
            old = cur_vips.get(kb)
            if old is not None and np.array_equal(self.ring(old[1].ring_slot), ring):
                plan.vips.append((key, old[1], None, old[1]))
                continue
            try:
                slot = next(free_slots)
                vip_id = old[1].vip_id if old is not None else next(free_vip_ids)
            except StopIteration:
                raise ApplyError(f"no free VIP slot for {vip.name} "
                                 f"(max_vips {g.max_vips})") from None
            meta = S.VipMeta(vip_id=vip_id, ring_slot=slot, flags=0)
            plan.vips.append((key, meta, ring, old[1] if old is not None else None))
            (plan.result.vips_changed if old is not None else plan.result.vips_added).append(
                vip.name)
        plan.removed_vips = [(k, m) for kb, (k, m) in cur_vips.items() if kb not in seen]
        plan.result.vips_removed = [key_label(k) for k, _ in plan.removed_vips]
        plan.vip_addrs = {_kt(addr_key(v.address)): addr_key(v.address) for v in cfg.vips}
        return plan

    def _ring_for(self, vip: VipConfig, ids: dict[S.IPAddress, int]) -> np.ndarray:
        table = maglev.build_table([(str(b.address), b.effective_weight) for b in vip.backends],
                                   self.geometry.ring_size)
        lut = np.array([ids[b.address] for b in vip.backends] + [S.XLB_NO_BACKEND],
                       dtype=np.uint32)
        return lut[np.where(table >= 0, table, len(vip.backends))]

    def _write(self, plan: _Plan, undo: _Undo) -> None:
        m = self.maps
        g = self.geometry
        undo.put(m["ctl"], 0, plan.ctl, m["ctl"].get(0))
        for addr, bid in plan.backend_ids.items():
            new = S.Backend(addr=S.pack_addr(addr), family=S.family_of(addr),
                            flags=S.XLB_BACKEND_VALID)
            old = plan.current_backends.get(bid)
            if old is None or bytes(old) != bytes(new):
                if old is None:
                    m["backend_stats"].zero(bid)
                undo.put(m["backends"], bid, new, old if old is not None else S.Backend())
        for _key, meta, ring, _old in plan.vips:
            if ring is not None:  # a fresh slot: invisible until the VIP points at it
                m["rings"].write_u32_range(meta.ring_slot * g.ring_size, ring)
        cur_addrs = {_kt(k): k for k in m["vip_addrs"].keys()}
        for kb, akey in plan.vip_addrs.items():
            if kb not in cur_addrs:
                undo.put(m["vip_addrs"], akey, ctypes.c_uint32(1), None)
        for vkey, meta, ring, old_meta in plan.vips:
            if ring is None:
                continue
            if old_meta is None:
                m["vip_stats"].zero(meta.vip_id)
            undo.put(m["vips"], vkey, meta, old_meta)
        # removals last: the new state is complete before anything disappears
        for vkey, meta in plan.removed_vips:
            undo.delete(m["vips"], vkey, meta)
        for kb, akey in cur_addrs.items():
            if kb not in plan.vip_addrs:
                undo.delete(m["vip_addrs"], akey, ctypes.c_uint32(1))
        for bid, old in plan.removed_backends.items():
            undo.put(m["backends"], bid, S.Backend(), old)

    def _save_applied(self, cfg: Config, plan: _Plan) -> None:
        doc = {"config": cfg.to_dict(),
               "backend_ids": {str(a): i for a, i in plan.backend_ids.items()},
               "applied_at": time.time()}
        statefile.write_json(os.path.join(self.run_dir, "applied.json"), doc, indent=1)


@dataclass
class _Plan:
    ctl: S.LbConfig
    current_backends: dict[int, S.Backend]  # as read when planning
    backend_ids: dict[S.IPAddress, int] = field(default_factory=dict)
    removed_backends: dict[int, S.Backend] = field(default_factory=dict)
    # (key, new meta, ring to write or None if unchanged, old meta or None)
    vips: list[tuple[S.VipKey, S.VipMeta, np.ndarray | None, S.VipMeta | None]] = field(
        default_factory=list)
    removed_vips: list[tuple[S.VipKey, S.VipMeta]] = field(default_factory=list)
    vip_addrs: dict[bytes, S.AddrKey] = field(default_factory=dict)
    result: ApplyResult = field(default_factory=ApplyResult)


def key_label(key: S.VipKey) -> str:
    """vip_label() of a VIP map key."""
    return vip_label(S.unpack_addr(key.addr, key.family), S.host_port(key.port),
                     PROTOCOL_NAMES.get(key.proto, str(key.proto)))
