"""What the data plane would do with one flow, worked out from its pinned maps alone.

No packet is sent and nothing is written: this reads vip_addrs, vips (the port, then port
0), conns, rings, backends, ctl and flow_guard, and follows bpf/xlb.c's balance() step by
step, so that an operator sees why a client lands where it does (tests/dataplane/
test_explain.py checks it against the program itself on thousands of random flows).

Without a source port the connection table cannot be asked; the answer then stops at
the service and says which share of the source ports each backend gets from Maglev.

SNAT: a flow the connection table records as SNAT, or a new flow of a SNAT VIP, is
followed through snat_rev (the (address, port) it keeps, claims, takes over or cannot
get); a "flow" to an address of a SNAT pool is a backend's reply, looked up there.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlb.addresses import IPAddress, parse_address
from xlb.api import protocol as P
from xlb.dataplane import structs as S
from xlb.dataplane.config import vip_label
from xlb.dataplane.manager import PROTOCOL_NAMES, PROTOCOLS, Dataplane, key_label
from xlb.errors import InvalidParams

NSEC_PER_SEC = 1_000_000_000
OUTER_LEN = {S.XLB_AF_INET: 20, S.XLB_AF_INET6: 40}  # the outer header encapsulate() pushes
L4_LEN = {"tcp": 20, "udp": 8}  # the smallest packet the program balances: IP + this
# bpf_ktime_get_coarse_ns()'s clock (Linux's CLOCK_MONOTONIC_COARSE; the time module
# does not name it)
CLOCK_MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)
ENCAP = {(4, 4): "IPv4 in IPv4 (IPIP)", (6, 6): "IPv6 in IPv6", (4, 6): "IPv4 in IPv6",
         (6, 4): "IPv6 in IPv4"}


# -- the flow hash, as bpf/xlb.c computes it (mix32, flow_hash) -----------------------------
def _mix32(h: np.ndarray, k: np.ndarray) -> np.ndarray:
    """murmur3's mixing step on uint32 arrays (wrapping like C's u32)."""
    k = k * np.uint32(0xCC9E2D51)
    k = (k << np.uint32(15)) | (k >> np.uint32(17))
    k = k * np.uint32(0x1B873593)
    h = h ^ k
    h = (h << np.uint32(13)) | (h >> np.uint32(19))
    return h * np.uint32(5) + np.uint32(0xE6546B64)  # type: ignore[no-any-return]


def flow_hashes(src: IPAddress, sports: np.ndarray, dport: int, proto: int) -> np.ndarray:
    """flow_hash() of the flows from `src` with each of `sports` (host order) to `dport`:
    the source's four network-order words, then (sport << 16 | dport) and the protocol,
    ports as they sit in the packet."""
    sp = np.asarray(sports, dtype=np.uint32)
    net_sports = ((sp & np.uint32(0xFF)) << np.uint32(8)) | (sp >> np.uint32(8))
    h = np.full(sp.shape, 0x9747B28C, dtype=np.uint32)
    for word in S.pack_addr(src):
        h = _mix32(h, np.full(sp.shape, word, dtype=np.uint32))
    h = _mix32(h, (net_sports << np.uint32(16)) | np.uint32(socket.htons(dport)))
    h = _mix32(h, np.full(sp.shape, proto, dtype=np.uint32))
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def flow_hash(src: IPAddress, sport: int, dport: int, proto: int) -> int:
    """The data plane's hash of one flow (the Maglev slot is hash % ring size)."""
    return int(flow_hashes(src, np.array([sport]), dport, proto)[0])


def outer_source(cfg: S.LbConfig, backend_family: int, hash_: int) -> IPAddress:
    """The outer source encapsulate() writes: the encap_source prefix with host bits from
    the hash (IPv6: the upper half from the hash times the golden ratio)."""
    if backend_family == S.XLB_AF_INET:
        word = cfg.src4_net | (hash_ & cfg.src4_mask)
        return ipaddress.IPv4Address(word.to_bytes(4, "little"))
    h2 = (hash_ * 0x9E3779B1) & 0xFFFFFFFF
    words = [cfg.src6_net[i] | ((h2 if i < 2 else hash_) & cfg.src6_mask[i]) for i in range(4)]
    return ipaddress.IPv6Address(b"".join(w.to_bytes(4, "little") for w in words))


