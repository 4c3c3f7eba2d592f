"""Tests of xlb.dataplane.config: parsing, validation messages, round trips."""

from __future__ import annotations

import copy
import ipaddress
import json
import tomllib
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xlb.dataplane.config import (
    BackendConfig,
    Config,
    ConfigError,
    InstanceConfig,
    VipConfig,
    dump_toml,
    is_prime,
    load_config,
    parse_config,
)
from xlb.errors import XlbError
from xlb.schema import RING_PER_BACKEND

MTU_WHY = " (XDP sees frames of at most 3520 bytes, one buffer)"

EXAMPLE_TOML = """\
[instance]
name = "lb1"                      # required; ^[a-z0-9][a-z0-9_-]{0,30}$ (used in paths)
interface = "veth-lb1"            # interface to attach XDP to
netns = ""                        # optional network namespace name holding the interface
xdp_mode = "native"               # "native" | "generic"
ring_size = 65537                 # Maglev ring size: must be prime, 13..1048573
max_vips = 64                     # 1..1024
max_backends = 4096               # 1..65536
max_connections = 262144          # connection-table entries, 1024..67108864
mtu = 1500                        # largest IP packet allowed after encapsulation, 576..3522
nexthop_mac = ""                  # optional "aa:bb:cc:dd:ee:ff"
encap_source_v4 = "172.16.0.0/16" # IPv4 network
encap_source_v6 = "fd00:5f1b::/64" # IPv6 network (prefix length 8..128)

[[vip]]
name = "web"          # optional; default f"{address}:{port}/{protocol}"; unique
address = "10.100.0.10"
port = 80             # 0..65535, 0 = any port
protocol = "tcp"      # "tcp" | "udp"

[[vip.backend]]
address = "10.0.1.2"  # IPv4 or IPv6
weight = 1            # int 0..65535, default 1
state = "active"      # "active" | "drained", default "active"
"""


def base() -> dict[str, Any]:
    """A valid raw config with three VIPs, mixed families; tests mutate a fresh copy."""
    return {
        "instance": {"name": "lb1", "interface": "veth-lb1"},
        "vip": [
            {
                "name": "web",
                "address": "10.100.0.10",
                "port": 80,
                "protocol": "tcp",
                "backend": [
                    {"address": "10.0.1.2"},
                    {"address": "10.0.1.3", "weight": 3, "state": "drained"},
                ],
            },
            {
                "address": "2001:db8::10",
                "port": 443,
                "protocol": "tcp",
                "backend": [{"address": "10.0.1.2", "weight": 2}, {"address": "fd00::2"}],
            },
            {"address": "10.100.0.11", "port": 53, "protocol": "udp"},
        ],
    }


def errors_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.errors


def only_error(data: Any) -> str:
    errs = errors_of(data)
    assert len(errs) == 1, errs
    return errs[0]


# ------------------------------------------------------------------ valid configs


def test_example_toml_parses(tmp_path):
    path = tmp_path / "lb1.toml"
    path.write_text(EXAMPLE_TOML)
    cfg = load_config(path)
    inst = cfg.instance
    assert inst.name == "lb1" and inst.interface == "veth-lb1" and inst.netns == ""
    assert inst.xdp_mode == "native" and inst.ring_size == 65537
    assert (inst.max_vips, inst.max_backends, inst.max_connections) == (64, 4096, 262144)
    assert inst.mtu == 1500 and inst.nexthop_mac is None
    assert inst.encap_source_v4 == ipaddress.IPv4Network("172.16.0.0/16")
    assert inst.encap_source_v6 == ipaddress.IPv6Network("fd00:5f1b::/64")
    assert cfg.vips == (
        VipConfig(
            name="web",
            address=ipaddress.IPv4Address("10.100.0.10"),
            port=80,
            protocol="tcp",
            backends=(BackendConfig(ipaddress.IPv4Address("10.0.1.2"), 1, "active"),),
        ),
    )


def test_defaults_apply():
    cfg = parse_config({"instance": {"name": "a", "interface": "eth0"}})
    assert cfg.instance == InstanceConfig(name="a", interface="eth0")
    assert cfg.instance.netns == ""
    assert cfg.instance.xdp_mode == "native"
    assert cfg.instance.ring_size == 65537
    assert cfg.instance.max_vips == 64
    assert cfg.instance.max_backends == 4096
    assert cfg.instance.max_connections == 262144
    assert cfg.instance.mtu == 1500
    assert cfg.instance.nexthop_mac is None
    assert str(cfg.instance.encap_source_v4) == "172.16.0.0/16"
    assert str(cfg.instance.encap_source_v6) == "fd00:5f1b::/64"
    assert cfg.vips == ()
    b = parse_config(base()).vips[0].backends[0]
    assert (b.weight, b.state) == (1, "active")
    assert parse_config(base()).vips[2].backends == ()


