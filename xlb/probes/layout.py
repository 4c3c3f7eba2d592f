"""ctypes mirrors of probes/probes.h, and turning a recorded 5-tuple into a Packet."""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import time

import numpy as np

from xlb.api import protocol as P

MAX_REASONS = 256   # probes.h
EXAMPLES = 8
MAX_WATCHED = 4096
PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}


class Tuple(ctypes.Structure):
    _fields_ = [("time", ctypes.c_uint64), ("reason", ctypes.c_uint32),
                ("family", ctypes.c_uint8), ("proto", ctypes.c_uint8),
                ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("pad", ctypes.c_uint16), ("saddr", ctypes.c_uint8 * 16),
                ("daddr", ctypes.c_uint8 * 16)]


class AddrKey(ctypes.Structure):
    _fields_ = [("family", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3),
                ("addr", ctypes.c_uint8 * 16)]


TUPLE_SIZE = ctypes.sizeof(Tuple)


def addr_key(address: str) -> AddrKey:
    ip = ipaddress.ip_address(address)
    k = AddrKey(family=ip.version)
    ctypes.memmove(k.addr, ip.packed, len(ip.packed))
    return k


def _boot_offset() -> float:
    """Unix time minus CLOCK_MONOTONIC (what bpf_ktime_get_ns counts)."""
    return time.time() - time.monotonic()


def packets(rows: np.ndarray) -> list[P.Packet]:
    """Recorded tuples (rows of TUPLE_SIZE bytes; empty slots skipped), newest first."""
    out: list[tuple[int, P.Packet]] = []
    offset = _boot_offset()
    for raw in rows:
        t = Tuple.from_buffer_copy(bytes(raw))
        if not t.time or t.family not in (4, 6):
            continue
        n = 4 if t.family == 4 else 16
        fam = socket.AF_INET if t.family == 4 else socket.AF_INET6
        out.append((t.time, {
            "time": round(t.time / 1e9 + offset, 3),
            "protocol": PROTOCOLS.get(t.proto, str(t.proto)),
            "src": socket.inet_ntop(fam, bytes(t.saddr[:n])),
            "sport": socket.ntohs(t.sport),
            "dst": socket.inet_ntop(fam, bytes(t.daddr[:n])),
            "dport": socket.ntohs(t.dport)}))
    return [p for _, p in sorted(out, key=lambda x: -x[0])]