# -- explain ---------------------------------------------------------------------------------
@dataclass
class _Answer:
    """An Explain under construction."""

    flow: str
    steps: list[P.ExplainStep]
    vip: str | None = None
    backend: str | None = None
    path: P.TracePath = "none"
    hash: int | None = None
    slot: int | None = None
    outer_src: str | None = None
    age: float | None = None
    shares: dict[str, float] | None = None

    def step(self, step: str, text: str) -> None:
        self.steps.append({"step": step, "text": text})

    def done(self, reason: str) -> P.Explain:
        action = {"drop": "DROP", "tx": "TX", "pass": "PASS"}[P.reason_kind(reason)]
        self.step("verdict", f"{action}, {reason}: {P.REASONS[reason]}")
        out: P.Explain = {"flow": self.flow, "vip": self.vip, "backend": self.backend,
                          "path": self.path, "reason": reason, "action": action,
                          "hash": self.hash, "slot": self.slot, "outer_src": self.outer_src,
                          "connection_age": self.age, "steps": self.steps}
        if self.shares is not None:
            out["shares"] = self.shares
        return out


def _endpoint(addr: IPAddress, port: int | None) -> str:
    host = f"[{addr}]" if addr.version == 6 else str(addr)
    return f"{host}:{'*' if port is None else port}"


def _check_address(value: str | IPAddress, what: str) -> IPAddress:
    addr = value if not isinstance(value, str) else parse_address(value)
    if addr is None:
        raise InvalidParams(f"{what}: {str(value)[:45]!r} is not an IP address")
    return addr


def _check_port(value: int | None, what: str) -> None:
    if value is not None and not 0 <= value <= 65535:
        raise InvalidParams(f"{what}: {value} is not a port (0..65535)")


def vip_names(doc: Mapping[str, Any] | None) -> dict[str, str]:
    """VIP label -> name, from the config last applied to a data plane (applied.json: the
    maps hold no names)."""
    doc = doc or {}
    out: dict[str, str] = {}
    for v in (doc.get("config") or {}).get("vip", []):
        try:
            addr = ipaddress.ip_address(v["address"])
            out[vip_label(addr, int(v["port"]), str(v["protocol"]))] = str(v["name"])
        except (KeyError, TypeError, ValueError):
            continue  # a file this xlb did not write: labels instead of names
    return out


def explain(dp: Dataplane, src: str | IPAddress, sport: int | None, dst: str | IPAddress,
            dport: int, protocol: str = "tcp", syn: bool = False, *,
            length: int | None = None, cpu: int | None = None,
            names: Mapping[str, str] | None = None,
            states: Mapping[tuple[str, str], str] | None = None) -> P.Explain:
    """What the data plane would do with the next packet of this flow (client -> VIP).

    `syn`: the packet is a TCP SYN (no ACK). `length`: its IP length in bytes (default:
    headers only), for the mtu check. `cpu`: the CPU it would arrive on, for the per-CPU
    new-entry limit (default: limited only if every CPU is at its limit). `names`: VIP
    label -> name (default: from the applied config). `states`: (VIP name, backend
    address) -> the agent's word on that backend, added to the backend's line.
    InvalidParams for a flow that cannot be asked about."""
    s, d = _check_address(src, "source"), _check_address(dst, "destination")
    if s.version != d.version:
        raise InvalidParams(f"source {s} and destination {d} are not of one family")
    _check_port(sport, "source port")
    _check_port(dport, "destination port")
    if protocol not in PROTOCOLS:
        raise InvalidParams(f"protocol {protocol!r}: tcp or udp")
    least = (20 if s.version == 4 else 40) + L4_LEN[protocol]
    if length is not None and not least <= length <= 65535:
        raise InvalidParams(f"length {length}: an IP packet of {protocol} over IPv{s.version} "
                            f"is {least}..65535 bytes")
    syn = syn and protocol == "tcp"
    proto = PROTOCOLS[protocol]
    family = S.family_of(d)
    m = dp.maps
    a = _Answer(f"{_endpoint(s, sport)} -> {_endpoint(d, dport)}/{protocol}", [])

    # process_v4/v6: an address of a SNAT pool (never a VIP's)? a VIP address at all?
    ctl = m["ctl"].get(0)
    assert isinstance(ctl, S.LbConfig)
    pool = snat_pool(ctl, d.version)
    if pool is not None and d in pool:
        return _snat_reply(a, dp, s, sport, d, dport, proto, pool, names)
    if m["vip_addrs"].get(S.AddrKey(addr=S.pack_addr(d), family=family)) is None:
        a.step("vip", f"{d} is not a VIP address: the host's own traffic, passed on")
        return a.done("pass_not_vip")
    a.step("vip", f"{d} is a VIP address")
    # find_vip: the port, then port 0 (any port)
    key = S.VipKey(addr=S.pack_addr(d), port=S.net_port(dport), proto=proto, family=family)
    meta = m["vips"].get(key)
    if meta is None:
        key.port = 0
        meta = m["vips"].get(key)
    if meta is None:
        a.step("service", f"no VIP on port {dport}/{protocol} of {d}, nor on any port "
                          f"({protocol}): passed to the host")
        return a.done("pass_vip_no_service")
    label = key_label(key)
    applied = functools.cache(dp.applied_config)  # read at most once, if at all
    a.vip = (names if names is not None else vip_names(applied())).get(label, label)
    any_port = " (the any-port VIP: none on that port)" if key.port == 0 and dport else ""
    a.step("service", f"VIP {a.vip}: {label}{any_port}, Maglev ring {meta.ring_slot}")
    b = _Backends(dp, a.vip, key, meta, states or {}, applied)
    if sport is None:
        return _shares(a, b, s, dport, protocol)
    return _balance(a, b, ctl, s, sport, d, dport, protocol, syn, length or least, cpu)