def test_types_and_properties():
    cfg = parse_config(base())
    web, v6, dns = cfg.vips
    assert isinstance(web.address, ipaddress.IPv4Address)
    assert isinstance(v6.address, ipaddress.IPv6Address)
    assert isinstance(v6.backends[1].address, ipaddress.IPv6Address)
    assert web.key == (ipaddress.IPv4Address("10.100.0.10"), 80, "tcp")
    assert (web.family, v6.family) == (4, 6)
    assert [b.effective_weight for b in web.backends] == [1, 0]  # drained -> 0
    assert v6.backends[0].effective_weight == 2
    assert (v6.backends[0].family, v6.backends[1].family) == (4, 6)
    assert cfg.backend_addresses() == (
        ipaddress.IPv4Address("10.0.1.2"),
        ipaddress.IPv4Address("10.0.1.3"),
        ipaddress.IPv6Address("fd00::2"),
    )
    assert dns.name == "10.100.0.11:53/udp"
    assert cfg.vip("web") is web
    with pytest.raises(KeyError, match="no VIP named 'nope'"):
        cfg.vip("nope")


def test_ipv6_vip_default_name_uses_brackets():
    data = base()
    data["vip"][1]["address"] = "2001:DB8:0:0::10"  # normalised to the compressed form
    assert parse_config(data).vips[1].name == "[2001:db8::10]:443/tcp"


def test_full_instance_and_mac_forms():
    data = base()
    data["instance"].update(
        netns="ns-lb1",
        xdp_mode="generic",
        ring_size=211,  # the smallest prime with 100 entries for each of 2 backends
        max_vips=3,
        max_backends=3,
        max_connections=1024,
        mtu=3522,
        flow_table_turnover=0,
        nexthop_mac="02-AA-bb-CC-dd-EE",
        encap_source_v4="192.0.2.0/24",
        encap_source_v6="2001:db8:ff::/48",
    )
    inst = parse_config(data).instance
    assert inst.nexthop_mac == bytes.fromhex("02aabbccddee")
    assert inst.to_dict()["nexthop_mac"] == "02:aa:bb:cc:dd:ee"
    assert (inst.netns, inst.xdp_mode, inst.ring_size, inst.mtu) == ("ns-lb1", "generic", 211, 3522)
    assert inst.flow_table_turnover == 0


def test_to_dict_round_trip_and_json():
    cfg = parse_config(base())
    d = cfg.to_dict()
    json.dumps(d)  # JSON-able
    assert set(d) == {"instance", "vip"}
    assert d["vip"][1]["name"] == "[2001:db8::10]:443/tcp"
    assert d["vip"][0]["backend"][1] == {"address": "10.0.1.3", "weight": 3, "state": "drained"}
    assert parse_config(d) == cfg
    assert parse_config(json.loads(json.dumps(d))) == cfg


def test_dump_toml_round_trip(tmp_path):
    data = base()
    data["instance"].update(nexthop_mac="02:00:00:00:00:01", netns='we"ird\\ns')
    data["vip"][0]["name"] = 'quote"back\\slash'
    cfg = parse_config(data)
    path = tmp_path / "out.toml"
    path.write_text(dump_toml(cfg))
    assert load_config(path) == cfg
    # The written file is readable by any TOML parser and uses the contract's key names.
    raw = tomllib.loads(path.read_text())
    assert set(raw["instance"]) == set(cfg.instance.to_dict())
    assert raw["vip"][2]["name"] == "10.100.0.11:53/udp"
    assert "backend" not in raw["vip"][2]


def test_dump_toml_escapes_every_control_character():
    # Validation rejects such names, but the writer must still never emit broken TOML.
    odd = "".join(map(chr, range(32))) + '\x7f"\\é'
    cfg = Config(InstanceConfig(name="x", interface="eth0", netns=odd))
    assert tomllib.loads(dump_toml(cfg))["instance"]["netns"] == odd


