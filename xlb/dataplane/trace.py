"""Flow traces, the data-plane side: the filter as the XDP program reads it, and the
reader of its ring buffer.

`filter_config()` turns filter values into the struct the program matches packets with
(`Dataplane.set_trace` writes it). `TraceReader` consumes the pinned ring buffer
`trace_events` with bpf(2) and mmap only (no BCC, so an agent that did not compile the
program, or was restarted, reads the same ring), and reads the per-CPU counters of
events written and lost (a full ring loses events: they are counted, never silent).
"""

from __future__ import annotations

import ctypes
import ipaddress
import mmap
import os
import select
import struct
from dataclasses import dataclass

from xlb.dataplane import bpfsys
from xlb.dataplane import structs as S
from xlb.dataplane.maps import SPECS, TRACE_EVENTS, PinnedMap, pin_dir
from xlb.errors import InvalidParams, LayoutError
from xlb.paths import PIN_ROOT

BPF_MAP_TYPE_RINGBUF = 27
_BUSY = 1 << 31     # BPF_RINGBUF_BUSY_BIT: reserved, not yet submitted
_DISCARD = 1 << 30  # BPF_RINGBUF_DISCARD_BIT
_HDR = 8            # BPF_RINGBUF_HDR_SZ: u32 len, u32 page offset
_EVENT_SIZE = ctypes.sizeof(S.TraceEvent)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _prefix(net: Network) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return S.pack_addr(net.network_address), S.pack_addr(net.netmask)


def filter_config(*, src: Network | None = None, dst: Network | None = None,
                  host: Network | None = None, sport: int | None = None,
                  dport: int | None = None, port: int | None = None, proto: int | None = None,
                  vip_id: int | None = None, backend_id: int | None = None,
                  sample: int = 1, mode: int = S.XLB_TRACE_ON) -> S.TraceConfig:
    """The trace config matching packets with every given value (none given: every
    packet), 1 in `sample` of them. Ports in host order, proto an IP protocol number,
    prefixes of one address family. Bad values raise InvalidParams."""
    if not 0 <= sample <= 0xFFFFFFFF:
        raise InvalidParams(f"trace sample {sample} is out of range 0..{0xFFFFFFFF}")
    t = S.TraceConfig(mode=mode, sample=sample)
    nets = {"src": src, "dst": dst, "host": host}
    versions = {n.version for n in nets.values() if n is not None}
    if len(versions) > 1:
        raise InvalidParams("a trace filter's src, dst and host must be of one address family")
    for name, bit in (("src", S.XLB_TF_SRC), ("dst", S.XLB_TF_DST), ("host", S.XLB_TF_HOST)):
        net = nets[name]
        if net is not None:
            addr, mask = _prefix(net)
            getattr(t, name)[:] = addr
            getattr(t, f"{name}_mask")[:] = mask
            t.fields |= bit
            t.family = S.XLB_AF_INET if net.version == 4 else S.XLB_AF_INET6
    for name, bit, value in (("sport", S.XLB_TF_SPORT, sport), ("dport", S.XLB_TF_DPORT, dport),
                             ("port", S.XLB_TF_PORT, port)):
        if value is not None:
            if not 0 <= value <= 0xFFFF:
                raise InvalidParams(f"trace filter {name} {value} is not a port (0..65535)")
            setattr(t, name, S.net_port(value))
            t.fields |= bit
    for name, bit, value, top in (("proto", S.XLB_TF_PROTO, proto, 0xFF),
                                  ("vip_id", S.XLB_TF_VIP, vip_id, 0xFFFFFFFE),
                                  ("backend_id", S.XLB_TF_BACKEND, backend_id, 0xFFFFFFFE)):
        if value is not None:
            if not 0 <= value <= top:
                raise InvalidParams(f"trace filter {name} {value} is out of range 0..{top}")
            setattr(t, name, value)
            t.fields |= bit
    check_config(t)
    return t