class _Backends:
    """Backend rows and the VIP's ring, read when needed (a ring is a large read)."""

    def __init__(self, dp: Dataplane, vip: str, key: S.VipKey, meta: S.VipMeta,
                 states: Mapping[tuple[str, str], str],
                 applied: Callable[[], dict[str, Any] | None]) -> None:
        self.dp, self.vip, self.key, self.meta, self.states = dp, vip, key, meta, states
        self.applied = applied
        self._ring: np.ndarray | None = None

    @property
    def ring_size(self) -> int:
        return self.dp.geometry.ring_size

    def ring(self) -> np.ndarray:
        if self._ring is None:
            self._ring = self.dp.ring(self.meta.ring_slot)
        return self._ring

    def slot(self, index: int) -> int:
        v = self.dp.maps["rings"].get(self.meta.ring_slot * self.ring_size + index)
        return int(v.value) if v is not None else S.XLB_NO_BACKEND

    def in_ring(self, backend_id: int) -> bool:
        """Whether the VIP's ring holds this backend (it takes new flows). The last apply
        recorded each ring's backend ids (applied.json): used when it names the slot the
        VIP points at now, as reading a ring back is a large read."""
        try:
            slot, rows = (self.applied() or {})["rings"][bytes(self.key).hex()]
            if int(slot) == self.meta.ring_slot:
                return backend_id in {int(row[2]) for row in rows}
        except (KeyError, TypeError, ValueError, IndexError):
            pass
        return bool(np.any(self.ring() == backend_id))

    def valid(self, backend_id: int) -> S.Backend | None:
        if backend_id >= self.dp.geometry.max_backends:
            return None
        row = self.dp.maps["backends"].get(backend_id)
        return row if row is not None and row.flags & S.XLB_BACKEND_VALID else None

    def line(self, be: S.Backend, backend_id: int, in_ring: bool) -> str:
        addr = str(S.unpack_addr(be.addr, be.family))
        takes = ("takes new flows (in the VIP's ring)" if in_ring else
                 "takes no new flows here (not in the VIP's ring: drained, weight 0 or "
                 "down), keeps its established ones")
        agent = self.states.get((self.vip, addr))
        return f"backend {addr} (id {backend_id}): valid, {takes}" + (
            f"; the agent says: {agent}" if agent else "")


def _udp_flow_over(entry: S.Conn, snat_vip: bool, ctl: S.LbConfig) -> bool:
    """bpf/xlb.c udp_flow_over(): a UDP flow idle past the UDP timeout whose VIP has
    changed mode since is over; its next packet starts a new flow."""
    mode = S.XLB_MODE_SNAT if snat_vip else S.XLB_MODE_DSR
    idle = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE) - entry.last_seen_ns
    return bool(entry.mode != mode and idle > ctl.snat_udp_timeout * NSEC_PER_SEC)