def test_dump_toml_without_vips(tmp_path):
    cfg = parse_config({"instance": {"name": "x", "interface": "eth0"}})
    path = tmp_path / "x.toml"
    path.write_text(dump_toml(cfg))
    assert load_config(path) == cfg


def test_with_backend():
    cfg = parse_config(base())
    new = cfg.with_backend("web", "10.0.1.2", weight=7, state="drained")
    assert new.vip("web").backends[0] == BackendConfig(
        ipaddress.IPv4Address("10.0.1.2"), 7, "drained"
    )
    assert new.vip("web").backends[1] == cfg.vip("web").backends[1]
    # same address under another VIP is untouched; the original is unchanged
    assert new.vips[1] == cfg.vips[1]
    assert cfg.vip("web").backends[0].weight == 1
    again = new.with_backend("web", ipaddress.ip_address("10.0.1.2"), state="active")
    assert again.vip("web").backends[0].effective_weight == 7


def test_with_backend_errors():
    cfg = parse_config(base())
    with pytest.raises(KeyError, match="no VIP named 'nope'"):
        cfg.with_backend("nope", "10.0.1.2", weight=2)
    with pytest.raises(KeyError, match="VIP 'web' has no backend '10.9.9.9'"):
        cfg.with_backend("web", "10.9.9.9", weight=2)
    with pytest.raises(KeyError, match="not an IP address"):
        cfg.with_backend("web", "bogus", weight=2)
    with pytest.raises(ConfigError) as info:
        cfg.with_backend("web", "10.0.1.2", weight=70000)
    assert info.value.errors == ["vip[0].backend[0].weight: 70000 is out of range 0..65535"]
    with pytest.raises(ConfigError, match="only 'weight' and 'state' can be changed, not address"):
        cfg.with_backend("web", "10.0.1.2", address="10.0.1.9")


def test_with_added_backend():
    cfg = parse_config(base())
    new = cfg.with_added_backend("web", "fd00:0::9", weight=4)
    assert new.vip("web").backends[-1] == BackendConfig(ipaddress.IPv6Address("fd00::9"), 4)
    assert new.vip("web").backends[:2] == cfg.vip("web").backends
    assert new.vips[1:] == cfg.vips[1:] and len(cfg.vip("web").backends) == 2
    drained = cfg.with_added_backend("10.100.0.11:53/udp", ipaddress.ip_address("10.0.1.2"),
                                     state="drained")
    assert drained.vips[2].backends == (BackendConfig(ipaddress.IPv4Address("10.0.1.2"), 1,
                                                      "drained"),)
    assert parse_config(new.to_dict()) == new


def test_with_added_backend_errors():
    cfg = parse_config(base())
    with pytest.raises(KeyError, match="no VIP named 'nope'"):
        cfg.with_added_backend("nope", "10.0.1.9")
    with pytest.raises(ConfigError) as info:
        cfg.with_added_backend("web", "10.0.1.2")
    assert info.value.errors == ["VIP 'web' already has backend 10.0.1.2"]
    with pytest.raises(ConfigError) as info:
        cfg.with_added_backend("web", "10.00.1.2")
    assert info.value.errors == ["vip['web'].backend[2].address: '10.00.1.2' is not an IP address"]
    with pytest.raises(ConfigError) as info:
        cfg.with_added_backend("web", "127.0.0.1", weight=70000, state="gone")
    assert info.value.errors == [
        "vip['web'].backend[2].address: 127.0.0.1 is a loopback address",
        "vip['web'].backend[2].weight: 70000 is out of range 0..65535",
        "vip['web'].backend[2].state: 'gone' is not 'active' or 'drained'",
    ]
    with pytest.raises(ConfigError, match=r"backend\[2\].address: 10.100.0.10 is a VIP address"):
        cfg.with_added_backend("web", "10.100.0.10")
    small = parse_config({**base(), "instance": {"name": "lb1", "interface": "x",
                                                 "max_backends": 3}})
    with pytest.raises(ConfigError, match="4 distinct backend addresses exceed"):
        small.with_added_backend("web", "10.0.1.9")


