"""The instance config file's schema: every key of every table declared once.

One TOML file configures an instance: `[instance]`, `[[vip]]` and `[[vip.backend]]` for
the data plane (xlb/dataplane/config.py) and `[agent]` for its agent
(xlb/agent/settings.py). Each key is declared here once, with its kind, its default (or
that it is required), its range or choices and a one-line doc. The one `Checker` reads
every table against these declarations, so a file's problems all come out in one style
with their locations, and a test holds the README's settings blocks to the same
declarations.

What a range cannot say (addresses, networks, MACs, a prime ring size, names, host:port)
is a check function hooked to the key's declaration. Rules across keys (duplicates,
max_vips, history >= tick, the health check's timing) stay with the table's parser.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from xlb.addresses import IPAddress, parse_address  # the one address rule, used here
from xlb.api.protocol import DEFAULT_TRACE_SECONDS, MAX_TRACE_SECONDS
from xlb.dataplane.maglev import DEFAULT_RING_SIZE, MAX_WEIGHT, is_prime

Kind = Literal["string", "integer", "number", "boolean", "strings"]  # strings: a list of them


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a key that must be given."""


class _Bad:
    """Marker for a value that failed validation (its error is already recorded)."""


BAD: Any = _Bad()


class Invalid(ValueError):
    """A check hook refuses a value; the message follows the key's location."""


# ------------------------------------------------------------------------ declarations


@dataclass(frozen=True)
class Bounds:
    """An inclusive range; `above` makes `lo` exclusive (an interval must be > 0)."""

    lo: float | None = None
    hi: float | None = None
    above: bool = False
    why: str = ""  # appended when a value is above `hi`: what that limit comes from

    def __contains__(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.above else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"{self.lo}..{self.hi}"
        if self.lo is not None:
            return f"{'>' if self.above else '>='} {self.lo}"
        return f"<= {self.hi}"

    def refusal(self, value: float) -> str:
        """Why a value is refused, in the checker's style."""
        shown = show(value)
        why = f" ({self.why})" if self.why and self.hi is not None and value > self.hi else ""
        if self.lo is not None and self.hi is not None:
            return f"{shown} is out of range {self}{why}"
        return f"{shown} must be {self}{why}"


@dataclass(frozen=True)
class Setting:
    """One key: `default` is its TOML value, REQUIRED, or None (the parser derives it)."""

    name: str
    kind: Kind
    doc: str
    default: Any = REQUIRED
    bounds: Bounds | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], Any] | None = None  # the value (converted) or raise Invalid

    @property
    def value(self) -> Any:
        """The default as the checker returns it (a network, not its text)."""
        if self.default is REQUIRED:
            raise KeyError(f"{self.name} is required: it has no default")
        if self.default is None or self.check is None:
            return self.default
        return self.check(self.default)

    @property
    def summary(self) -> str:
        """The doc with the declared constraints: the README's comment for this key."""
        parts = [self.doc]
        if self.choices:
            parts.append(" | ".join(self.choices))
        if self.bounds is not None:
            parts.append(str(self.bounds))
        if self.default is REQUIRED:
            parts.append("required")
        return "; ".join(parts)


