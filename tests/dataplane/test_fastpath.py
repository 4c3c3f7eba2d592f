"""The packet path's shortcuts change no verdict and no byte: a known flow's hash is read
from its connection entry (an entry without one gets it computed), and ctl's vip_filter
passes most non-VIP destinations without a lookup, while a filter that says "maybe" for
every address, or no filter at all (an older agent's ctl), gives the same answers."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.dataplane.test_snat import POOL4, POOL6, VIP4, snat_config, tcp4, tcp6, udp4, udp6
from tests.dataplane.test_vipindex import sharing_port
from tests.helpers import (
    CLIENT,
    XDP_PASS,
    XDP_TX,
    DataplaneUnderTest,
    dataplane_under_test,
    eth,
    one_cpu,
    outer_v4,
    syn,
)
from xlb.dataplane import structs as S
from xlb.dataplane.config import parse_config
from xlb.dataplane.explain import flow_hash
from xlb.dataplane.manager import VIP_FILTER_MAX_BITS, lb_config, vip_filter

ALL_MAYBE = 0xFFFFFFFF  # every destination may be a VIP address: each is confirmed


def _conn(dut: DataplaneUnderTest, sport: int, dst: str = "10.100.0.10", dport: int = 80,
          proto: int = 6) -> S.Conn:
    key = S.FlowKey(src=S.pack_addr(ipaddress.ip_address(CLIENT)),
                    dst=S.pack_addr(ipaddress.ip_address(dst)), sport=S.net_port(sport),
                    dport=S.net_port(dport), proto=proto, family=S.XLB_AF_INET)
    c = dut.dp.maps["conns"].get(key)
    assert isinstance(c, S.Conn), "no connection entry"
    return c


def test_an_entry_keeps_its_flows_hash(dut: DataplaneUnderTest) -> None:
    dut.run(syn(sport=41001))
    assert _conn(dut, 41001).hash == flow_hash(ipaddress.ip_address(CLIENT), 41001, 80, 6)
    dut.run(bytes(eth() / IP(src=CLIENT, dst="10.100.0.10") / UDP(sport=41002, dport=53)))
    assert _conn(dut, 41002, dport=53, proto=17).hash == flow_hash(
        ipaddress.ip_address(CLIENT), 41002, 53, 17)


def test_an_entry_without_a_hash_sends_the_same_bytes(dut: DataplaneUnderTest) -> None:
    """An entry made by an older xlb (hash 0) is used as it is: the hash is computed, the
    outer source (RSS) is the one the flow had."""
    dut.run(syn(sport=41003))
    ack = syn(sport=41003, flags="A")
    action, kept = dut.run(ack)
    assert action == XDP_TX
    key = next(k for k in dut.dp.maps["conns"].keys() if S.host_port(k.sport) == 41003)
    c = dut.dp.maps["conns"].get(key)
    c.hash = 0
    dut.dp.maps["conns"].set(key, c)
    action, computed = dut.run(ack)
    assert action == XDP_TX and computed == kept
    assert outer_v4(kept)[0].src == outer_v4(computed)[0].src


def test_the_filter_has_every_vip_address() -> None:
    cfg = parse_config(snat_config())
    f = lb_config(cfg).vip_filter
    assert f
    for v in cfg.vips:
        assert f & vip_filter(iter([v.address])), v.address
    many = [ipaddress.ip_address(f"10.200.{i // 250}.{i % 250 + 1}") for i in range(200)]
    assert bin(vip_filter(iter(many))).count("1") == 0, \
        f"over {VIP_FILTER_MAX_BITS} bits: no filter (every address is looked up)"


def _colliding(f: int) -> str:
    """A non-VIP IPv4 address the filter `f` says "maybe" to."""
    for i in range(1, 4096):
        a = ipaddress.ip_address(f"192.0.{2 + i // 250}.{i % 250 + 1}")
        if vip_filter(iter([a])) & f:
            return str(a)
    raise AssertionError("no colliding address")


def _missing(f: int) -> str:
    """A non-VIP IPv4 address the filter `f` says "no" to."""
    for i in range(1, 4096):
        a = ipaddress.ip_address(f"192.0.{2 + i // 250}.{i % 250 + 1}")
        if not vip_filter(iter([a])) & f:
            return str(a)
    raise AssertionError("no address outside the filter")


@pytest.fixture(scope="module")
def snat_dut(roots: tuple[str, str]) -> Iterator[DataplaneUnderTest]:
    with dataplane_under_test("fast", snat_config(name="fast"), roots) as d:
        yield d


def _reset(dut: DataplaneUnderTest, filt: int | None, index: bool = True) -> None:
    dut.apply(snat_config(name="fast"))
    dut.flush_conns()
    rev = dut.dp.maps["snat_rev"]
    for k in rev.keys():
        rev.delete(k)
    ctl = dut.dp.maps["ctl"].get(0)
    assert ctl.vip_index, "the agent's config has a VIP index"
    if filt is not None:
        ctl.vip_filter = filt
    if not index:
        ctl.vip_index = 0
    dut.dp.maps["ctl"].set(0, ctl)


def _replies(dut: DataplaneUnderTest, out: bytes) -> bytes:
    """The backend's reply to a translated packet `out` (to its SNAT address and port)."""
    p = Ether(out)
    ip = p[IP] if IP in p else p[IPv6]
    l4 = p[TCP] if TCP in p else p[UDP]
    back = (IP(src=ip.dst, dst=ip.src) if IP in p else IPv6(src=ip.dst, dst=ip.src))
    seg = (TCP(sport=l4.dport, dport=l4.sport, flags="SA") if TCP in p
           else UDP(sport=l4.dport, dport=l4.sport))
    return bytes(eth() / back / seg / Raw(b"reply"))


