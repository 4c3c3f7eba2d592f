"""Configuration of one xlb load-balancer instance, loaded from TOML.

The TOML layout is a contract shared with operators and with `dump_toml`:

    [instance]        name, interface, netns, xdp_mode, ring_size, max_vips,
                      max_backends, max_connections, mtu, nexthop_mac,
                      encap_source_v4, encap_source_v6
    [[vip]]           name, address, port, protocol
    [[vip.backend]]   address, weight, state

Validation collects every problem (each with a location such as
``vip[1].backend[0].weight``) so that an operator fixes a file in one pass
instead of one error per run.  Unknown keys are errors, to catch typos that
would otherwise silently fall back to a default.

The dataclasses are frozen: a running instance compares the old and the new
configuration to decide what to change in the BPF maps, which only works if
nobody mutates them in place.  Constructing them directly does not validate;
go through `parse_config`, `load_config` or the `Config.with_*`/`without_*`
methods.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from xlb.errors import ConfigError

__all__ = [
    "BackendConfig",
    "Config",
    "ConfigError",
    "InstanceConfig",
    "VipConfig",
    "dump_toml",
    "is_prime",
    "load_config",
    "parse_config",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

XDP_MODES = ("native", "generic")
PROTOCOLS = ("tcp", "udp")
BACKEND_STATES = ("active", "drained")

# Defaults of the optional [instance] keys (and the bounds that go with them).
DEFAULT_NETNS = ""
DEFAULT_XDP_MODE: Literal["native", "generic"] = "native"
DEFAULT_RING_SIZE = 65537
DEFAULT_MAX_VIPS = 64
DEFAULT_MAX_BACKENDS = 4096
DEFAULT_MAX_CONNECTIONS = 262144
DEFAULT_MTU = 1500
DEFAULT_ENCAP_SOURCE_V4 = ipaddress.IPv4Network("172.16.0.0/16")
DEFAULT_ENCAP_SOURCE_V6 = ipaddress.IPv6Network("fd00:5f1b::/64")
DEFAULT_WEIGHT = 1
DEFAULT_STATE: Literal["active", "drained"] = "active"

RING_SIZE_RANGE = (13, 1048573)
MAX_VIPS_RANGE = (1, 1024)
MAX_BACKENDS_RANGE = (1, 65536)
MAX_CONNECTIONS_RANGE = (1024, 67108864)
MTU_RANGE = (576, 9216)
PORT_RANGE = (0, 65535)
WEIGHT_RANGE = (0, 65535)
ENCAP_PREFIX_RANGE = {4: (8, 32), 6: (8, 128)}
VIP_NAME_MAX = 64

_INSTANCE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,30}")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}")
_TOML_POS_RE = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.S)

_TOP_KEYS = ("instance", "vip")
_INSTANCE_KEYS = (
    "name", "interface", "netns", "xdp_mode", "ring_size", "max_vips", "max_backends",
    "max_connections", "mtu", "nexthop_mac", "encap_source_v4", "encap_source_v6",
)
_VIP_KEYS = ("name", "address", "port", "protocol", "backend")
_BACKEND_KEYS = ("address", "weight", "state")


def is_prime(n: int) -> bool:
    """Deterministic primality test; trial division is plenty for Maglev ring sizes."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class BackendConfig:
    """One real server behind a VIP; `drained` keeps established flows but takes no new ones."""

    address: IPAddress
    weight: int = DEFAULT_WEIGHT
    state: Literal["active", "drained"] = DEFAULT_STATE

    @property
    def effective_weight(self) -> int:
        """Weight used to build the Maglev ring: a drained backend gets no new flows."""
        return 0 if self.state == "drained" else self.weight

    @property
    def family(self) -> int:
        """4 or 6: decides IPIP vs. IP6IP6/IPIP6 encapsulation towards this backend."""
        return self.address.version

    def to_dict(self) -> dict[str, Any]:
        return {"address": str(self.address), "weight": self.weight, "state": self.state}