@dataclass(frozen=True)
class Table:
    """The declared keys of one table; `arrays` are the arrays of tables inside it."""

    name: str
    settings: tuple[Setting, ...]
    arrays: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.settings) + self.arrays

    def __getitem__(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(f"[{self.name}] declares no key {name!r}")

    def default(self, name: str) -> Any:
        return self[name].value


# ------------------------------------------------------------------------ value checks


def show(value: object) -> str:
    """A short repr of a (possibly hostile) value for an error message."""
    try:
        text = repr(value)
    except Exception:  # a huge int, or an object whose repr fails
        if isinstance(value, int):
            return f"<integer of {value.bit_length()} bits>"
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def address_problem(addr: IPAddress) -> str | None:
    """Why `addr` cannot be a VIP, backend or encapsulation source, or None if it can."""
    if addr.is_unspecified:
        return "is the unspecified address"
    if addr.is_loopback:
        return "is a loopback address"
    if addr.is_multicast:
        return "is a multicast address"
    if addr == ipaddress.IPv4Address("255.255.255.255"):
        return "is the broadcast address"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return f"is IPv4-mapped; write {addr.ipv4_mapped} instead"
    return None


def _address(value: str) -> IPAddress:
    addr = parse_address(value)
    if addr is None:
        raise Invalid(f"{show(value)} is not an IP address")
    problem = address_problem(addr)
    if problem:
        raise Invalid(f"{addr} {problem}")
    return addr


ENCAP_PREFIX_RANGE = {4: (8, 32), 6: (8, 128)}
# SNAT pools: the host bits fit one 32-bit word (the data plane's arithmetic), and a pool
# is a handful of addresses the routers send to this LB
SNAT_PREFIX_RANGE = {4: (16, 32), 6: (96, 128)}


def _pool(value: str, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """A SNAT pool: "" = none, else a network of SNAT_PREFIX_RANGE."""
    if value == "":
        return None
    return _network(value, version, SNAT_PREFIX_RANGE)


def _network(value: str, version: int, ranges: dict[int, tuple[int, int]] | None = None
             ) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if "%" in value:
        raise Invalid(f"{show(value)}: scoped addresses are not supported")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise Invalid(f"{show(value)} is not an IP network") from None
        raise Invalid(f"{value} has host bits set (did you mean {loose}?)") from None
    if net.version != version:
        raise Invalid(f"family mismatch: {net} is IPv{net.version}, expected IPv{version}")
    lo, hi = (ranges or ENCAP_PREFIX_RANGE)[version]
    if not lo <= net.prefixlen <= hi:
        raise Invalid(f"prefix length {net.prefixlen} of {net} is out of range {lo}..{hi}")
    for edge in (net.network_address, net.broadcast_address):
        problem = address_problem(edge)
        if problem:
            raise Invalid(f"{net} contains {edge}, which {problem}")
    return net


_INSTANCE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,30}")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}")
VIP_NAME_MAX = 64


def _instance_name(value: str) -> str:
    if not _INSTANCE_NAME_RE.fullmatch(value):
        raise Invalid(f"{show(value)} does not match ^{_INSTANCE_NAME_RE.pattern}$")
    return value


def _interface(value: str) -> str:
    if not 1 <= len(value) <= 15:
        raise Invalid(f"{show(value)} must be 1..15 characters long")
    if value in (".", ".."):
        raise Invalid(f"{show(value)} is not a valid interface name")
    if any(c in "/:" or c.isspace() or not c.isprintable() for c in value):
        raise Invalid(f"{show(value)} must not contain '/', ':', whitespace or control "
                      "characters")
    return value


def _netns(value: str) -> str:
    if value and (len(value) > 255 or value in (".", "..")):
        raise Invalid(f"{show(value)} is not a valid namespace name")
    if any(c == "/" or c.isspace() or not c.isprintable() for c in value):
        raise Invalid(f"{show(value)} must not contain '/', whitespace or control characters")
    return value


def _prime(value: int) -> int:
    if not is_prime(value):
        raise Invalid(f"{value} is not prime")
    return value


def _power_of_two(value: int) -> int:
    if value & (value - 1):
        raise Invalid(f"{value} is not a power of two")
    return value


RING_PER_BACKEND = 100
"""Maglev's sizing rule (Eisenbud et al., NSDI 2016: M > 100 x N): a VIP's ring has at
least this many entries per backend. Each backend then gets within one entry of its
weight's share, about 1% of its traffic at equal weights; a smaller ring skews the split,
and one smaller than the backend count leaves some of them with no entry at all."""


def smallest_ring(backends: int) -> int:
    """The smallest valid ring size (a prime) that balances `backends` backends."""
    need = max(backends * RING_PER_BACKEND, 13)
    return next(n for n in range(need, 2 * need + 2) if is_prime(n))


def ring_problem(ring_size: int, backends: int) -> str | None:
    """Why a ring of `ring_size` cannot balance `backends` backends, or None if it can."""
    need = backends * RING_PER_BACKEND
    if ring_size >= need:
        return None
    prime = smallest_ring(backends)
    return (f"{backends} backends need instance.ring_size >= {need} (Maglev: at least "
            f"{RING_PER_BACKEND} ring entries per backend, or some get a skewed share or "
            f"none at all), e.g. {prime}; ring_size is {ring_size}")


