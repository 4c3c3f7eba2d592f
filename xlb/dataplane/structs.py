"""ctypes mirror of bpf/xlb_shared.h: the one place Python knows map layouts.

tests/dataplane/test_structs.py compiles the header with BCC and checks every struct's
size and field offsets, and every enum value, against this module.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from enum import IntEnum

XLB_MAGIC = 0x786C6230
XLB_LAYOUT_VERSION = 5
XLB_MAX_QUEUES = 64
XLB_NUM_ACTIONS = 5
XLB_NO_BACKEND = 0xFFFFFFFF
XLB_NO_VIP = 0xFFFFFFFF
XLB_MAX_REASONS = 32  # reason_stats slots (more than the reasons: new ones fit the same maps)
XLB_MAX_MISSES = 8  # miss_stats slots (more than the kinds)
XLB_AF_INET = 4
XLB_AF_INET6 = 6
XLB_BACKEND_VALID = 0x1
XLB_MODE_DSR = 0
XLB_MODE_SNAT = 1
XLB_VIP_F_SNAT = 0x1
XLB_CONN_F_CLOSING = 0x1
XLB_SNAT_PROBES = 16
XLB_VIP_INDEX_SLOTS = 256  # per bank of the VIP index (two banks)
XLB_VIP_INDEX_MAX_KEYS = 64
XLB_ACTIVE_EPOCH_SHIFT = 33  # activity epoch: 2**33 ns of CLOCK_MONOTONIC, about 8.6 s
XLB_TRACE_OFF = 0
XLB_TRACE_ON = 1
XLB_TF_SRC = 0x1
XLB_TF_DST = 0x2
XLB_TF_HOST = 0x4
XLB_TF_SPORT = 0x8
XLB_TF_DPORT = 0x10
XLB_TF_PORT = 0x20
XLB_TF_PROTO = 0x40
XLB_TF_VIP = 0x80
XLB_TF_BACKEND = 0x100
XLB_TF_ALL = 0x1FF

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

XDP_ACTIONS = ("aborted", "drop", "pass", "tx", "redirect")


class Reason(IntEnum):
    """enum xlb_reason: why a packet got its verdict."""

    PASS_NOT_IP = 0
    PASS_NOT_VIP = 1
    PASS_VIP_NO_SERVICE = 2
    PASS_VIP_OTHER_PROTO = 3
    DROP_MALFORMED = 4
    DROP_FRAGMENT = 5
    DROP_IP_OPTIONS = 6
    DROP_NO_BACKEND = 7
    DROP_ADJUST_FAILED = 8
    TX_ICMP_TOO_BIG = 9
    TX_ENCAP = 10
    TX_ENCAP_NO_ENTRY = 11
    TX_ENCAP_FLOW_LIMIT = 12
    TX_ENCAP_ICMP_ERROR = 13
    TX_ICMP_ECHO = 14
    DROP_ICMP_TOO_BIG = 15
    TX_SNAT = 16
    TX_SNAT_REPLY = 17
    DROP_SNAT_NO_PORT = 18
    DROP_SNAT_FLOW_LIMIT = 19
    DROP_SNAT_NO_ENTRY = 20

    @property
    def label(self) -> str:
        """The reason's name in the API (protocol.REASONS; a test checks they agree)."""
        return self.name.lower()


class Miss(IntEnum):
    """enum xlb_miss: the kinds of connection-table miss (map miss_stats)."""

    TCP_SYN = 0
    TCP_NON_SYN = 1
    UDP = 2

    @property
    def label(self) -> str:
        """The kind's name in the API and the metrics (protocol.MISSES; a test checks)."""
        return self.name.lower()


class Path(IntEnum):
    """enum xlb_path: how a packet's backend was chosen (flow traces)."""

    NONE = 0
    CONN = 1
    MAGLEV = 2
    MAGLEV_SYN = 3
    MAGLEV_STALE = 4

    @property
    def label(self) -> str:
        """The path's name in the API (protocol.PATHS; a test checks they agree)."""
        return self.name.lower()


class VipKey(ctypes.Structure):
    _fields_ = [("addr", u32 * 4), ("port", u16), ("proto", u8), ("family", u8)]


class VipMeta(ctypes.Structure):
    _fields_ = [("vip_id", u32), ("ring_slot", u32), ("flags", u32), ("pad", u32)]


class VipSlot(ctypes.Structure):
    """struct xlb_vip_slot (map `vip_index`): one VIP key and its entry of `vips`."""

    _fields_ = [("key", VipKey), ("meta", VipMeta)]


class AddrKey(ctypes.Structure):
    _fields_ = [("addr", u32 * 4), ("family", u8), ("pad", u8 * 3)]


class FlowKey(ctypes.Structure):
    _fields_ = [("src", u32 * 4), ("dst", u32 * 4), ("sport", u16), ("dport", u16),
                ("proto", u8), ("family", u8), ("pad", u16)]


class Conn(ctypes.Structure):
    _fields_ = [("backend_id", u32), ("vip_id", u32), ("last_seen_ns", u64),
                ("snat_addr", u32 * 4), ("snat_port", u16), ("mode", u8), ("pad", u8),
                ("hash", u32)]


class SnatKey(ctypes.Structure):
    """struct xlb_snat_key (map `snat_rev`): a reply as it arrives from the backend."""

    _fields_ = [("snat_addr", u32 * 4), ("backend_addr", u32 * 4), ("snat_port", u16),
                ("backend_port", u16), ("proto", u8), ("family", u8), ("pad", u16)]


class SnatEntry(ctypes.Structure):
    """struct xlb_snat_entry (map `snat_rev`): the client's flow a translation belongs to."""

    _fields_ = [("flow", FlowKey), ("last_seen_ns", u64), ("vip_id", u32),
                ("backend_id", u32), ("flags", u32), ("pad", u32)]