@dataclass(frozen=True)
class VipConfig:
    """A virtual service (address, port, protocol) and the backends sharing its load."""

    name: str
    address: IPAddress
    port: int
    protocol: Literal["tcp", "udp"]
    backends: tuple[BackendConfig, ...] = ()

    @property
    def key(self) -> tuple[IPAddress, int, str]:
        """What the dataplane matches packets on; unique within an instance."""
        return (self.address, self.port, self.protocol)

    @property
    def family(self) -> int:
        return self.address.version

    def backend(self, address: IPAddress | str) -> BackendConfig:
        """The backend with this address; KeyError if there is none."""
        want = _as_address(address)
        for b in self.backends:
            if b.address == want:
                return b
        raise KeyError(f"VIP {self.name!r} has no backend {str(address)!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": str(self.address),
            "port": self.port,
            "protocol": self.protocol,
            "backend": [b.to_dict() for b in self.backends],
        }


@dataclass(frozen=True)
class InstanceConfig:
    """Settings of the instance as a whole: where XDP attaches and how maps are sized."""

    name: str
    interface: str
    netns: str = DEFAULT_NETNS
    xdp_mode: Literal["native", "generic"] = DEFAULT_XDP_MODE
    ring_size: int = DEFAULT_RING_SIZE
    max_vips: int = DEFAULT_MAX_VIPS
    max_backends: int = DEFAULT_MAX_BACKENDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    mtu: int = DEFAULT_MTU
    nexthop_mac: bytes | None = None
    encap_source_v4: ipaddress.IPv4Network = DEFAULT_ENCAP_SOURCE_V4
    encap_source_v6: ipaddress.IPv6Network = DEFAULT_ENCAP_SOURCE_V6

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "interface": self.interface,
            "netns": self.netns,
            "xdp_mode": self.xdp_mode,
            "ring_size": self.ring_size,
            "max_vips": self.max_vips,
            "max_backends": self.max_backends,
            "max_connections": self.max_connections,
            "mtu": self.mtu,
            "nexthop_mac": "" if self.nexthop_mac is None else _format_mac(self.nexthop_mac),
            "encap_source_v4": str(self.encap_source_v4),
            "encap_source_v6": str(self.encap_source_v6),
        }