def check_config(t: S.TraceConfig) -> None:
    """Refuse a trace config the data plane would misread (InvalidParams)."""
    if t.mode not in (S.XLB_TRACE_OFF, S.XLB_TRACE_ON):
        raise InvalidParams(f"trace mode {t.mode} is neither off (0) nor on (1)")
    if t.fields & ~S.XLB_TF_ALL:
        raise InvalidParams(f"trace filter fields {t.fields:#x} has unknown bits")
    if t.fields & (S.XLB_TF_SRC | S.XLB_TF_DST | S.XLB_TF_HOST):
        if t.family not in (S.XLB_AF_INET, S.XLB_AF_INET6):
            raise InvalidParams(f"trace filter family {t.family} is neither 4 nor 6")
        for name in ("src", "dst", "host"):
            net, mask = getattr(t, name), getattr(t, f"{name}_mask")
            if any(a & ~m & 0xFFFFFFFF for a, m in zip(net, mask, strict=True)):
                raise InvalidParams(f"trace filter {name} has bits outside its mask")


@dataclass(frozen=True)
class TraceRecord:
    """One packet as the data plane traced it (struct xlb_trace_event, decoded).

    src/dst are None when the packet is not IP (family 0); ports are in host order and
    0 unless the packet is TCP/UDP to a VIP address (or an ICMP error's quoted flow). A
    SNAT reply's event carries its client's flow (client -> VIP), as the forward packets'
    do, with the translation in snat_src/snat_port."""

    time_ns: int                  # CLOCK_MONOTONIC
    cpu: int
    queue: int
    ifindex: int
    family: int                   # S.XLB_AF_INET, S.XLB_AF_INET6, or 0: not IP
    proto: int                    # IP protocol number (0: not IP)
    src: S.IPAddress | None
    sport: int
    dst: S.IPAddress | None
    dport: int
    vip_id: int | None            # None: not a VIP flow
    backend_id: int | None        # None: no backend chosen
    hash: int                     # the flow hash (0: not computed)
    path: S.Path
    action: int                   # XDP action (S.XDP_ACTIONS names them)
    reason: S.Reason
    length: int                   # bytes of the frame as it arrived
    outer_src: S.IPAddress | None  # outer source when encapsulated
    mode: int = S.XLB_MODE_DSR     # the flow's forwarding mode (S.XLB_MODE_*)
    snat_src: S.IPAddress | None = None  # tx_snat/tx_snat_reply: the SNAT address...
    snat_port: int = 0             # ...and port (host order) the backend sees

    @classmethod
    def decode(cls, ev: S.TraceEvent) -> TraceRecord:
        f = ev.flow
        ip = f.family in (S.XLB_AF_INET, S.XLB_AF_INET6)
        return cls(
            time_ns=int(ev.time_ns), cpu=int(ev.cpu), queue=int(ev.queue),
            ifindex=int(ev.ifindex), family=int(f.family) if ip else 0, proto=int(f.proto),
            src=S.unpack_addr(f.src, f.family) if ip else None, sport=S.host_port(f.sport),
            dst=S.unpack_addr(f.dst, f.family) if ip else None, dport=S.host_port(f.dport),
            vip_id=None if ev.vip_id == S.XLB_NO_VIP else int(ev.vip_id),
            backend_id=None if ev.backend_id == S.XLB_NO_BACKEND else int(ev.backend_id),
            hash=int(ev.hash), path=S.Path(ev.path), action=int(ev.action),
            reason=S.Reason(ev.reason), length=int(ev.len),
            outer_src=(S.unpack_addr(ev.outer_src, ev.outer_family)
                       if ev.outer_family in (S.XLB_AF_INET, S.XLB_AF_INET6) else None),
            mode=int(ev.mode),
            snat_src=(S.unpack_addr(ev.snat_addr, f.family)
                      if ev.snat_port and ip else None),
            snat_port=S.host_port(ev.snat_port))