def test_without_backend():
    cfg = parse_config(base())
    new = cfg.without_backend("web", "10.0.1.2")
    assert [str(b.address) for b in new.vip("web").backends] == ["10.0.1.3"]
    assert new.vips[1] == cfg.vips[1], "the same address in another VIP stays"
    empty = new.without_backend("web", ipaddress.ip_address("10.0.1.3"))
    assert empty.vip("web").backends == ()
    with pytest.raises(KeyError, match="no VIP named 'nope'"):
        cfg.without_backend("nope", "10.0.1.2")
    with pytest.raises(KeyError, match="VIP 'web' has no backend '10.0.1.9'"):
        cfg.without_backend("web", "10.0.1.9")
    with pytest.raises(ConfigError, match="backend address 'bogus' is not an IP address"):
        cfg.without_backend("web", "bogus")


def test_with_added_vip_and_without_vip():
    cfg = parse_config(base())
    new = cfg.with_added_vip("api", "2001:db8::20", 8443, "tcp",
                             [{"address": "10.0.1.2", "weight": 2}, {"address": "fd00::7"},
                              BackendConfig(ipaddress.IPv4Address("10.0.1.8"), 0)])
    api = new.vip("api")
    assert (str(api.address), api.port, api.protocol) == ("2001:db8::20", 8443, "tcp")
    assert [(str(b.address), b.weight) for b in api.backends] == [
        ("10.0.1.2", 2), ("fd00::7", 1), ("10.0.1.8", 0)]
    assert new.vips[:3] == cfg.vips and new.vips[3] is new.vip("api")
    assert new.without_vip("api") == cfg
    assert cfg.with_added_vip("bare", "10.100.0.12", 0, "udp").vip("bare").backends == ()
    rest = cfg.without_vip("web")
    assert [v.name for v in rest.vips] == [v.name for v in cfg.vips[1:]]
    assert "10.0.1.3" not in {str(a) for a in rest.backend_addresses()}
    with pytest.raises(KeyError, match="no VIP named 'nope'"):
        cfg.without_vip("nope")


def test_with_added_vip_errors():
    cfg = parse_config(base())
    with pytest.raises(ConfigError) as info:
        cfg.with_added_vip("web", "10.100.0.99", 80, "tcp")
    assert info.value.errors == ["a VIP named 'web' exists already"]
    with pytest.raises(ConfigError) as info:
        cfg.with_added_vip("again", "10.100.0.10", 80, "tcp")
    assert info.value.errors == ["vip['again']: 10.100.0.10:80/tcp duplicates vip['web']"]
    with pytest.raises(ConfigError) as info:
        cfg.with_added_vip("bad", "nowhere", 70000, "sctp",
                           [{"address": "10.0.1.1"}, {"address": "10.0.1.1"},
                            {"adress": "10.0.1.2"}])
    assert info.value.errors == [
        "vip['bad'].address: 'nowhere' is not an IP address",
        "vip['bad'].port: 70000 is out of range 0..65535",
        "vip['bad'].protocol: 'sctp' is not 'tcp' or 'udp'",
        "vip['bad'].backend[1].address: 10.0.1.1 duplicates vip['bad'].backend[0]",
        "vip['bad'].backend[2]: unknown key 'adress'",
        "vip['bad'].backend[2].address: missing required key",
    ]
    full = parse_config({**base(), "instance": {"name": "lb1", "interface": "x", "max_vips": 3}})
    with pytest.raises(ConfigError, match=r"4 VIPs exceed instance.max_vips \(3\)"):
        full.with_added_vip("more", "10.100.0.99", 80, "tcp")


# ------------------------------------------------------------- validation errors