class SnatStats(ctypes.Structure):
    """struct xlb_snat_stats (map `snat_stats`, per CPU, per VIP)."""

    _fields_ = [("packets", u64), ("bytes", u64), ("reply_packets", u64),
                ("reply_bytes", u64), ("translations", u64), ("no_port", u64)]


class Backend(ctypes.Structure):
    _fields_ = [("addr", u32 * 4), ("family", u8), ("flags", u8), ("pad", u16)]


class TraceConfig(ctypes.Structure):
    """struct xlb_trace_config: which packets emit a trace event (ctl's `trace` member).
    Prefixes stored masked, addresses and ports in network order."""

    _fields_ = [("mode", u8), ("family", u8), ("proto", u8), ("pad", u8),
                ("fields", u32), ("sample", u32),
                ("sport", u16), ("dport", u16), ("port", u16), ("pad2", u16),
                ("vip_id", u32), ("backend_id", u32),
                ("src", u32 * 4), ("src_mask", u32 * 4), ("dst", u32 * 4), ("dst_mask", u32 * 4),
                ("host", u32 * 4), ("host_mask", u32 * 4)]


class LbConfig(ctypes.Structure):
    """struct xlb_config (map `ctl`)."""

    _fields_ = [("nexthop_mac", u8 * 6), ("has_nexthop_mac", u8), ("pad0", u8),
                ("mtu", u32), ("src4_net", u32), ("src4_mask", u32),
                ("src6_net", u32 * 4), ("src6_mask", u32 * 4), ("new_flow_limit", u32),
                ("trace", TraceConfig),
                ("snat4_net", u32), ("snat4_mask", u32), ("snat6_net", u32 * 4),
                ("snat6_mask", u32 * 4), ("has_snat4", u8), ("has_snat6", u8),
                ("snat_port_min", u16), ("snat_port_max", u16), ("vip_index", u16),
                ("snat_tcp_timeout", u32), ("snat_udp_timeout", u32),
                ("snat_close_timeout", u32), ("vip_filter", u32)]


class FlowGuard(ctypes.Structure):
    """struct xlb_flow_guard (map `flow_guard`, per CPU): entries made this second."""

    _fields_ = [("window_ns", u64), ("count", u64)]


class Meta(ctypes.Structure):
    _fields_ = [("magic", u32), ("layout_version", u32), ("ring_size", u32),
                ("max_vips", u32), ("max_backends", u32), ("max_queues", u32),
                ("max_connections", u64), ("max_snat", u64)]


class QueueStats(ctypes.Structure):
    _fields_ = [("packets", u64), ("bytes", u64), ("actions", u64 * XLB_NUM_ACTIONS)]


class Traffic(ctypes.Structure):
    _fields_ = [("packets", u64), ("bytes", u64)]


class BackendStats(ctypes.Structure):
    """Per CPU; active[epoch & 1] counts the flows first seen in that epoch, and
    active_epoch[epoch & 1] says which epoch the slot holds."""

    _fields_ = [("packets", u64), ("bytes", u64), ("new_conns", u64),
                ("active", u64 * 2), ("active_epoch", u64 * 2)]


class TraceEvent(ctypes.Structure):
    """struct xlb_trace_event: one record of the trace ring buffer."""

    _fields_ = [("time_ns", u64), ("cpu", u32), ("queue", u32), ("ifindex", u32),
                ("vip_id", u32), ("backend_id", u32), ("hash", u32), ("flow", FlowKey),
                ("outer_src", u32 * 4), ("outer_family", u8), ("path", u8), ("action", u8),
                ("reason", u8), ("len", u32), ("snat_addr", u32 * 4), ("snat_port", u16),
                ("mode", u8), ("pad", u8), ("pad2", u32)]


class TraceStats(ctypes.Structure):
    """struct xlb_trace_stats (map `trace_stats`, per CPU)."""

    _fields_ = [("written", u64), ("lost", u64)]


# struct name in the header -> mirror; the struct test walks this table.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "xlb_vip_key": VipKey,
    "xlb_vip_meta": VipMeta,
    "xlb_vip_slot": VipSlot,
    "xlb_addr_key": AddrKey,
    "xlb_flow_key": FlowKey,
    "xlb_conn": Conn,
    "xlb_snat_key": SnatKey,
    "xlb_snat_entry": SnatEntry,
    "xlb_snat_stats": SnatStats,
    "xlb_backend": Backend,
    "xlb_config": LbConfig,
    "xlb_flow_guard": FlowGuard,
    "xlb_meta": Meta,
    "xlb_queue_stats": QueueStats,
    "xlb_traffic": Traffic,
    "xlb_backend_stats": BackendStats,
    "xlb_trace_config": TraceConfig,
    "xlb_trace_event": TraceEvent,
    "xlb_trace_stats": TraceStats,
}


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def pack_addr(addr: IPAddress) -> tuple[int, int, int, int]:
    """An address as the four network-order words the data plane compares."""
    raw = addr.packed.ljust(16, b"\0")
    words = ctypes.cast(ctypes.create_string_buffer(raw, 16), ctypes.POINTER(u32 * 4))
    return tuple(words.contents)  # type: ignore[return-value]


def unpack_addr(words: ctypes.Array, family: int) -> IPAddress:  # type: ignore[type-arg]
    raw = bytes(words)
    if family == XLB_AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    return ipaddress.IPv6Address(raw)


def family_of(addr: IPAddress) -> int:
    return XLB_AF_INET if addr.version == 4 else XLB_AF_INET6


def net_port(port: int) -> int:
    """Ports are stored as they sit in the packet (network order) in a host u16."""
    return socket.htons(port)


def host_port(port: int) -> int:
    return socket.ntohs(port)