def _balance(a: _Answer, b: _Backends, ctl: S.LbConfig, s: IPAddress, sport: int,
             d: IPAddress, dport: int, protocol: str, syn: bool, length: int,
             cpu: int | None) -> P.Explain:
    """bpf/xlb.c balance(): the connection table, else Maglev; the new-entry limit; the
    mtu check; encapsulation."""
    m = b.dp.maps
    tcp = protocol == "tcp"
    fkey = S.FlowKey(src=S.pack_addr(s), dst=S.pack_addr(d), sport=S.net_port(sport),
                     dport=S.net_port(dport), proto=PROTOCOLS[protocol],
                     family=S.family_of(d))
    a.hash = flow_hash(s, sport, dport, PROTOCOLS[protocol])
    entry = m["conns"].get(fkey)
    be: S.Backend | None = None
    backend_id = S.XLB_NO_BACKEND
    reason = "tx_encap"
    snat_vip = bool(b.meta.flags & S.XLB_VIP_F_SNAT)
    over = entry is not None and not tcp and _udp_flow_over(entry, snat_vip, ctl)
    if entry is not None and over:
        idle = (time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE) - entry.last_seen_ns) / NSEC_PER_SEC
        was = "SNAT" if entry.mode == S.XLB_MODE_SNAT else "DSR"
        a.step("connection", f"connection entry of a {was} flow idle {idle:.0f} s, past the "
                             f"UDP timeout ({ctl.snat_udp_timeout} s), and its VIP has "
                             f"changed mode since: a new flow; Maglev picks")
        entry = None
    if entry is not None and entry.mode == S.XLB_MODE_SNAT and (snat_vip or not syn):
        return _snat_flow(a, b, ctl, fkey, entry, syn, cpu)
    if syn and snat_vip:
        had = " (a DSR flow's: the SYN starts a new flow)" if entry else ""
        a.step("connection", f"a TCP SYN to a SNAT VIP looks at the connection table (a "
                             f"retransmitted SYN keeps its translation): no SNAT entry{had}; "
                             "Maglev picks")
        entry = None
    elif syn:
        had = (f" (it has an entry, to backend id {entry.backend_id}: a new entry replaces "
               "it)" if entry else "")
        a.step("connection", f"a TCP SYN does not look at the connection table: it always "
                             f"asks Maglev{had}")
        entry = None
    elif entry is not None:
        now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
        a.age = max(0.0, (now - entry.last_seen_ns) / NSEC_PER_SEC)
        be = b.valid(entry.backend_id)
        if be is not None:
            backend_id = entry.backend_id
            a.path = "conn"
            a.step("connection", f"connection entry: backend id {backend_id}, last seen "
                                 f"{a.age:.1f} s ago (refreshed at most once a second)")
        else:
            a.step("connection", f"connection entry for backend id {entry.backend_id}, which "
                                 "is gone (not valid): Maglev picks again and the entry is "
                                 "pointed at its choice")
    elif tcp:
        a.step("connection", "no connection entry, and not a SYN: Maglev picks and no entry "
                             "is made (a connection this LB lost, or made-up packets)")
    elif not over:
        a.step("connection", "no connection entry: a new flow; Maglev picks")
    a.step("hash", f"flow hash {a.hash:#010x} (source, ports, protocol)")
    if be is None:
        a.slot = a.hash % b.ring_size
        backend_id = b.slot(a.slot)
        where = f"Maglev slot {a.slot} of {b.ring_size}"
        if backend_id == S.XLB_NO_BACKEND:
            a.step("maglev", f"{where} holds no backend: the VIP has none for new flows")
            return a.done("drop_no_backend")
        be = b.valid(backend_id)
        if be is None:
            a.step("maglev", f"{where} holds backend id {backend_id}, which is not valid")
            return a.done("drop_no_backend")
        a.step("maglev", f"{where} holds backend id {backend_id}")
        if entry is not None:
            a.path = "maglev_stale"
        elif tcp and not syn:
            a.path, reason = "maglev", "tx_encap_no_entry"
        else:
            a.path = "maglev_syn" if syn else "maglev"
            if snat_vip:
                a.backend = str(S.unpack_addr(be.addr, be.family))
                a.step("backend", b.line(be, backend_id, True))
                return _snat_new(a, b, ctl, fkey, be, backend_id, cpu)
            limited, note = _over_limit(b, ctl.new_flow_limit, cpu)
            if note:
                a.step("connection", note)
            if limited:
                reason = "tx_encap_flow_limit"
        in_ring = True
    else:
        in_ring = b.in_ring(backend_id)
    a.backend = str(S.unpack_addr(be.addr, be.family))
    a.step("backend", b.line(be, backend_id, in_ring))
    outer = OUTER_LEN[be.family]
    if length + outer > ctl.mtu:
        a.step("encap", f"a {length}-byte packet is {length + outer} bytes encapsulated, over "
                        f"mtu {ctl.mtu}: answered with ICMP too big (room {ctl.mtu - outer})")
        return a.done("tx_icmp_too_big")
    a.outer_src = str(outer_source(ctl, be.family, a.hash))
    a.step("encap", f"{ENCAP[(s.version, be.family)]} to {a.backend}, outer source "
                    f"{a.outer_src} (the encap source prefix, host bits from the hash); "
                    f"packets up to {ctl.mtu - outer} bytes fit mtu {ctl.mtu}")
    return a.done(reason)