def mutate(path: tuple, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    data = base()
    node: Any = data
    for step in path[:-1]:
        node = node[step]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # ranges and primes
        (("vip", 1, "backend", 0, "weight"), 70000,
         "vip[1].backend[0].weight: 70000 is out of range 0..65535"),
        (("instance", "ring_size"), 65536, "instance.ring_size: 65536 is not prime"),
        (("instance", "ring_size"), 11, "instance.ring_size: 11 is out of range 13..1048573"),
        (("instance", "ring_size"), 1048576,
         "instance.ring_size: 1048576 is out of range 13..1048573"),
        (("instance", "max_vips"), 0, "instance.max_vips: 0 is out of range 1..1024"),
        (("instance", "trace_buffer_kib"), 1000,
         "instance.trace_buffer_kib: 1000 is not a power of two"),
        (("instance", "trace_buffer_kib"), 2,
         "instance.trace_buffer_kib: 2 is out of range 4..262144"),
        (("instance", "max_backends"), 65537,
         "instance.max_backends: 65537 is out of range 1..65536"),
        (("instance", "max_connections"), 1023,
         "instance.max_connections: 1023 is out of range 1024..67108864"),
        (("instance", "mtu"), 575, "instance.mtu: 575 is out of range 576..3522"),
        # more than the one buffer XDP sees per frame can honour
        (("instance", "mtu"), 3523, f"instance.mtu: 3523 is out of range 576..3522{MTU_WHY}"),
        (("instance", "mtu"), 9216, f"instance.mtu: 9216 is out of range 576..3522{MTU_WHY}"),
        (("instance", "flow_table_turnover"), -1,
         "instance.flow_table_turnover: -1.0 is out of range 0..3600"),
        (("vip", 0, "port"), -1, "vip[0].port: -1 is out of range 0..65535"),
        (("vip", 0, "port"), 65536, "vip[0].port: 65536 is out of range 0..65535"),
        # wrong types; booleans are not integers
        (("instance", "mtu"), "abc", "instance.mtu: expected an integer, got 'abc'"),
        (("instance", "mtu"), True, "instance.mtu: expected an integer, got True"),
        (("instance", "mtu"), 1500.0, "instance.mtu: expected an integer, got 1500.0"),
        (("vip", 0, "backend", 0, "weight"), False,
         "vip[0].backend[0].weight: expected an integer, got False"),
        (("instance", "name"), 5, "instance.name: expected a string, got 5"),
        (("vip", 0, "address"), ["10.0.0.1"],
         "vip[0].address: expected a string, got ['10.0.0.1']"),
        (("instance",), "lb1", "instance: expected a table, got 'lb1'"),
        (("vip",), {"address": "10.0.0.1"},
         "vip: expected an array of tables (write [[vip]]), got a single table"),
        (("vip", 0, "backend"), {"address": "10.0.1.2"},
         "vip[0].backend: expected an array of tables (write [[vip.backend]]), "
         "got a single table"),
        (("vip", 2), 7, "vip[2]: expected a table, got 7"),
        # enumerations and names
        (("instance", "xdp_mode"), "offload",
         "instance.xdp_mode: 'offload' is not 'native' or 'generic'"),
        (("vip", 0, "protocol"), "TCP", "vip[0].protocol: 'TCP' is not 'tcp' or 'udp'"),
        (("vip", 0, "backend", 1, "state"), "gone",
         "vip[0].backend[1].state: 'gone' is not 'active' or 'drained'"),
        (("instance", "name"), "LB1",
         "instance.name: 'LB1' does not match ^[a-z0-9][a-z0-9_-]{0,30}$"),
        (("instance", "name"), "lb1\n",
         "instance.name: 'lb1\\n' does not match ^[a-z0-9][a-z0-9_-]{0,30}$"),
        (("instance", "name"), "a" * 32,
         f"instance.name: {'a' * 32!r} does not match ^[a-z0-9][a-z0-9_-]{{0,30}}$"),
        (("instance", "interface"), "", "instance.interface: '' must be 1..15 characters long"),
        (("instance", "interface"), "a" * 16,
         f"instance.interface: {'a' * 16!r} must be 1..15 characters long"),
        (("instance", "interface"), "a/b",
         "instance.interface: 'a/b' must not contain '/', ':', whitespace or control characters"),
        (("instance", "interface"), "a b",
         "instance.interface: 'a b' must not contain '/', ':', whitespace or control characters"),
        (("instance", "netns"), "../x",
         "instance.netns: '../x' must not contain '/', whitespace or control characters"),
        (("vip", 0, "name"), "", "vip[0].name: '' must be 1..64 characters long"),
        (("vip", 0, "name"), "my web",
         "vip[0].name: 'my web' must not contain whitespace or control characters"),
        # addresses
        (("vip", 0, "address"), "x", "vip[0].address: 'x' is not an IP address"),
        (("vip", 0, "address"), "10.0.0.0/8", "vip[0].address: '10.0.0.0/8' is not an IP address"),
        (("vip", 0, "address"), "fe80::1%eth0",
         "vip[0].address: 'fe80::1%eth0' is not an IP address"),
        (("vip", 0, "address"), "224.0.0.5", "vip[0].address: 224.0.0.5 is a multicast address"),
        (("vip", 0, "address"), "ff02::1", "vip[0].address: ff02::1 is a multicast address"),
        (("vip", 0, "address"), "0.0.0.0", "vip[0].address: 0.0.0.0 is the unspecified address"),
        (("vip", 0, "address"), "::", "vip[0].address: :: is the unspecified address"),
        (("vip", 0, "address"), "127.0.0.2", "vip[0].address: 127.0.0.2 is a loopback address"),
        (("vip", 0, "address"), "::1", "vip[0].address: ::1 is a loopback address"),
        (("vip", 0, "address"), "255.255.255.255",
         "vip[0].address: 255.255.255.255 is the broadcast address"),
        (("vip", 0, "address"), "::ffff:10.0.0.1",
         "vip[0].address: ::ffff:a00:1 is IPv4-mapped; write 10.0.0.1 instead"),
        (("vip", 0, "backend", 0, "address"), "239.1.1.1",
         "vip[0].backend[0].address: 239.1.1.1 is a multicast address"),
        (("vip", 0, "backend", 0, "address"), "::",
         "vip[0].backend[0].address: :: is the unspecified address"),
        (("vip", 1, "backend", 1, "address"), "::1",
         "vip[1].backend[1].address: ::1 is a loopback address"),
        (("vip", 0, "backend", 1, "address"), "10.0.1.2",
         "vip[0].backend[1].address: 10.0.1.2 duplicates vip[0].backend[0]"),
        (("vip", 1, "backend", 1, "address"), "10.100.0.11",
         "vip[1].backend[1].address: 10.100.0.11 is a VIP address (vip[2])"),
        # MAC
        (("instance", "nexthop_mac"), "aa:bb:cc:dd:ee",
         "instance.nexthop_mac: 'aa:bb:cc:dd:ee' is not a MAC address like 'aa:bb:cc:dd:ee:ff'"),
        (("instance", "nexthop_mac"), "02:bb-cc:dd:ee:ff",
         "instance.nexthop_mac: '02:bb-cc:dd:ee:ff' is not a MAC address like "
         "'aa:bb:cc:dd:ee:ff'"),
        (("instance", "nexthop_mac"), "0g:bb:cc:dd:ee:ff",
         "instance.nexthop_mac: '0g:bb:cc:dd:ee:ff' is not a MAC address like "
         "'aa:bb:cc:dd:ee:ff'"),
        (("instance", "nexthop_mac"), "ff:ff:ff:ff:ff:ff",
         "instance.nexthop_mac: ff:ff:ff:ff:ff:ff is a multicast/broadcast MAC, not a next hop"),
        (("instance", "nexthop_mac"), "00:00:00:00:00:00",
         "instance.nexthop_mac: 00:00:00:00:00:00 is the all-zero MAC"),
        # networks
        (("instance", "encap_source_v4"), "fd00::/64",
         "instance.encap_source_v4: family mismatch: fd00::/64 is IPv6, expected IPv4"),
        (("instance", "encap_source_v6"), "10.0.0.0/8",
         "instance.encap_source_v6: family mismatch: 10.0.0.0/8 is IPv4, expected IPv6"),
        (("instance", "encap_source_v4"), "172.16.0.1/16",
         "instance.encap_source_v4: 172.16.0.1/16 has host bits set (did you mean 172.16.0.0/16?)"),
        (("instance", "encap_source_v4"), "10.0.0.0/7",
         "instance.encap_source_v4: prefix length 7 of 10.0.0.0/7 is out of range 8..32"),
        (("instance", "encap_source_v6"), "fc00::/7",
         "instance.encap_source_v6: prefix length 7 of fc00::/7 is out of range 8..128"),
        (("instance", "encap_source_v4"), "not-a-net",
         "instance.encap_source_v4: 'not-a-net' is not an IP network"),
        (("instance", "encap_source_v4"), "127.0.0.0/8",
         "instance.encap_source_v4: 127.0.0.0/8 contains 127.0.0.0, which is a loopback address"),
        (("instance", "encap_source_v4"), 1, "instance.encap_source_v4: expected a string, got 1"),
    ],
)
def test_single_error_messages(path, value, message):
    assert only_error(mutate(path, value)) == message


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("instance",), "instance: missing required table [instance]"),
        (("instance", "name"), "instance.name: missing required key"),
        (("instance", "interface"), "instance.interface: missing required key"),
        (("vip", 0, "address"), "vip[0].address: missing required key"),
        (("vip", 0, "port"), "vip[0].port: missing required key"),
        (("vip", 0, "protocol"), "vip[0].protocol: missing required key"),
        (("vip", 0, "backend", 1, "address"), "vip[0].backend[1].address: missing required key"),
    ],
)
def test_missing_required(path, message):
    assert only_error(mutate(path, delete=True)) == message


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (("prot",), "config: unknown key 'prot'"),
        (("instance", "ringsize"), "instance: unknown key 'ringsize'"),
        (("vip", 0, "prot"), "vip[0]: unknown key 'prot'"),
        (("vip", 1, "backend", 0, "wieght"), "vip[1].backend[0]: unknown key 'wieght'"),
    ],
)
def test_unknown_keys(path, message):
    assert only_error(mutate(path, "tcp")) == message