def _mac(value: str) -> bytes | None:
    if value == "":
        return None
    if not _MAC_RE.fullmatch(value):
        raise Invalid(f"{show(value)} is not a MAC address like 'aa:bb:cc:dd:ee:ff'")
    mac = bytes.fromhex(value.replace(":", "").replace("-", ""))
    if mac[0] & 1:
        raise Invalid(f"{value} is a multicast/broadcast MAC, not a next hop")
    if mac == bytes(6):
        raise Invalid(f"{value} is the all-zero MAC")
    return mac


def _vip_name(value: str) -> str:
    if not 1 <= len(value) <= VIP_NAME_MAX:
        raise Invalid(f"{show(value)} must be 1..{VIP_NAME_MAX} characters long")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise Invalid(f"{show(value)} must not contain whitespace or control characters")
    return value


UNIX_PREFIX = "unix:"


def _listen(value: str) -> str:
    """host:port, or unix:/absolute/path (a socket only the socket group can open)."""
    if value.startswith(UNIX_PREFIX):
        path = value[len(UNIX_PREFIX):]
        if not path.startswith("/") or len(path.encode()) > 107 or "\0" in path:
            raise Invalid(f"{show(value)}: unix: needs an absolute path (at most 107 bytes)")
        return value
    host, _, port = value.rpartition(":")
    if value and not (host and port.isdigit() and int(port) <= 65535):
        raise Invalid(f"{show(value)} is not host:port or unix:PATH (\"\" turns it off)")
    return value


# ------------------------------------------------------------------------------ tables

# The XDP program reads one buffer per frame: on x86-64 a 4 KiB page less the 256 bytes of
# XDP headroom and the 320 of struct skb_shared_info (a larger frame arrives as several
# buffers, or not at all in native mode). `mtu` promises that every client packet up to
# mtu - outer header is balanced, so with the smallest outer header (IPv4, 20 bytes) and
# the longest L2 header (Ethernet + VLAN tag, 18) the packet must fit that buffer.
MAX_FRAME = 4096 - 256 - 320
MAX_MTU = MAX_FRAME - 18 + 20


INSTANCE = Table("instance", (
    Setting("name", "string", "names the instance in pin, socket and state paths",
            check=_instance_name),
    Setting("interface", "string", "the interface XDP attaches to", check=_interface),
    Setting("netns", "string", 'network namespace of the interface ("" = this one)', "",
            check=_netns),
    Setting("xdp_mode", "string", "the driver's XDP hook, or generic (SKB, any driver)",
            "native", choices=("native", "generic")),
    Setting("ring_size", "integer",
            f"Maglev ring size, a prime, >= {RING_PER_BACKEND} x the backends of any VIP",
            DEFAULT_RING_SIZE,
            Bounds(13, 1048573),
            check=_prime),
    Setting("max_vips", "integer", "VIPs the maps hold", 64, Bounds(1, 1024)),
    Setting("max_backends", "integer", "distinct backend addresses the maps hold", 4096,
            Bounds(1, 65536)),
    Setting("max_connections", "integer", "connection table entries (LRU, per-CPU lists)",
            262144, Bounds(1024, 67108864)),
    Setting("trace_buffer_kib", "integer",
            "flow-trace ring buffer, a power of two; set when the data plane is loaded",
            1024, Bounds(4, 262144), check=_power_of_two),
    Setting("mtu", "integer", "largest IP packet after encapsulation", 1500,
            Bounds(576, MAX_MTU, why=f"XDP sees frames of at most {MAX_FRAME} bytes, "
                   "one buffer")),
    Setting("flow_table_turnover", "number",
            "seconds a flood needs to refill the connection table: new entries/s at most "
            "max_connections / this, so established flows stay; 0 = no limit", 10.0,
            Bounds(0, 3600)),
    Setting("nexthop_mac", "string", '"aa:bb:cc:dd:ee:ff"; "" = back to the sender (the router)',
            "", check=_mac),
    Setting("encap_source_v4", "string", "outer IPv4 sources, host bits from the flow hash",
            "172.16.0.0/16", check=partial(_network, version=4)),
    Setting("encap_source_v6", "string", "outer IPv6 sources, host bits from the flow hash",
            "fd00:5f1b::/64", check=partial(_network, version=6)),
    Setting("snat_pool_v4", "string", "SNAT source addresses of this LB, /16../32, routed to "
            'it ("" = none: no IPv4 VIP may use SNAT)', "", check=partial(_pool, version=4)),
    Setting("snat_pool_v6", "string", "SNAT source addresses of this LB, /96../128, routed to "
            'it ("" = none)', "", check=partial(_pool, version=6)),
    Setting("snat_port_min", "integer", "lowest SNAT source port", 1024, Bounds(1, 65535)),
    Setting("snat_port_max", "integer", "highest SNAT source port", 65535, Bounds(1, 65535)),
    Setting("snat_table_size", "integer",
            "SNAT translations held (LRU); 0 = max_connections", 0, Bounds(0, 67108864)),
    Setting("snat_tcp_timeout", "integer",
            "seconds an idle TCP translation keeps its port", 7440, Bounds(10, 604800)),
    Setting("snat_udp_timeout", "integer",
            "seconds an idle UDP translation keeps its port (and an idle UDP flow its mode)",
            60, Bounds(1, 86400)),
    Setting("snat_close_timeout", "integer",
            "seconds a TCP translation keeps its port after a FIN or RST", 10,
            Bounds(1, 3600)),
))