# -- SNAT ------------------------------------------------------------------------------------
Pool = ipaddress.IPv4Network | ipaddress.IPv6Network


def snat_pool(ctl: S.LbConfig, version: int) -> Pool | None:
    """The SNAT pool of an IP version as ctl holds it (None: no pool)."""
    if version == 4:
        if not ctl.has_snat4:
            return None
        net = ipaddress.IPv4Address(ctl.snat4_net.to_bytes(4, "little"))
        hosts = socket.ntohl(ctl.snat4_mask) + 1
        return ipaddress.IPv4Network(f"{net}/{32 - (hosts.bit_length() - 1)}")
    if not ctl.has_snat6:
        return None
    net6 = ipaddress.IPv6Address(b"".join(w.to_bytes(4, "little") for w in ctl.snat6_net))
    hosts = socket.ntohl(ctl.snat6_mask[3]) + 1
    return ipaddress.IPv6Network(f"{net6}/{128 - (hosts.bit_length() - 1)}")


def snat_candidate(ctl: S.LbConfig, pool: Pool, i: int) -> tuple[IPAddress, int]:
    """snat_candidate(): candidate i's address (host i / ports) and port."""
    nports = ctl.snat_port_max - ctl.snat_port_min + 1
    return pool.network_address + i // nports, ctl.snat_port_min + i % nports


def _timeout(ctl: S.LbConfig, proto: int, flags: int) -> int:
    """snat_timeout_ns() in seconds."""
    if proto != PROTOCOLS["tcp"]:
        return int(ctl.snat_udp_timeout)
    return int(ctl.snat_close_timeout if flags & S.XLB_CONN_F_CLOSING else ctl.snat_tcp_timeout)


def _rev_key(snat: IPAddress, snat_port: int, be: S.Backend, port_net: int,
             proto: int) -> S.SnatKey:
    return S.SnatKey(snat_addr=S.pack_addr(snat), backend_addr=be.addr,
                     snat_port=S.net_port(snat_port), backend_port=port_net, proto=proto,
                     family=be.family)


def _snat_new(a: _Answer, b: _Backends, ctl: S.LbConfig, fkey: S.FlowKey, be: S.Backend,
              backend_id: int, cpu: int | None) -> P.Explain:
    """snat_new(): the new-entry limit, then the claim of an (address, port)."""
    limited, note = _over_limit(b, ctl.new_flow_limit, cpu)
    if note:
        a.step("connection", note)
    if limited:
        a.step("snat", "a SNAT flow without a connection entry could not be translated back: "
                       "dropped")
        return a.done("drop_snat_flow_limit")
    pool = snat_pool(ctl, 4 if be.family == S.XLB_AF_INET else 6)
    nports = ctl.snat_port_max - ctl.snat_port_min + 1
    if pool is None or be.family != fkey.family or nports <= 0:
        a.step("snat", f"no SNAT pool for IPv{4 if be.family == S.XLB_AF_INET else 6}: no "
                       "(address, port) to claim")
        return a.done("drop_snat_no_port")
    n = pool.num_addresses * nports
    assert a.hash is not None
    first = a.hash % n
    rev = b.dp.maps["snat_rev"]
    now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
    for j in range(S.XLB_SNAT_PROBES):
        addr, port = snat_candidate(ctl, pool, (first + j) % n)
        e = rev.get(_rev_key(addr, port, be, fkey.dport, fkey.proto))
        where = f"{_endpoint(addr, port)} (candidate {j + 1} of {S.XLB_SNAT_PROBES})"
        if e is None:
            a.step("snat", f"claims {where}: free")
        elif bytes(e.flow) == bytes(fkey):
            a.step("snat", f"finds its own translation {where} (it outlived the connection "
                           "entry)")
        elif now - e.last_seen_ns > _timeout(ctl, fkey.proto, e.flags) * NSEC_PER_SEC:
            a.step("snat", f"takes over {where}: idle past its timeout")
        else:
            continue
        return _snat_send(a, addr, port, be, fkey)
    start = _endpoint(*snat_candidate(ctl, pool, first))
    a.step("snat", f"all {S.XLB_SNAT_PROBES} candidates from {start} are taken (pool {pool}, "
                   f"ports {ctl.snat_port_min}..{ctl.snat_port_max})")
    return a.done("drop_snat_no_port")