def _run_all(dut: DataplaneUnderTest, other: str, sharing: int = 81
             ) -> list[tuple[int, bytes, dict[str, int]]]:
    """Every kind of destination: VIP ports, any-port VIP, a VIP address's other port (and
    port `sharing`: one whose key shares a slot of the VIP index with a VIP's), ICMP to a
    VIP, IP options and fragments to a VIP and to `other` (not a VIP), TCP/UDP/ICMP and
    truncated TCP to `other`, SNAT flows and their replies to the pools."""
    e = eth()
    frames = [
        tcp4(40009, "S", dport=sharing), tcp4(40009, "A", dport=sharing),
        tcp4(40000, "S"), tcp4(40000, "A"), udp4(40001), tcp6(40002, "S"), udp6(40003),
        tcp4(40004, "S", dst="10.100.0.30"), tcp4(40004, "A", dst="10.100.0.30"),
        tcp4(40005, "S", dst="10.100.0.20", dport=8080), tcp4(40006, "S", dport=81),
        bytes(e / IP(src=CLIENT, dst="10.100.0.10") / ICMP(type=8) / Raw(b"ping")),
        bytes(e / IP(src=CLIENT, dst="10.100.0.10", flags="MF") / TCP(dport=80)),
        bytes(e / IP(src=CLIENT, dst="10.100.0.10", options=[IPOption_RR()]) / TCP(dport=80)),
        bytes(e / IP(src=CLIENT, dst=other) / TCP(sport=40007, dport=80, flags="S")),
        bytes(e / IP(src=CLIENT, dst=other) / UDP(sport=40008, dport=53)),
        bytes(e / IP(src=CLIENT, dst=other) / ICMP(type=8) / Raw(b"ping")),
        bytes(e / IP(src=CLIENT, dst=other, flags="MF") / TCP(dport=80)),
        bytes(e / IP(src=CLIENT, dst=other, options=[IPOption_RR()]) / TCP(dport=80)),
        bytes(e / IP(src=CLIENT, dst=other) / TCP(dport=80))[:14 + 20 + 8],
        bytes(e / IP(src=CLIENT, dst=str(POOL4[3])) / TCP(sport=80, dport=1, flags="A")),
        bytes(e / IPv6(src="2001:db8::99", dst=str(POOL6[3])) / UDP(sport=53, dport=1)),
    ]
    seen = []
    for f in frames:
        action, out = dut.run(f)
        seen.append((action, out))
        if action == XDP_TX and f in (tcp4(40000, "S"), udp4(40001), tcp6(40002, "S"),
                                      udp6(40003)):
            seen.append(dut.run(_replies(dut, out)))
    return [(a, o, {}) for a, o in seen] + [(0, b"", dut.reasons())]


def test_verdicts_and_bytes_whatever_the_filter(snat_dut: DataplaneUnderTest) -> None:
    """The filter and the VIP index only save lookups: with the agent's filter, with one
    that says "maybe" to every address (each confirmed by vip_addrs when it matters), and
    with none (an older agent's ctl), with the VIP index and without it (vips looked up),
    every packet gets the same verdict and the same bytes out."""
    got = {}
    agents = lb_config(parse_config(snat_config(name="fast"))).vip_filter
    _reset(snat_dut, None)
    sharing, _ = sharing_port(snat_dut, VIP4, {80, 53})
    for other in (_colliding(agents), _missing(agents)):
        with one_cpu():
            for name, filt, index in (("agent's", None, True), ("all maybe", ALL_MAYBE, True),
                                      ("none", 0, True), ("agent's, no index", None, False),
                                      ("none, no index", 0, False)):
                _reset(snat_dut, filt, index)
                before = snat_dut.reasons()
                runs = _run_all(snat_dut, other, sharing)
                after = runs[-1][2]
                got[name] = ([(a, o) for a, o, _ in runs[:-1]],
                             {k: after[k] - before[k] for k in after if after[k] != before[k]})
        assert len({repr(g) for g in got.values()}) == 1, other
        verdicts = [a for a, _ in got["none"][0]]
        assert verdicts.count(XDP_TX) >= 10 and XDP_PASS in verdicts
        assert verdicts[:2] == [XDP_PASS, XDP_PASS]  # the port sharing a VIP's slot
        counted = got["none"][1]
        assert counted["pass_not_vip"] == 6, counted  # the non-VIP TCP, UDP, ICMP, truncated
        assert counted["tx_snat_reply"] == 4, counted  # the 4 SNAT flows' replies
        assert counted["drop_snat_no_entry"] == 2, counted  # the stray replies to the pools