VIP = Table("vip", (
    Setting("name", "string", "unique; default address:port/protocol", None, check=_vip_name),
    Setting("address", "string", "IPv4 or IPv6", check=_address),
    Setting("port", "integer", "0 = any port", bounds=Bounds(0, 65535)),
    Setting("protocol", "string", "the transport balanced", choices=("tcp", "udp")),
    Setting("mode", "string", "how new flows are forwarded: dsr (IP-in-IP, replies skip the "
            "LB) or snat (addresses rewritten, replies through the LB)", "dsr",
            choices=("dsr", "snat")),
), arrays=("backend",))

BACKEND = Table("vip.backend", (
    Setting("address", "string", "IPv4 or IPv6, independent of the VIP's family",
            check=_address),
    Setting("weight", "integer", "share of new flows; 0 = none", 1, Bounds(0, MAX_WEIGHT)),
    Setting("state", "string", "drained: no new flows, established ones stay", "active",
            choices=("active", "drained")),
))

AGENT = Table("agent", (
    Setting("socket", "string",
            'the API\'s Unix socket, mode 0660 ("" = /run/xlb/<instance>.sock)', ""),
    Setting("tick", "number", "seconds between counter polls and snapshots", 1.0,
            Bounds(0.25, 10)),
    Setting("history", "number", "seconds of rate history kept, at least tick", 300.0,
            Bounds(0.25, 86400)),
    Setting("operator_group", "string", "root and this group's members may change things",
            "xlb"),
    Setting("socket_group", "string", 'group owning the socket ("" = operator_group)', ""),
    Setting("max_clients", "integer", "API connections at once; an eighth kept for operators",
            128, Bounds(8, 65536)),
    Setting("max_clients_per_user", "integer", "API connections at once per read-only uid",
            16, Bounds(1, 65536)),
    Setting("client_idle_timeout", "number",
            "seconds before a silent connection is closed (not subscribers)", 60.0,
            Bounds(0.5, 86400)),
    Setting("client_send_timeout", "number",
            "seconds a client may leave answers unread before it is cut off", 10.0,
            Bounds(0.5, 3600)),
    Setting("audit_log", "string", '"" = /var/lib/xlb/<instance>/audit.jsonl', ""),
    Setting("metrics", "string",
            'Prometheus exporter host:port or unix:PATH ("" = off, port 0 = any)',
            "127.0.0.1:9465", check=_listen),
    Setting("health", "string", "one check per backend address", "tcp",
            choices=("tcp", "http", "none")),
    Setting("health_port", "integer", "0 = the port of the first TCP VIP with the backend", 0,
            Bounds(0, 65535)),
    Setting("health_path", "string", "the path http checks GET", "/"),
    Setting("health_interval", "number", "seconds between checks", 1.0, Bounds(0, above=True)),
    Setting("health_timeout", "number", "seconds, at most the interval", 0.5,
            Bounds(0, above=True)),
    Setting("health_rise", "integer", "consecutive passes that bring a backend back", 2,
            Bounds(1)),
    Setting("health_fall", "integer", "consecutive failures that take it down", 2, Bounds(1)),
    Setting("health_down_flows", "string",
            "what a down backend's TCP flows do (UDP ones move)", "move",
            choices=("move", "stay")),
    Setting("health_panic_threshold", "integer",
            "fail open below this % of a VIP's backends healthy; 0 = never", 25,
            Bounds(0, 100)),
    Setting("tamper", "string",
            "XDP detached or pins removed underneath the agent: put back, or only alarm",
            "restore", choices=("restore", "alarm")),
))

