"""Configuration of one xlb load-balancer instance, loaded from TOML.

The TOML layout is a contract shared with operators and with `dump_toml`:
`[instance]`, `[[vip]]` and `[[vip.backend]]`, each key declared once (kind,
default, range, doc) in xlb/schema.py. This module adds the rules across keys
(duplicate VIPs and backends, max_vips, max_backends, a ring large enough for each
VIP's backends) and the model.

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
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from xlb.errors import ConfigError
from xlb.schema import (
    BACKEND,
    BAD,
    INSTANCE,
    VIP,
    Checker,
    IPAddress,
    is_prime,
    ok,
    parse_address,
    ring_problem,
    show,
)

__all__ = [
    "BackendConfig",
    "Config",
    "ConfigError",
    "InstanceConfig",
    "VipConfig",
    "check_config",
    "dump_toml",
    "in_file",
    "is_prime",
    "load_config",
    "parse_config",
    "read_toml",
]

_TOML_POS_RE = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.S)
_TOP_KEYS = ("instance", "vip")


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class BackendConfig:
    """One real server behind a VIP; `drained` keeps established flows but takes no new ones."""

    address: IPAddress
    weight: int = BACKEND.default("weight")
    state: Literal["active", "drained"] = BACKEND.default("state")

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
    mode: Literal["dsr", "snat"] = VIP.default("mode")

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
            "mode": self.mode,
            "backend": [b.to_dict() for b in self.backends],
        }


@dataclass(frozen=True)
class InstanceConfig:
    """Settings of the instance as a whole: where XDP attaches and how maps are sized."""

    name: str
    interface: str
    netns: str = INSTANCE.default("netns")
    xdp_mode: Literal["native", "generic"] = INSTANCE.default("xdp_mode")
    ring_size: int = INSTANCE.default("ring_size")
    max_vips: int = INSTANCE.default("max_vips")
    max_backends: int = INSTANCE.default("max_backends")
    max_connections: int = INSTANCE.default("max_connections")
    trace_buffer_kib: int = INSTANCE.default("trace_buffer_kib")
    mtu: int = INSTANCE.default("mtu")
    flow_table_turnover: float = INSTANCE.default("flow_table_turnover")
    nexthop_mac: bytes | None = INSTANCE.default("nexthop_mac")
    encap_source_v4: ipaddress.IPv4Network = INSTANCE.default("encap_source_v4")
    encap_source_v6: ipaddress.IPv6Network = INSTANCE.default("encap_source_v6")
    snat_pool_v4: ipaddress.IPv4Network | None = INSTANCE.default("snat_pool_v4")
    snat_pool_v6: ipaddress.IPv6Network | None = INSTANCE.default("snat_pool_v6")
    snat_port_min: int = INSTANCE.default("snat_port_min")
    snat_port_max: int = INSTANCE.default("snat_port_max")
    snat_table_size: int = INSTANCE.default("snat_table_size")
    snat_tcp_timeout: int = INSTANCE.default("snat_tcp_timeout")
    snat_udp_timeout: int = INSTANCE.default("snat_udp_timeout")
    snat_close_timeout: int = INSTANCE.default("snat_close_timeout")

    def snat_pool(self, family: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The SNAT pool of IP version `family` (4 or 6), None if there is none."""
        return self.snat_pool_v4 if family == 4 else self.snat_pool_v6

    @property
    def snat_entries(self) -> int:
        """Size of the reverse-translation table (0 in the file = max_connections)."""
        return self.snat_table_size or self.max_connections

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
            "trace_buffer_kib": self.trace_buffer_kib,
            "mtu": self.mtu,
            "flow_table_turnover": self.flow_table_turnover,
            "nexthop_mac": "" if self.nexthop_mac is None else _format_mac(self.nexthop_mac),
            "encap_source_v4": str(self.encap_source_v4),
            "encap_source_v6": str(self.encap_source_v6),
            "snat_pool_v4": "" if self.snat_pool_v4 is None else str(self.snat_pool_v4),
            "snat_pool_v6": "" if self.snat_pool_v6 is None else str(self.snat_pool_v6),
            "snat_port_min": self.snat_port_min,
            "snat_port_max": self.snat_port_max,
            "snat_table_size": self.snat_table_size,
            "snat_tcp_timeout": self.snat_tcp_timeout,
            "snat_udp_timeout": self.snat_udp_timeout,
            "snat_close_timeout": self.snat_close_timeout,
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
                           weight: int = BACKEND.default("weight"),
                           state: str = BACKEND.default("state")) -> Config:
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
            raise ConfigError(f"backend address {show(address)} is not an IP address")
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
            raise ConfigError(f"a VIP named {show(name)} exists already")
        addr = _address_or_raw(address)
        data = self.to_dict()
        data["vip"].append({
            "name": name, "address": str(addr) if addr is not None else address,
            "port": port, "protocol": protocol,
            "backend": [b.to_dict() if isinstance(b, BackendConfig) else b for b in backends]})
        return _reparse(data)

    def with_vip_mode(self, name: str, mode: str, /) -> Config:
        """A new Config with VIP `name` forwarding new flows in `mode` (dsr | snat)."""
        vip = self.vip(name)
        data = self.to_dict()
        data["vip"][self.vips.index(vip)]["mode"] = mode
        return _reparse(data)

    def with_xdp_mode(self, mode: str, /) -> Config:
        """A new Config whose instance attaches XDP in `mode` (native | generic)."""
        data = self.to_dict()
        data["instance"]["xdp_mode"] = mode
        return _reparse(data)

    def without_vip(self, name: str, /) -> Config:
        """A new Config without VIP `name`."""
        vip = self.vip(name)
        data = self.to_dict()
        del data["vip"][self.vips.index(vip)]
        return _reparse(data)


