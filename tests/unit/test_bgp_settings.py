"""The [bgp] table: checked by the one checker, every problem naming its field, wired into
the agent's config file (a bad table stops the agent before anything starts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xlb.agent.settings import load
from xlb.bgp.settings import BgpSettings, Neighbor, check_bgp
from xlb.dataplane.config import parse_config
from xlb.errors import ConfigError
from xlb.schema import Checker

CFG = parse_config({"instance": {"name": "lb1", "interface": "eth0"},
                    "vip": [{"name": "web", "address": "198.19.0.10", "port": 80,
                             "protocol": "tcp"},
                            {"name": "dns", "address": "198.19.0.10", "port": 53,
                             "protocol": "udp"}]})
V4 = {"address": "198.18.1.1", "asn": 65000}
V6 = {"address": "FD00:5F1B:18:1::1", "asn": 65000}


def bgp(**over: Any) -> dict[str, Any]:
    return {"local_asn": 65001, "router_id": "198.18.1.2", "neighbor": [V4], **over}


def checked(raw: Any) -> BgpSettings:
    ck = Checker()
    s = check_bgp(ck, raw, CFG)
    assert ck.errors == [] and s is not None, ck.errors
    return s


def errors(raw: Any) -> list[str]:
    ck = Checker()
    assert check_bgp(ck, raw, CFG) is None
    return ck.errors


def test_a_minimal_table_gets_the_defaults() -> None:
    assert checked(bgp(neighbor=[V4, V6])) == BgpSettings(
        65001, "198.18.1.2", (Neighbor("198.18.1.1", 65000), Neighbor("fd00:5f1b:18:1::1", 65000)))


def test_every_key_read() -> None:
    s = checked(bgp(announce=["web"], next_hop="198.18.1.9", next_hop6="fd00::9",
                    exabgp="/opt/exabgp/bin/exabgp", local_asn=4294967295,
                    neighbor=[{**V6, "hold_time": 0, "local_address": "fd00:5f1b:18:1::2",
                               "passive": True}]))
    assert s.announce == ("web",) and s.next_hop == "198.18.1.9" and s.next_hop6 == "fd00::9"
    assert s.local_asn == 4294967295 and s.exabgp == "/opt/exabgp/bin/exabgp"
    assert s.neighbors == (Neighbor("fd00:5f1b:18:1::1", 65000, 0, "fd00:5f1b:18:1::2", True),)
    assert s.neighbors[0].family == "ipv6 unicast"


@pytest.mark.parametrize(("raw", "want"), [
    (bgp(local_asn=0), "bgp.local_asn: 0 is out of range 1..4294967295"),
    (bgp(local_asn=4294967296), "bgp.local_asn: 4294967296 is out of range 1..4294967295"),
    (bgp(local_asn="65001"), "bgp.local_asn: expected an integer, got '65001'"),
    (bgp(router_id="fd00::1"), "bgp.router_id: 'fd00::1' is not an IPv4 address"),
    ({"local_asn": 65001, "neighbor": [V4]}, "bgp.router_id: missing required key"),
    (bgp(announce="web"), "bgp.announce: expected a list of strings, got 'web'"),
    (bgp(announce=["web", "web"]), "bgp.announce: ['web', 'web'] names a VIP twice"),
    (bgp(announce=["web", "api"]), "bgp.announce: no VIP is named 'api' (VIPs: dns, web)"),
    (bgp(next_hop="fd00::1"), 'bgp.next_hop: fd00::1 is IPv6; the next hop of IPv4 prefixes '
     'must be IPv4 or "self"'),
    (bgp(next_hop6="10.0.0.1"), "bgp.next_hop6: 10.0.0.1 is IPv4; the next hop of IPv6 "
     'prefixes must be IPv6 or "self"'),
    (bgp(next_hop="me"), "bgp.next_hop: 'me' is not an IP address"),
    (bgp(typo=1), "bgp: unknown key 'typo'"),
    (bgp(neighbor=[]), "bgp.neighbor: is empty: give at least one [[bgp.neighbor]]"),
    ({"local_asn": 65001, "router_id": "198.18.1.2"},
     "bgp.neighbor: missing: give at least one [[bgp.neighbor]] (the routers to announce the "
     "VIPs to)"),
    (bgp(neighbor=V4), "bgp.neighbor: expected an array of tables (write [[bgp.neighbor]]), "
     "got a single table"),
    (bgp(neighbor=[V4, {"address": "198.18.1.1", "asn": 65002}]),
     "bgp.neighbor[1].address: 198.18.1.1 is already bgp.neighbor[0]"),
    (bgp(neighbor=[V4, {**V4, "address": "fd00:5f1b:18:1:0::1"}, {**V6}]),
     "bgp.neighbor[2].address: fd00:5f1b:18:1::1 is already bgp.neighbor[1]"),
    (bgp(neighbor=[{"address": "198.18.1.1"}]), "bgp.neighbor[0].asn: missing required key"),
    (bgp(neighbor=[{**V4, "asn": -1}]), "bgp.neighbor[0].asn: -1 is out of range 1..4294967295"),
    (bgp(neighbor=[{**V4, "hold_time": 2}]),
     "bgp.neighbor[0].hold_time: 2 must be 0 (no keepalives) or 3..65535 (RFC 4271)"),
    (bgp(neighbor=[{**V4, "hold_time": 65536}]),
     "bgp.neighbor[0].hold_time: 65536 is out of range 0..65535"),
    (bgp(neighbor=[{**V4, "address": "127.0.0.1"}]),
     "bgp.neighbor[0].address: 127.0.0.1 is a loopback address"),
    (bgp(neighbor=[{**V4, "local_address": "fd00::2"}]),
     "bgp.neighbor[0].local_address: fd00::2 is not of the family of the neighbor's address "
     "198.18.1.1"),
    (bgp(neighbor=[{**V4, "passive": "yes"}]),
     "bgp.neighbor[0].passive: expected true or false, got 'yes'"),
    (bgp(neighbor=[{**V4, "port": 179}]), "bgp.neighbor[0]: unknown key 'port'"),
    ("on", "bgp: expected a table, got 'on'"),
])
def test_each_problem_names_its_field(raw: Any, want: str) -> None:
    assert want in errors(raw)


def test_every_problem_at_once() -> None:
    got = errors(bgp(local_asn=0, router_id="x", neighbor=[{**V4, "asn": 0}, {"asn": 1}]))
    assert [e.split(":")[0] for e in got] == [
        "bgp.local_asn", "bgp.router_id", "bgp.neighbor[0].asn", "bgp.neighbor[1].address"]


def test_the_announce_list_is_checked_only_against_a_good_config() -> None:
    ck = Checker()
    assert check_bgp(ck, bgp(announce=["api"]), None) is not None  # the config's own errors
    assert ck.errors == []                                          # say what is wrong


INSTANCE = '[instance]\nname = "lb1"\ninterface = "eth0"\n'


def test_the_agents_file_carries_the_table(tmp_path: Path) -> None:
    path = tmp_path / "lb1.toml"
    path.write_text(INSTANCE)
    assert load(str(path)).bgp is None  # no [bgp]: no speaker
    path.write_text(INSTANCE + '[bgp]\nlocal_asn = 65001\nrouter_id = "198.18.1.2"\n'
                    '[[bgp.neighbor]]\naddress = "198.18.1.1"\nasn = 65000\n')
    assert load(str(path)).bgp == BgpSettings(65001, "198.18.1.2",
                                              (Neighbor("198.18.1.1", 65000),))


def test_a_bad_table_is_one_more_problem_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lb1.toml"
    path.write_text(INSTANCE + '[agent]\ntick = 0\n[bgp]\nlocal_asn = 65001\n'
                    'router_id = "198.18.1.2"\n[[bgp.neighbor]]\naddress = "198.18.1.1"\n'
                    'asn = 70000000000\n')
    with pytest.raises(ConfigError) as e:
        load(str(path))
    text = str(e.value)
    assert "agent.tick" in text and "bgp.neighbor[0].asn: 70000000000 is out of range" in text