class TraceReader:
    """The consumer of one instance's pinned trace ring buffer.

    The kernel keeps one consumer position per ring, in the ring: a reader opened later
    (a restarted agent) goes on where the last one stopped. One reader at a time.
    Ordering: the producer position and record headers are read with plain loads, which
    x86-64 (TSO) keeps in order; that is the architecture xlb runs on."""

    def __init__(self, instance: str, pin_root: str = PIN_ROOT):
        pins = pin_dir(instance, pin_root)
        path = os.path.join(pins, TRACE_EVENTS)
        self._fd = bpfsys.obj_get(path)
        self._cons: mmap.mmap | None = None
        self._data: mmap.mmap | None = None
        self._stats: PinnedMap | None = None
        try:
            info = bpfsys.map_info(self._fd)
            if info.type != BPF_MAP_TYPE_RINGBUF:
                raise LayoutError(f"{path} is not a ring buffer (map type {info.type})")
            self.size = int(info.max_entries)
            self._mask = self.size - 1
            page = mmap.PAGESIZE
            self._page = page
            # consumer page (ours to write), then producer page and the data mapped twice
            # (a record that wraps reads straight on)
            self._cons = mmap.mmap(self._fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._data = mmap.mmap(self._fd, page + 2 * self.size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
            self._stats = PinnedMap(os.path.join(pins, "trace_stats"), SPECS["trace_stats"])
        except BaseException:
            self.close()
            raise
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def fileno(self) -> int:
        """The ring buffer's fd: readable (poll/epoll) while events wait."""
        return self._fd

    def _consumer(self) -> int:
        assert self._cons is not None
        return int(struct.unpack_from("@Q", self._cons, 0)[0])

    def _producer(self) -> int:
        assert self._data is not None
        return int(struct.unpack_from("@Q", self._data, 0)[0])

    def pending(self) -> int:
        """Bytes of records not read yet."""
        return self._producer() - self._consumer()

    def skip(self) -> None:
        """Drop every event waiting (e.g. left over from an earlier trace)."""
        assert self._cons is not None
        struct.pack_into("@Q", self._cons, 0, self._producer())

    def _read(self, max_events: int) -> list[TraceRecord]:
        assert self._cons is not None and self._data is not None
        out: list[TraceRecord] = []
        cons = self._consumer()
        prod = self._producer()
        start = cons
        while cons < prod and len(out) < max_events:
            off = self._page + (cons & self._mask)
            length = int(struct.unpack_from("@I", self._data, off)[0])
            if length & _BUSY:
                break  # reserved, not submitted yet: later records wait for it
            size = length & ~(_BUSY | _DISCARD)
            if not length & _DISCARD and size >= _EVENT_SIZE:
                out.append(TraceRecord.decode(
                    S.TraceEvent.from_buffer_copy(self._data, off + _HDR)))
            cons += (size + _HDR + 7) & ~7
        if cons != start:
            struct.pack_into("@Q", self._cons, 0, cons)
        return out

    def poll(self, timeout: float, max_events: int = 4096) -> list[TraceRecord]:
        """Up to max_events records, oldest first; waits at most `timeout` seconds for
        the first one (0: never waits)."""
        out = self._read(max_events)
        if out or timeout <= 0:
            return out
        if self._poll.poll(max(1, int(timeout * 1000))):
            out = self._read(max_events)
        return out

    def _stat(self, field: int) -> int:
        assert self._stats is not None
        return int(self._stats.read_array()[0, field])

    def written(self) -> int:
        """Events the data plane put in the ring, summed over CPUs, since it was made."""
        return self._stat(0)

    def lost(self) -> int:
        """Events the data plane could not write (ring full), summed over CPUs."""
        return self._stat(1)

    def close(self) -> None:
        for m in (self._cons, self._data):
            if m is not None:
                m.close()
        self._cons = self._data = None
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