# ------------------------------------------------------------------------ helpers


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
    return parse_address(value) if isinstance(value, str) else None


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


# ------------------------------------------------------------------------- parsing


def _parse_instance(ck: Checker, raw: Mapping) -> InstanceConfig | None:
    values = ck.read(raw, "instance", INSTANCE)
    return InstanceConfig(**values) if ok(values) else None


def _vip_addresses(raw_vips: list | tuple) -> dict[IPAddress, int]:
    """First VIP index of each parsable VIP address (errors are reported later)."""
    found: dict[IPAddress, int] = {}
    for i, raw in enumerate(raw_vips):
        value = raw.get("address") if isinstance(raw, Mapping) else None
        addr = parse_address(value) if isinstance(value, str) else None
        if addr is not None:
            found.setdefault(addr, i)
    return found


def _parse_backends(
    ck: Checker, raw: Any, loc: str, vip_addrs: dict[IPAddress, int]
) -> list[BackendConfig]:
    backends: list[BackendConfig] = []
    seen: dict[IPAddress, int] = {}
    for j, raw_b in enumerate(ck.array(raw, f"{loc}.backend", "vip.backend")):
        bloc = f"{loc}.backend[{j}]"
        tbl = ck.table(raw_b, bloc, BACKEND.keys)
        if tbl is None:
            continue
        values = ck.read(tbl, bloc, BACKEND)
        addr = values["address"]
        if addr is not BAD:
            if addr in seen:
                ck.err(f"{bloc}.address", f"{addr} duplicates {loc}.backend[{seen[addr]}]")
            else:
                seen[addr] = j
            if addr in vip_addrs:
                ck.err(f"{bloc}.address", f"{addr} is a VIP address (vip[{vip_addrs[addr]}])")
        if ok(values):
            backends.append(BackendConfig(**values))
    return backends


def _parse_vips(ck: Checker, raw_vips: list | tuple, ring_size: int | None) -> list[VipConfig]:
    """The VIPs; `ring_size` (None: the instance is invalid) bounds each one's backends."""
    vip_addrs = _vip_addresses(raw_vips)
    vips: list[VipConfig] = []
    names: dict[str, int] = {}
    keys: dict[tuple, int] = {}
    for i, raw in enumerate(raw_vips):
        loc = f"vip[{i}]"
        tbl = ck.table(raw, loc, VIP.keys)
        if tbl is None:
            continue
        values = ck.read(tbl, loc, VIP)
        name, addr, port, protocol, mode = (
            values[k] for k in ("name", "address", "port", "protocol", "mode"))
        backends = _parse_backends(ck, tbl.get("backend", ()), loc, vip_addrs)
        problem = ring_problem(ring_size, len(backends)) if ring_size is not None else None
        if problem:
            ck.err(f"{loc}.backend", problem)
        if BAD not in (addr, port, protocol):
            key = (addr, port, protocol)
            if key in keys:
                ck.err(loc, f"{vip_label(*key)} duplicates vip[{keys[key]}]")
            else:
                keys[key] = i
            if name is None:
                name = vip_label(*key)
        if name is not None and name is not BAD:
            if name in names:
                ck.err(f"{loc}.name", f"{name!r} duplicates vip[{names[name]}]")
            else:
                names[name] = i
        if BAD not in (name, addr, port, protocol, mode):
            vips.append(VipConfig(name, addr, port, protocol, tuple(backends), mode))
    return vips