def test_duplicate_vip_key():
    data = base()
    data["vip"].append({"name": "web2", "address": "10.100.0.10", "port": 80, "protocol": "tcp"})
    assert only_error(data) == "vip[3]: 10.100.0.10:80/tcp duplicates vip[0]"
    # same address and port with another protocol, or another port, is a different VIP
    data["vip"][3]["protocol"] = "udp"
    parse_config(data)
    data["vip"][3].update(protocol="tcp", port=0)
    parse_config(data)


def test_duplicate_ipv6_vip_key_is_bracketed():
    data = base()
    data["vip"].append({"name": "b", "address": "2001:db8:0::10", "port": 443, "protocol": "tcp"})
    assert only_error(data) == "vip[3]: [2001:db8::10]:443/tcp duplicates vip[1]"


def test_duplicate_vip_names():
    data = base()
    data["vip"][2]["name"] = "web"
    assert only_error(data) == "vip[2].name: 'web' duplicates vip[0]"
    # an explicit name may collide with another VIP's default name
    data["vip"][2]["name"] = "[2001:db8::10]:443/tcp"
    assert only_error(data) == "vip[2].name: '[2001:db8::10]:443/tcp' duplicates vip[1]"


def test_too_many_vips():
    data = base()
    data["instance"]["max_vips"] = 2
    assert only_error(data) == "vip: 3 VIPs exceed instance.max_vips (2)"
    data["instance"]["max_vips"] = 3
    parse_config(data)