def _snat_send(a: _Answer, addr: IPAddress, port: int, be: S.Backend,
               fkey: S.FlowKey) -> P.Explain:
    backend = S.unpack_addr(be.addr, be.family)
    a.step("snat", f"rewritten to {_endpoint(addr, port)} -> "
                   f"{_endpoint(backend, S.host_port(fkey.dport))}; the backend's replies come "
                   "back through the LB")
    return a.done("tx_snat")


def _snat_flow(a: _Answer, b: _Backends, ctl: S.LbConfig, fkey: S.FlowKey, entry: S.Conn,
               syn: bool, cpu: int | None) -> P.Explain:
    """snat_flow(): a flow whose connection entry says SNAT, whatever its VIP's mode."""
    now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
    a.age = max(0.0, (now - entry.last_seen_ns) / NSEC_PER_SEC)
    snat = S.unpack_addr(entry.snat_addr, fkey.family)
    port = S.host_port(entry.snat_port)
    be = b.valid(entry.backend_id)
    own = False
    if be is not None:
        e = b.dp.maps["snat_rev"].get(_rev_key(snat, port, be, fkey.dport, fkey.proto))
        own = e is not None and bytes(e.flow) == bytes(fkey)
    a.step("connection", f"connection entry (SNAT, kept for the flow's life): backend id "
                         f"{entry.backend_id}, translation {_endpoint(snat, port)}"
                         f"{'' if own else ', which is no longer this flow' + chr(39) + 's'}, "
                         f"last seen {a.age:.1f} s ago")
    assert a.hash is not None
    a.step("hash", f"flow hash {a.hash:#010x} (source, ports, protocol)")
    if syn:
        a.slot = a.hash % b.ring_size
        pick = b.slot(a.slot)
        pbe = b.valid(pick) if pick != S.XLB_NO_BACKEND else None
        if pbe is None:
            a.step("maglev", f"Maglev slot {a.slot} holds no usable backend")
            return a.done("drop_no_backend")
        a.path = "maglev_syn"
        a.backend = str(S.unpack_addr(pbe.addr, pbe.family))
        if own and pick == entry.backend_id and be is not None:
            a.step("maglev", f"Maglev slot {a.slot} holds the same backend: a retransmitted "
                             "SYN keeps its translation")
            a.step("backend", b.line(be, pick, True))
            return _snat_send(a, snat, port, be, fkey)
        a.step("maglev", f"Maglev slot {a.slot} holds backend id {pick}: a new translation")
        a.step("backend", b.line(pbe, pick, True))
        return _snat_new(a, b, ctl, fkey, pbe, pick, cpu)
    if not own:
        if fkey.proto == PROTOCOLS["tcp"]:
            a.backend = str(S.unpack_addr(be.addr, be.family)) if be is not None else None
            a.step("snat", "TCP whose translation is gone cannot be translated: dropped")
            return a.done("drop_snat_no_entry")
        a.path = "maglev_stale"
        if be is None:
            a.slot = a.hash % b.ring_size
            pick = b.slot(a.slot)
            be = b.valid(pick) if pick != S.XLB_NO_BACKEND else None
            if be is None:
                a.step("maglev", f"the backend is gone and Maglev slot {a.slot} holds none "
                                 "usable")
                return a.done("drop_no_backend")
            a.step("maglev", f"the backend is gone: Maglev slot {a.slot} holds backend id "
                             f"{pick}")
            backend_id = pick
        else:
            backend_id = entry.backend_id
            a.step("snat", "UDP: a new translation, to the same backend")
        a.backend = str(S.unpack_addr(be.addr, be.family))
        a.step("backend", b.line(be, backend_id, True))
        return _snat_new(a, b, ctl, fkey, be, backend_id, cpu)
    assert be is not None
    a.path = "conn"
    a.backend = str(S.unpack_addr(be.addr, be.family))
    a.step("backend", b.line(be, entry.backend_id, b.in_ring(entry.backend_id)))
    return _snat_send(a, snat, port, be, fkey)