@dataclass(frozen=True)
class Config:
    """A whole validated instance configuration."""

    instance: InstanceConfig
    vips: tuple[VipConfig, ...] = ()

    def backend_addresses(self) -> tuple[IPAddress, ...]:
        """Distinct backend addresses over all VIPs, first-seen order (backend table slots)."""
        return tuple(dict.fromkeys(b.address for v in self.vips for b in v.backends))

    def vip(self, name: str) -> VipConfig:
        """The VIP with this name; KeyError (listing the known names) if there is none."""
        for v in self.vips:
            if v.name == name:
                return v
        known = ", ".join(repr(v.name) for v in self.vips) or "none"
        raise KeyError(f"no VIP named {name!r} (known: {known})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with the TOML key names; `parse_config` reads it back equal."""
        return {"instance": self.instance.to_dict(), "vip": [v.to_dict() for v in self.vips]}

    def with_backend(self, vip_name: str, address: IPAddress | str, /, **changes: Any) -> Config:
        """A new, re-validated Config with one backend's `weight` and/or `state` changed."""
        bad = sorted(set(changes) - {"weight", "state"})
        if bad:
            raise ConfigError(
                f"with_backend: only 'weight' and 'state' can be changed, not {', '.join(bad)}"
            )
        vip = self.vip(vip_name)
        target = vip.backend(address).address
        data = self.to_dict()
        vi = self.vips.index(vip)
        for b in data["vip"][vi]["backend"]:
            if b["address"] == str(target):
                b.update(changes)
        return parse_config(data)

    # Topology changes. Like `with_backend` they return a new Config that went through
    # every rule of `parse_config` (addresses, duplicates, max_vips, max_backends, ...).
    # A name or address that is not there raises KeyError; anything that would make the
    # config invalid (including "already there") raises ConfigError, with locations that
    # name VIPs by name: vip['web'].backend[2].address.

    def with_added_backend(self, vip_name: str, address: IPAddress | str, /,
                           weight: int = DEFAULT_WEIGHT, state: str = DEFAULT_STATE) -> Config:
        """A new Config with one more backend (last) in VIP `vip_name`."""
        vip = self.vip(vip_name)
        addr = _address_or_raw(address)
        if any(b.address == addr for b in vip.backends):
            raise ConfigError(f"VIP {vip_name!r} already has backend {addr}")
        data = self.to_dict()
        data["vip"][self.vips.index(vip)]["backend"].append(
            {"address": str(addr) if addr is not None else address, "weight": weight,
             "state": state})
        return _reparse(data)

    def without_backend(self, vip_name: str, address: IPAddress | str, /) -> Config:
        """A new Config without this backend in VIP `vip_name` (other VIPs keep theirs)."""
        vip = self.vip(vip_name)
        addr = _address_or_raw(address)
        if addr is None:
            raise ConfigError(f"backend address {_show(address)} is not an IP address")
        target = vip.backend(addr).address
        data = self.to_dict()
        vd = data["vip"][self.vips.index(vip)]
        vd["backend"] = [b for b in vd["backend"] if b["address"] != str(target)]
        return _reparse(data)

    def with_added_vip(self, name: str, address: IPAddress | str, port: int, protocol: str,
                       backends: Iterable[Mapping[str, Any] | BackendConfig] = ()) -> Config:
        """A new Config with one more VIP (last); `backends` are [[vip.backend]] tables
        ({address, weight?, state?}) or BackendConfigs."""
        if any(v.name == name for v in self.vips):
            raise ConfigError(f"a VIP named {_show(name)} exists already")
        addr = _address_or_raw(address)
        data = self.to_dict()
        data["vip"].append({
            "name": name, "address": str(addr) if addr is not None else address,
            "port": port, "protocol": protocol,
            "backend": [b.to_dict() if isinstance(b, BackendConfig) else b for b in backends]})
        return _reparse(data)

    def without_vip(self, name: str, /) -> Config:
        """A new Config without VIP `name`."""
        vip = self.vip(name)
        data = self.to_dict()
        del data["vip"][self.vips.index(vip)]
        return _reparse(data)


# ------------------------------------------------------------------------ helpers


def _show(value: object) -> str:
    """A short repr of a (possibly hostile) value for an error message."""
    try:
        text = repr(value)
    except Exception:  # a huge int, or an object whose repr fails
        if isinstance(value, int):
            return f"<integer of {value.bit_length()} bits>"
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def vip_label(address: IPAddress, port: int, protocol: str) -> str:
    """The one spelling of a VIP: 10.0.0.1:80/tcp, [2001:db8::1]:443/tcp."""
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{port}/{protocol}"


def _format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _as_address(value: IPAddress | str) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise KeyError(f"{str(value)!r} is not an IP address") from None


def _address_or_raw(value: object) -> IPAddress | None:
    """`value` as an address, or None to let `parse_config` say what is wrong with it."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    return _parse_address(value) if isinstance(value, str) else None


def _reparse(data: dict[str, Any]) -> Config:
    """`parse_config` of an edited `Config.to_dict()`. The operator asked by VIP name, not
    by position, so error locations say vip['web'] instead of vip[0]."""
    try:
        return parse_config(data)
    except ConfigError as e:
        names = [v.get("name") if isinstance(v, Mapping) else None for v in data["vip"]]

        def label(m: re.Match[str]) -> str:
            name = names[int(m.group(1))]
            return f"vip[{name!r}]" if isinstance(name, str) else m.group(0)

        raise ConfigError(re.sub(r"vip\[(\d+)\]", label, err) for err in e.errors) from None


class _Bad:
    """Marker for a value that failed validation (its error is already recorded)."""


_BAD: Any = _Bad()
_REQUIRED: Any = object()


class _Checker:
    """Collects errors while reading raw (TOML or dict) data."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, loc: str, msg: str) -> None:
        self.errors.append(f"{loc}: {msg}")

    def table(self, value: object, loc: str, known: tuple[str, ...]) -> Mapping | None:
        if not isinstance(value, Mapping):
            self.err(loc, f"expected a table, got {_show(value)}")
            return None
        for key in value:
            if key not in known:
                self.err(loc, f"unknown key {_show(key)}")
        return value

    def array(self, value: object, loc: str, hint: str) -> list | tuple:
        if isinstance(value, list | tuple):
            return value
        if isinstance(value, Mapping):
            self.err(loc, f"expected an array of tables (write [[{hint}]]), got a single table")
        else:
            self.err(loc, f"expected an array of tables, got {_show(value)}")
        return ()

    def get(self, tbl: Mapping, loc: str, key: str, default: Any) -> Any:
        if key in tbl:
            return tbl[key]
        if default is _REQUIRED:
            self.err(f"{loc}.{key}", "missing required key")
            return _BAD
        return default

    def string(self, tbl: Mapping, loc: str, key: str, default: Any = _REQUIRED) -> Any:
        if key not in tbl and default is not _REQUIRED:
            return default
        value = self.get(tbl, loc, key, default)
        if value is _BAD or isinstance(value, str):
            return value
        self.err(f"{loc}.{key}", f"expected a string, got {_show(value)}")
        return _BAD

    def integer(
        self, tbl: Mapping, loc: str, key: str, bounds: tuple[int, int], default: Any = _REQUIRED
    ) -> Any:
        value = self.get(tbl, loc, key, default)
        if value is _BAD:
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            self.err(f"{loc}.{key}", f"expected an integer, got {_show(value)}")
            return _BAD
        lo, hi = bounds
        if not lo <= value <= hi:
            self.err(f"{loc}.{key}", f"{_show(value)} is out of range {lo}..{hi}")
            return _BAD
        return value

    def choice(
        self, tbl: Mapping, loc: str, key: str, choices: tuple[str, ...], default: Any = _REQUIRED
    ) -> Any:
        value = self.string(tbl, loc, key, default)
        if value is _BAD or value in choices:
            return value
        allowed = " or ".join(repr(c) for c in choices)
        self.err(f"{loc}.{key}", f"{_show(value)} is not {allowed}")
        return _BAD

    def address(self, tbl: Mapping, loc: str, key: str) -> Any:
        value = self.string(tbl, loc, key)
        if value is _BAD:
            return value
        where = f"{loc}.{key}"
        addr = _parse_address(value)
        if addr is None:
            self.err(where, f"{_show(value)} is not an IP address")
            return _BAD
        problem = _address_problem(addr)
        if problem:
            self.err(where, f"{addr} {problem}")
            return _BAD
        return addr

    def network(self, tbl: Mapping, loc: str, key: str, version: int, default: Any) -> Any:
        if key not in tbl:
            return default
        value = tbl[key]
        where = f"{loc}.{key}"
        if not isinstance(value, str):
            self.err(where, f"expected a string, got {_show(value)}")
            return _BAD
        if "%" in value:
            self.err(where, f"{_show(value)}: scoped addresses are not supported")
            return _BAD
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(value, strict=False)
            except ValueError:
                self.err(where, f"{_show(value)} is not an IP network")
            else:
                self.err(where, f"{value} has host bits set (did you mean {loose}?)")
            return _BAD
        if net.version != version:
            self.err(where, f"family mismatch: {net} is IPv{net.version}, expected IPv{version}")
            return _BAD
        lo, hi = ENCAP_PREFIX_RANGE[version]
        if not lo <= net.prefixlen <= hi:
            self.err(where, f"prefix length {net.prefixlen} of {net} is out of range {lo}..{hi}")
            return _BAD
        for edge in (net.network_address, net.broadcast_address):
            problem = _address_problem(edge)
            if problem:
                self.err(where, f"{net} contains {edge}, which {problem}")
                return _BAD
        return net


def _parse_address(value: str) -> IPAddress | None:
    if "%" in value:  # scope ids would not survive the trip into a BPF map
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _address_problem(addr: IPAddress) -> str | None:
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


def _check_interface(ck: _Checker, value: Any) -> None:
    where = "instance.interface"
    if not 1 <= len(value) <= 15:
        ck.err(where, f"{_show(value)} must be 1..15 characters long")
    elif value in (".", ".."):
        ck.err(where, f"{_show(value)} is not a valid interface name")
    elif any(c in "/:" or c.isspace() or not c.isprintable() for c in value):
        ck.err(where, f"{_show(value)} must not contain '/', ':', whitespace or control characters")


def _check_netns(ck: _Checker, value: Any) -> None:
    if value == "":
        return
    where = "instance.netns"
    if len(value) > 255 or value in (".", ".."):
        ck.err(where, f"{_show(value)} is not a valid namespace name")
    elif any(c == "/" or c.isspace() or not c.isprintable() for c in value):
        ck.err(where, f"{_show(value)} must not contain '/', whitespace or control characters")


def _parse_mac(ck: _Checker, value: Any) -> Any:
    if value == "":
        return None
    if value is _BAD:
        return value
    where = "instance.nexthop_mac"
    if not _MAC_RE.fullmatch(value):
        ck.err(where, f"{_show(value)} is not a MAC address like 'aa:bb:cc:dd:ee:ff'")
        return _BAD
    mac = bytes.fromhex(value.replace(":", "").replace("-", ""))
    if mac[0] & 1:
        ck.err(where, f"{value} is a multicast/broadcast MAC, not a next hop")
        return _BAD
    if mac == bytes(6):
        ck.err(where, f"{value} is the all-zero MAC")
        return _BAD
    return mac


# ------------------------------------------------------------------------- parsing


def _parse_instance(ck: _Checker, raw: Mapping) -> InstanceConfig | None:
    loc = "instance"
    before = len(ck.errors)
    name = ck.string(raw, loc, "name")
    if name is not _BAD and not _INSTANCE_NAME_RE.fullmatch(name):
        ck.err("instance.name", f"{_show(name)} does not match ^[a-z0-9][a-z0-9_-]{{0,30}}$")
        name = _BAD
    interface = ck.string(raw, loc, "interface")
    if interface is not _BAD:
        _check_interface(ck, interface)
    netns = ck.string(raw, loc, "netns", DEFAULT_NETNS)
    if netns is not _BAD:
        _check_netns(ck, netns)
    xdp_mode = ck.choice(raw, loc, "xdp_mode", XDP_MODES, DEFAULT_XDP_MODE)
    ring_size = ck.integer(raw, loc, "ring_size", RING_SIZE_RANGE, DEFAULT_RING_SIZE)
    if ring_size is not _BAD and not is_prime(ring_size):
        ck.err("instance.ring_size", f"{ring_size} is not prime")
    max_vips = ck.integer(raw, loc, "max_vips", MAX_VIPS_RANGE, DEFAULT_MAX_VIPS)
    max_backends = ck.integer(raw, loc, "max_backends", MAX_BACKENDS_RANGE, DEFAULT_MAX_BACKENDS)
    max_conns = ck.integer(
        raw, loc, "max_connections", MAX_CONNECTIONS_RANGE, DEFAULT_MAX_CONNECTIONS
    )
    mtu = ck.integer(raw, loc, "mtu", MTU_RANGE, DEFAULT_MTU)
    mac = _parse_mac(ck, ck.string(raw, loc, "nexthop_mac", ""))
    src4 = ck.network(raw, loc, "encap_source_v4", 4, DEFAULT_ENCAP_SOURCE_V4)
    src6 = ck.network(raw, loc, "encap_source_v6", 6, DEFAULT_ENCAP_SOURCE_V6)
    if len(ck.errors) > before:
        return None
    return InstanceConfig(
        name=name, interface=interface, netns=netns, xdp_mode=xdp_mode, ring_size=ring_size,
        max_vips=max_vips, max_backends=max_backends, max_connections=max_conns, mtu=mtu,
        nexthop_mac=mac, encap_source_v4=src4, encap_source_v6=src6,
    )


def _vip_addresses(raw_vips: list | tuple) -> dict[IPAddress, int]:
    """First VIP index of each parsable VIP address (errors are reported later)."""
    found: dict[IPAddress, int] = {}
    for i, raw in enumerate(raw_vips):
        value = raw.get("address") if isinstance(raw, Mapping) else None
        addr = _parse_address(value) if isinstance(value, str) else None
        if addr is not None:
            found.setdefault(addr, i)
    return found


def _parse_backends(
    ck: _Checker, raw: Any, loc: str, vip_addrs: dict[IPAddress, int]
) -> list[BackendConfig]:
    backends: list[BackendConfig] = []
    seen: dict[IPAddress, int] = {}
    for j, raw_b in enumerate(ck.array(raw, f"{loc}.backend", "vip.backend")):
        bloc = f"{loc}.backend[{j}]"
        tbl = ck.table(raw_b, bloc, _BACKEND_KEYS)
        if tbl is None:
            continue
        addr = ck.address(tbl, bloc, "address")
        weight = ck.integer(tbl, bloc, "weight", WEIGHT_RANGE, DEFAULT_WEIGHT)
        state = ck.choice(tbl, bloc, "state", BACKEND_STATES, DEFAULT_STATE)
        if addr is not _BAD:
            if addr in seen:
                ck.err(f"{bloc}.address", f"{addr} duplicates {loc}.backend[{seen[addr]}]")
            else:
                seen[addr] = j
            if addr in vip_addrs:
                ck.err(f"{bloc}.address", f"{addr} is a VIP address (vip[{vip_addrs[addr]}])")
        if _BAD not in (addr, weight, state):
            backends.append(BackendConfig(address=addr, weight=weight, state=state))
    return backends


def _parse_vips(ck: _Checker, raw_vips: list | tuple) -> list[VipConfig]:
    vip_addrs = _vip_addresses(raw_vips)
    vips: list[VipConfig] = []
    names: dict[str, int] = {}
    keys: dict[tuple, int] = {}
    for i, raw in enumerate(raw_vips):
        loc = f"vip[{i}]"
        tbl = ck.table(raw, loc, _VIP_KEYS)
        if tbl is None:
            continue
        name = ck.string(tbl, loc, "name", None)
        if name is not None and name is not _BAD:
            if not 1 <= len(name) <= VIP_NAME_MAX:
                ck.err(f"{loc}.name", f"{_show(name)} must be 1..{VIP_NAME_MAX} characters long")
                name = _BAD
            elif any(c.isspace() or not c.isprintable() for c in name):
                ck.err(f"{loc}.name", f"{_show(name)} must not contain whitespace or control "
                       "characters")
                name = _BAD
        addr = ck.address(tbl, loc, "address")
        port = ck.integer(tbl, loc, "port", PORT_RANGE)
        protocol = ck.choice(tbl, loc, "protocol", PROTOCOLS)
        backends = _parse_backends(ck, tbl.get("backend", ()), loc, vip_addrs)
        if _BAD not in (addr, port, protocol):
            key = (addr, port, protocol)
            if key in keys:
                ck.err(loc, f"{vip_label(*key)} duplicates vip[{keys[key]}]")
            else:
                keys[key] = i
            if name is None:
                name = vip_label(*key)
        if name is not None and name is not _BAD:
            if name in names:
                ck.err(f"{loc}.name", f"{name!r} duplicates vip[{names[name]}]")
            else:
                names[name] = i
        if _BAD not in (name, addr, port, protocol):
            vips.append(VipConfig(name, addr, port, protocol, tuple(backends)))
    return vips


def parse_config(data: Mapping) -> Config:
    """Validate raw data (parsed TOML or `Config.to_dict()` output) into a Config.

    Raises ConfigError listing every problem found.
    """
    ck = _Checker()
    top = ck.table(data, "config", _TOP_KEYS)
    if top is None:
        raise ConfigError(ck.errors)
    instance = None
    if "instance" not in top:
        ck.err("instance", "missing required table [instance]")
    else:
        raw_instance = ck.table(top["instance"], "instance", _INSTANCE_KEYS)
        if raw_instance is not None:
            instance = _parse_instance(ck, raw_instance)
    raw_vips = ck.array(top.get("vip", ()), "vip", "vip")
    vips = _parse_vips(ck, raw_vips)
    if instance is not None:
        if len(raw_vips) > instance.max_vips:
            ck.err("vip", f"{len(raw_vips)} VIPs exceed instance.max_vips ({instance.max_vips})")
        distinct = len({b.address for v in vips for b in v.backends})
        if distinct > instance.max_backends:
            ck.err("vip", f"{distinct} distinct backend addresses exceed "
                   f"instance.max_backends ({instance.max_backends})")
    if ck.errors or instance is None:
        raise ConfigError(ck.errors)
    return Config(instance=instance, vips=tuple(vips))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML file; every error message starts with the path."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{where}:{line}: not valid UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_POS_RE.match(str(e))
        if m:
            msg = f"{where}:{m.group(2)}:{m.group(3)}: TOML syntax error: {m.group(1)}"
        else:
            msg = f"{where}: TOML syntax error: {e}"
        raise ConfigError(msg) from None
    try:
        return parse_config(data)
    except ConfigError as e:
        raise ConfigError(f"{where}: {err}" for err in e.errors) from None


# ------------------------------------------------------------------------- writing


def _toml_str(s: str) -> str:
    """A TOML basic string (only '"', '\\' and control characters need escaping)."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c < " " or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_value(v: object) -> str:
    return _toml_str(v) if isinstance(v, str) else str(v)


def dump_toml(cfg: Config) -> str:
    """TOML text for `cfg` that `load_config` reads back equal (all keys written explicitly)."""
    d = cfg.to_dict()
    lines = ["[instance]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in d["instance"].items()]
    for vip in d["vip"]:
        lines += ["", "[[vip]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in vip.items() if k != "backend"]
        for b in vip["backend"]:
            lines += ["", "[[vip.backend]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in b.items()]
    return "\n".join(lines) + "\n"