def check_config(ck: Checker, data: object, other_tables: tuple[str, ...] = ()) -> Config | None:
    """Record every problem of the data plane's tables in `ck`; the Config if there is none.

    `other_tables` are top-level tables the caller checks itself (the agent's [agent]), so
    a whole file's problems end up in one list.
    """
    top = ck.table(data, "config", _TOP_KEYS + other_tables)
    if top is None:
        return None
    instance = None
    if "instance" not in top:
        ck.err("instance", "missing required table [instance]")
    else:
        raw_instance = ck.table(top["instance"], "instance", INSTANCE.keys)
        if raw_instance is not None:
            instance = _parse_instance(ck, raw_instance)
    raw_vips = ck.array(top.get("vip", ()), "vip", "vip")
    vips = _parse_vips(ck, raw_vips, instance.ring_size if instance is not None else None)
    if instance is not None:
        if len(raw_vips) > instance.max_vips:
            ck.err("vip", f"{len(raw_vips)} VIPs exceed instance.max_vips ({instance.max_vips})")
        distinct = len({b.address for v in vips for b in v.backends})
        if distinct > instance.max_backends:
            ck.err("vip", f"{distinct} distinct backend addresses exceed "
                   f"instance.max_backends ({instance.max_backends})")
        _check_snat(ck, instance, vips)
    if ck.errors or instance is None:
        return None
    return Config(instance=instance, vips=tuple(vips))


def _check_snat(ck: Checker, inst: InstanceConfig, vips: list[VipConfig]) -> None:
    """SNAT's rules across keys: a port range, a pool of the VIP's family, backends of
    the VIP's family (SNAT rewrites addresses, it does not change the IP version), and
    pools that are nobody else's addresses."""
    if inst.snat_port_min > inst.snat_port_max:
        ck.err("instance.snat_port_min", f"{inst.snat_port_min} is above snat_port_max "
               f"({inst.snat_port_max})")
    for i, vip in enumerate(vips):
        if vip.mode != "snat":
            continue
        loc = f"vip[{i}]"
        if inst.snat_pool(vip.family) is None:
            ck.err(f"{loc}.mode", f"snat needs instance.snat_pool_v{vip.family} (an IPv"
                   f"{vip.family} VIP's backends see an address of that pool)")
        for j, b in enumerate(vip.backends):
            if b.family != vip.family:
                ck.err(f"{loc}.backend[{j}].address", f"{b.address} is IPv{b.family}: a snat "
                       f"VIP's backends are of the VIP's family (IPv{vip.family})")
    for fam in (4, 6):
        pool = inst.snat_pool(fam)
        if pool is None:
            continue
        where = f"instance.snat_pool_v{fam}"
        taken = [(f"vip[{i}].address", v.address) for i, v in enumerate(vips)]
        taken += [(f"vip[{i}].backend[{j}].address", b.address)
                  for i, v in enumerate(vips) for j, b in enumerate(v.backends)]
        for loc, addr in taken:
            if addr in pool:
                ck.err(where, f"{pool} contains {addr} ({loc})")
                break
        encap = inst.encap_source_v4 if fam == 4 else inst.encap_source_v6
        if pool.overlaps(encap):  # type: ignore[arg-type]
            ck.err(where, f"{pool} overlaps encap_source_v{fam} ({encap})")


def parse_config(data: Mapping) -> Config:
    """Validate raw data (parsed TOML or `Config.to_dict()` output) into a Config.

    Raises ConfigError listing every problem found.
    """
    ck = Checker()
    cfg = check_config(ck, data)
    if cfg is None:
        raise ConfigError(ck.errors)
    return cfg


def read_toml(path: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """A TOML file's bytes and data; ConfigError (with the path, and the line where
    known) if it cannot be read or parsed."""
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
        return raw, tomllib.loads(text)
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{where}: TOML nested too deeply (arrays or inline tables within "
                          "each other, hundreds of levels): not a config file") from None
    except tomllib.TOMLDecodeError as e:
        m = _TOML_POS_RE.match(str(e))
        if m:
            msg = f"{where}:{m.group(2)}:{m.group(3)}: TOML syntax error: {m.group(1)}"
        else:
            msg = f"{where}: TOML syntax error: {e}"
        raise ConfigError(msg) from None


def in_file(path: str | os.PathLike[str], errors: Iterable[str]) -> ConfigError:
    """A ConfigError whose every problem starts with the file's path."""
    return ConfigError(f"{os.fspath(path)}: {err}" for err in errors)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML file; every error message starts with the path."""
    _, data = read_toml(path)
    try:
        return parse_config(data)
    except ConfigError as e:
        raise in_file(path, e.errors) from None


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