def test_too_many_backends_counts_distinct_addresses():
    data = base()  # 10.0.1.2 is used by two VIPs: 3 distinct addresses in 4 backends
    data["instance"]["max_backends"] = 3
    parse_config(data)
    data["instance"]["max_backends"] = 2
    assert only_error(data) == "vip: 3 distinct backend addresses exceed instance.max_backends (2)"


def test_many_errors_reported_at_once():
    data = base()
    data["instance"].update(ring_size=65536, mtu="abc", nexthop_mac="zz", typo=1)
    data["vip"][0]["prot"] = "tcp"
    data["vip"][0]["backend"][1]["weight"] = 70000
    data["vip"][1]["address"] = "x"
    data["vip"].append({"address": "10.100.0.10", "port": 80, "protocol": "tcp"})
    errs = errors_of(data)
    assert errs == [
        "instance: unknown key 'typo'",
        "instance.ring_size: 65536 is not prime",
        "instance.mtu: expected an integer, got 'abc'",
        "instance.nexthop_mac: 'zz' is not a MAC address like 'aa:bb:cc:dd:ee:ff'",
        "vip[0]: unknown key 'prot'",
        "vip[0].backend[1].weight: 70000 is out of range 0..65535",
        "vip[1].address: 'x' is not an IP address",
        "vip[3]: 10.100.0.10:80/tcp duplicates vip[0]",
    ]


def test_config_error_shape():
    err = ConfigError(["a: one", "b: two"])
    assert isinstance(err, XlbError) and err.rpc_code == -32602 and err.exit_code == 1
    assert str(err) == "a: one\nb: two"
    assert ConfigError("single").errors == ["single"]


def test_top_level_not_a_mapping():
    assert errors_of(["instance"]) == ["config: expected a table, got ['instance']"]


def test_huge_integer_does_not_crash():
    msg = only_error(mutate(("instance", "mtu"), 10**5000))
    assert msg.startswith("instance.mtu: <integer of ") and "out of range 576..3522" in msg


# --------------------------------------------------------------------- load_config


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: cannot read: No such file or directory"]


def test_load_syntax_error_has_path_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[instance]\nname = "lb1"\ninterface = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (msg,) = info.value.errors
    assert msg.startswith(f"{path}:3:") and "TOML syntax error" in msg