_PROBE_STATES = ("on", "off")
PROBES = Table("probes", (
    Setting("drops", "string", "kernel drops by reason (skb:kfree_skb)", "on",
            choices=_PROBE_STATES),
    Setting("xdp", "string", "XDP exceptions and redirect errors", "on", choices=_PROBE_STATES),
    Setting("napi", "string", "NAPI polls per queue and CPU", "on", choices=_PROBE_STATES),
    Setting("softirq", "string", "NET_RX softirq time per CPU", "on", choices=_PROBE_STATES),
    Setting("tcp", "string", "TCP resets and retransmits; auto: on while it costs less "
            "than auto_cpu_percent", "auto", choices=("on", "off", "auto")),
    Setting("runtime", "string", "BPF program run time (kernel run-time statistics)", "on",
            choices=_PROBE_STATES),
    Setting("auto_cpu_percent", "number", "an auto probe above this % of a CPU is detached",
            1.0, Bounds(0, 100, above=True)),
))

TRACE = Table("trace", (
    Setting("history", "integer", "recent trace events the agent keeps for new watchers",
            10000, Bounds(100, 1000000)),
    Setting("forward_rate", "integer", "events per second sent to each watcher; the rest are "
            "counted as skipped", 1000, Bounds(1, 1000000)),
    Setting("seconds", "integer", "a trace started without a limit stops by itself after this "
            "long", DEFAULT_TRACE_SECONDS, Bounds(1, MAX_TRACE_SECONDS)),
    Setting("max_seconds", "integer", "the longest a trace may be asked to run",
            MAX_TRACE_SECONDS, Bounds(1, MAX_TRACE_SECONDS)),
))

MAX_ASN = 4294967295  # 4-byte ASNs (RFC 6793)


def _ipv4(value: str) -> str:
    addr = parse_address(value)
    if not isinstance(addr, ipaddress.IPv4Address):
        raise Invalid(f"{show(value)} is not an IPv4 address")
    return str(addr)


def _peer_address(value: str) -> str:
    return str(_address(value))


def _optional_address(value: str) -> str:
    return "" if value == "" else str(_address(value))


def _next_hop(value: str, version: int) -> str:
    if value == "self":
        return value
    addr = _address(value)
    if addr.version != version:
        raise Invalid(f"{addr} is IPv{addr.version}; the next hop of IPv{version} prefixes "
                      f'must be IPv{version} or "self"')
    return str(addr)


def _hold_time(value: int) -> int:
    if value in (1, 2):
        raise Invalid(f"{value} must be 0 (no keepalives) or 3..65535 (RFC 4271)")
    return value


def _vip_names(value: list[str]) -> tuple[str, ...]:
    names = tuple(_vip_name(v) for v in value)
    if len(set(names)) != len(names):
        raise Invalid(f"{show(value)} names a VIP twice")
    return names


BGP = Table("bgp", (
    Setting("local_asn", "integer", "this load balancer's AS number", bounds=Bounds(1, MAX_ASN)),
    Setting("router_id", "string", "BGP identifier, an IPv4 address (the LB's own, usually)",
            check=_ipv4),
    Setting("announce", "strings", "the VIP names whose addresses may be announced "
            "(absent: every VIP)", None, check=_vip_names),
    Setting("next_hop", "string", 'next hop of IPv4 prefixes: "self" (our session address) '
            "or an IPv4 address", "self", check=partial(_next_hop, version=4)),
    Setting("next_hop6", "string", 'next hop of IPv6 prefixes: "self" or an IPv6 address',
            "self", check=partial(_next_hop, version=6)),
    Setting("exabgp", "string", 'the exabgp command ("" = the one installed with xlb)', ""),
), arrays=("neighbor",))