def _snat_reply(a: _Answer, dp: Dataplane, s: IPAddress, sport: int | None, d: IPAddress,
                dport: int, proto: int, pool: Pool, names: Mapping[str, str] | None) -> P.Explain:
    """snat_reply(): a backend's reply to an address of the pool, by snat_rev."""
    a.step("vip", f"{d} is in the SNAT pool {pool}: a backend's reply to a SNAT flow")
    if sport is None:
        raise InvalidParams("a reply to a SNAT address is looked up by its source port: "
                            "give one")
    key = S.SnatKey(snat_addr=S.pack_addr(d), backend_addr=S.pack_addr(s),
                    snat_port=S.net_port(dport), backend_port=S.net_port(sport), proto=proto,
                    family=S.family_of(d))
    e = dp.maps["snat_rev"].get(key)
    if e is None:
        a.step("snat", f"no translation holds {_endpoint(d, dport)} for {_endpoint(s, sport)}")
        return a.done("drop_snat_no_entry")
    f = e.flow
    client = S.unpack_addr(f.src, f.family)
    vip = S.unpack_addr(f.dst, f.family)
    label = vip_label(vip, S.host_port(f.dport), PROTOCOL_NAMES.get(proto, str(proto)))
    a.vip = (names if names is not None else vip_names(dp.applied_config())).get(label, label)
    a.backend, a.path = str(s), "conn"
    a.step("snat", f"translation of {_endpoint(client, S.host_port(f.sport))} -> "
                   f"{_endpoint(vip, S.host_port(f.dport))}: rewritten to that VIP -> client")
    return a.done("tx_snat_reply")


def _over_limit(b: _Backends, limit: int, cpu: int | None) -> tuple[bool, str]:
    """may_record(): whether the new-entry limit stops this flow's entry, and a line saying
    so (empty if there is no limit or no CPU is at it)."""
    if not limit:
        return False, ""
    now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
    rows = b.dp.maps["flow_guard"].read_percpu()[0]  # (cpus, [window_ns, count])
    full = [c for c, (window, count) in enumerate(rows.tolist())
            if (now - window) % (1 << 64) < NSEC_PER_SEC and count >= limit]
    if cpu is not None:
        limited = cpu in full
        return limited, (f"CPU {cpu} made its {limit} new entries this second: no entry "
                         "is made" if limited else "")
    if not full:
        return False, ""
    if len(full) == len(rows):
        return True, (f"every CPU made its {limit} new entries this second: no entry is "
                      "made")
    cpus = ", ".join(map(str, full))
    return False, (f"CPU(s) {cpus} made their {limit} new entries this second: a packet "
                   "arriving there gets no entry (tx_encap_flow_limit)")


def _shares(a: _Answer, b: _Backends, s: IPAddress, dport: int, protocol: str) -> P.Explain:
    """No source port: where new flows go (a TCP connection's SYN), as each backend's share
    of the 65,536 source ports, from the ring."""
    a.step("connection", "no source port: the connection table is not asked; this is where "
                         "new flows go")
    ports = np.arange(65536, dtype=np.uint32)
    slots = flow_hashes(s, ports, dport, PROTOCOLS[protocol]) % np.uint32(b.ring_size)
    ids, counts = np.unique(b.ring()[slots], return_counts=True)
    shares: dict[str, float] = {}
    for bid, n in sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda x: -x[1]):
        be = b.valid(bid) if bid != S.XLB_NO_BACKEND else None
        if be is None:
            a.step("maglev", f"{n / 65536:.1%} of source ports: no usable backend (dropped)")
            continue
        addr = str(S.unpack_addr(be.addr, be.family))
        shares[addr] = n / 65536
        a.step("backend", f"{n / 65536:.1%} of source ports: {b.line(be, bid, True)}")
    a.shares = shares
    if not shares:
        return a.done("drop_no_backend")
    a.path = "maglev_syn" if protocol == "tcp" else "maglev"
    return a.done("tx_encap")