def test_load_invalid_utf8_has_line(tmp_path):
    path = tmp_path / "bin.toml"
    path.write_bytes(b'[instance]\nname = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}:2: not valid UTF-8"]


def test_load_validation_errors_are_prefixed_with_path(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text(EXAMPLE_TOML.replace("ring_size = 65537", "ring_size = 65536"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == [f"{path}: instance.ring_size: 65536 is not prime"]


# ------------------------------------------------------------------------- primes


def test_is_prime_matches_sieve():
    n = 20000
    sieve = [True] * n
    sieve[0] = sieve[1] = False
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = [False] * len(sieve[i * i :: i])
    assert [is_prime(i) for i in range(-3, n)] == [False] * 3 + sieve
    assert is_prime(65537) and is_prime(1048573) and not is_prime(1048575)


# ---------------------------------------------------------------------- hypothesis

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", "10.0.0.1", "::1", "fd00::/64", "tcp", "active", "lb1", "eth0"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10) | st.integers(), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk)
def test_arbitrary_junk_only_raises_config_error(data):
    try:
        parse_config(data)
    except ConfigError as e:
        assert e.errors and all(isinstance(m, str) and m for m in e.errors)


def _leaf_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    items: Iterable[tuple[Any, Any]]
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return [prefix]
    out = [prefix] if prefix else []
    for k, v in items:
        out += _leaf_paths(v, (*prefix, k))
    return out


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_config_only_raises_config_error(data):
    raw = base()
    raw["instance"].update(nexthop_mac="02:00:00:00:00:01", netns="ns")
    paths = _leaf_paths(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        node: Any = raw
        try:
            for step in path[:-1]:
                node = node[step]
            node[path[-1]] = data.draw(junk)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced a parent
    try:
        cfg = parse_config(copy.deepcopy(raw))
    except ConfigError as e:
        assert e.errors
    else:
        assert parse_config(cfg.to_dict()) == cfg


# Valid configurations, including awkward but allowed strings, survive dump_toml.
names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp", "Cf", "Co", "Cn")),
    min_size=1,
    max_size=12,
).filter(lambda s: not any(c.isspace() or not c.isprintable() for c in s))
v4 = st.integers(0x0B000000, 0x0BFFFFFF).map(ipaddress.IPv4Address)
v6 = st.integers(0x2001_0DB8 << 96, (0x2001_0DB8 << 96) + 2**64).map(ipaddress.IPv6Address)


@st.composite
def valid_configs(draw) -> Config:
    vip_addrs = draw(st.lists(v4 | v6, max_size=4, unique=True))
    vips = []
    used_names: set[str] = set()
    for addr in vip_addrs:
        name = draw(names.filter(lambda n: n not in used_names))
        used_names.add(name)
        backends = draw(
            st.lists(
                st.builds(
                    BackendConfig,
                    address=(v4 | v6).filter(lambda a: a not in vip_addrs),
                    weight=st.integers(0, 65535),
                    state=st.sampled_from(["active", "drained"]),
                ),
                max_size=4,
                unique_by=lambda b: b.address,
            )
        )
        port = draw(st.integers(0, 65535))
        proto = draw(st.sampled_from(["tcp", "udp"]))
        vips.append(VipConfig(name, addr, port, proto, tuple(backends)))
    netns = draw(st.just("") | names.filter(lambda n: n not in (".", "..") and "/" not in n))
    most = max((len(v.backends) for v in vips), default=0)  # the ring must hold them
    mac = draw(st.none() | st.binary(min_size=6, max_size=6).map(lambda b: bytes([2]) + b[1:]))
    instance = InstanceConfig(
        name=draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,30}", fullmatch=True)),
        interface="eth0",
        netns=netns,
        xdp_mode=draw(st.sampled_from(["native", "generic"])),
        ring_size=draw(st.sampled_from([m for m in (13, 251, 401, 65537, 1048573)
                                        if m >= RING_PER_BACKEND * most])),
        mtu=draw(st.integers(576, 3522)),
        flow_table_turnover=draw(st.sampled_from([0.0, 0.5, 10.0, 3600.0])),
        nexthop_mac=mac,
    )
    return Config(instance, tuple(vips))


@settings(max_examples=200, deadline=None)
@given(valid_configs())
def test_valid_configs_round_trip(cfg):
    assert parse_config(cfg.to_dict()) == cfg
    assert parse_config(tomllib.loads(dump_toml(cfg))) == cfg