BGP_NEIGHBOR = Table("bgp.neighbor", (
    Setting("address", "string", "the router's address; IPv4 prefixes go to IPv4 neighbors, "
            "IPv6 to IPv6", check=_peer_address),
    Setting("asn", "integer", "the router's AS number", bounds=Bounds(1, MAX_ASN)),
    Setting("hold_time", "integer", "seconds without a message before the session is down "
            "(0: never; 1 and 2 are refused)", 9, Bounds(0, 65535), check=_hold_time),
    Setting("local_address", "string", 'ours on that link ("" = the kernel picks)', "",
            check=_optional_address),
    Setting("passive", "boolean", "wait for the router to connect (on local_address)", False),
))

TABLES = (INSTANCE, VIP, BACKEND, AGENT, PROBES, TRACE, BGP, BGP_NEIGHBOR)


# ----------------------------------------------------------------------------- checker


class Checker:
    """Collects every problem, each with its location, while reading raw (TOML or dict)
    data against the declarations."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, loc: str, msg: str) -> None:
        self.errors.append(f"{loc}: {msg}")

    def table(self, value: object, loc: str, known: tuple[str, ...]) -> Mapping | None:
        """`value` if it is a table (unknown keys are errors: a typo must not fall back)."""
        if not isinstance(value, Mapping):
            self.err(loc, f"expected a table, got {show(value)}")
            return None
        for key in value:
            if key not in known:
                self.err(loc, f"unknown key {show(key)}")
        return value

    def array(self, value: object, loc: str, hint: str) -> list | tuple:
        if isinstance(value, list | tuple):
            return value
        if isinstance(value, Mapping):
            self.err(loc, f"expected an array of tables (write [[{hint}]]), got a single table")
        else:
            self.err(loc, f"expected an array of tables, got {show(value)}")
        return ()

    def read(self, tbl: Mapping, loc: str, table: Table) -> dict[str, Any]:
        """Every declared key's value (default applied), or BAD where it is wrong."""
        return {s.name: self.value(tbl, loc, s) for s in table.settings}

    def value(self, tbl: Mapping, loc: str, s: Setting) -> Any:
        where = f"{loc}.{s.name}"
        if s.name not in tbl:
            if s.default is REQUIRED:
                self.err(where, "missing required key")
                return BAD
            return s.value
        try:
            value = self._typed(tbl[s.name], s)
            if s.check is not None:
                value = s.check(value)
        except Invalid as e:
            self.err(where, str(e))
            return BAD
        return value

    @staticmethod
    def _typed(value: Any, s: Setting) -> Any:
        """`value` if it has the declared kind and is in range or among the choices."""
        if s.kind == "boolean":
            if not isinstance(value, bool):
                raise Invalid(f"expected true or false, got {show(value)}")
            return value
        if s.kind == "strings":
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise Invalid(f"expected a list of strings, got {show(value)}")
            return list(value)
        if s.kind == "string":
            if not isinstance(value, str):
                raise Invalid(f"expected a string, got {show(value)}")
            if s.choices and value not in s.choices:
                allowed = [repr(c) for c in s.choices]
                raise Invalid(f"{show(value)} is not {', '.join(allowed[:-1])} or {allowed[-1]}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"expected {'an integer' if s.kind == 'integer' else 'a number'}, "
                          f"got {show(value)}")
        if s.kind == "integer" and not isinstance(value, int):
            raise Invalid(f"expected an integer, got {show(value)}")
        if s.kind == "number":
            try:
                value = float(value)
            except OverflowError:
                value = math.inf
            if not math.isfinite(value):
                raise Invalid(f"expected a finite number, got {show(value)}")
        if s.bounds is not None and value not in s.bounds:
            raise Invalid(s.bounds.refusal(value))
        return value


def ok(values: Mapping[str, Any]) -> bool:
    """Whether every value `Checker.read` returned is good."""
    return not any(v is BAD for v in values.values())
