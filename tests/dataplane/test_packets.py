"""The XDP program, packet by packet, through BPF_PROG_TEST_RUN with scapy packets."""

from __future__ import annotations

import copy
import functools
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    in6_chksum,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum

from tests.helpers import (
    CLIENT,
    CLIENT6,
    CLIENT_MAC,
    ENCAP_V4,
    ENCAP_V6,
    LB_MAC,
    WEB_BACKENDS,
    XDP_ABORTED,
    XDP_DROP,
    XDP_PASS,
    XDP_TX,
    DataplaneUnderTest,
    base_config,
    eth,
    outer_v4,
    syn,
    syn6,
)
from xlb.schema import MAX_FRAME, MAX_MTU


def test_syn_to_vip_is_encapsulated_ipip(dut: DataplaneUnderTest) -> None:
    pkt = syn()
    action, out = dut.run(pkt)
    assert action == XDP_TX
    o = Ether(out)
    assert (o.dst, o.src, o.type) == (CLIENT_MAC, LB_MAC, 0x0800)  # back to the sender's MAC
    ip, inner = outer_v4(out)
    assert ip.version == 4 and ip.ihl == 5 and ip.proto == 4 and ip.ttl == 64
    assert ip.len == 20 + len(pkt) - 14
    assert ip.dst in WEB_BACKENDS
    assert ipaddress.ip_address(ip.src) in ENCAP_V4
    assert inner == pkt[14:], "inner packet must be byte-identical"
    assert dut.reasons()["tx_encap"] >= 1


def test_nexthop_mac_is_used_when_configured(dut: DataplaneUnderTest) -> None:
    cfg = base_config(nexthop_mac="02:aa:bb:cc:dd:ee")
    dut.apply(cfg)
    action, out = dut.run(syn())
    assert action == XDP_TX
    assert Ether(out).dst == "02:aa:bb:cc:dd:ee"


def test_outer_source_spreads_with_the_flow(dut: DataplaneUnderTest) -> None:
    sources = set()
    for port in range(41000, 41064):
        action, out = dut.run(syn(sport=port))
        assert action == XDP_TX
        sources.add(outer_v4(out)[0].src)
    assert len(sources) > 50  # RSS on the backend sees many distinct outer sources


def test_flows_spread_over_backends(dut: DataplaneUnderTest) -> None:
    seen: dict[str, int] = {}
    for port in range(20000, 20600):
        _, out = dut.run(syn(sport=port))
        dst = outer_v4(out)[0].dst
        seen[dst] = seen.get(dst, 0) + 1
    assert set(seen) == WEB_BACKENDS
    assert min(seen.values()) > 600 / 3 * 0.7


def test_established_flow_keeps_backend_when_set_changes(dut: DataplaneUnderTest) -> None:
    _, out = dut.run(syn(sport=50000))
    first = outer_v4(out)[0].dst
    others = sorted(WEB_BACKENDS - {first})
    # remove another backend and drain the flow's own: Maglev would now send it elsewhere
    cfg = base_config()
    web = cfg["vip"][0]
    web["backend"] = [{"address": first, "state": "drained"}, {"address": others[0]}]
    dut.apply(cfg)
    action, out = dut.run(syn(sport=50000, flags="A"))
    assert action == XDP_TX
    assert outer_v4(out)[0].dst == first, "established flow moved"
    # new connections avoid the drained backend
    for port in range(30000, 30200):
        _, out = dut.run(syn(sport=port))
        assert outer_v4(out)[0].dst == others[0]


def _without(cfg: dict, address: str, vips: tuple[int, ...]) -> dict:
    for i in vips:
        cfg["vip"][i]["backend"] = [b for b in cfg["vip"][i]["backend"] if b["address"] != address]
    return cfg


def test_backend_removed_everywhere_rebalances_its_flows(dut: DataplaneUnderTest) -> None:
    _, out = dut.run(syn(sport=50001))
    first = outer_v4(out)[0].dst
    dut.apply(_without(base_config(), first, (0, 1)))  # web and dns
    action, out = dut.run(syn(sport=50001, flags="A"))
    assert action == XDP_TX
    assert outer_v4(out)[0].dst in WEB_BACKENDS - {first}


def test_backend_removed_from_one_vip_keeps_established_flows(dut: DataplaneUnderTest) -> None:
    """Still a backend elsewhere: like a drain for this VIP (no new flows, old ones stay)."""
    port = next(p for p in range(50100, 50400)
                if outer_v4(dut.run(syn(sport=p))[1])[0].dst == "10.0.1.2")
    dut.apply(_without(base_config(), "10.0.1.2", (0,)))  # dns still uses 10.0.1.2
    action, out = dut.run(syn(sport=port, flags="A"))
    assert action == XDP_TX and outer_v4(out)[0].dst == "10.0.1.2"
    action, out = dut.run(syn(sport=port))  # a new connection on the same tuple moves
    assert outer_v4(out)[0].dst != "10.0.1.2"


def test_non_syn_without_entry_follows_maglev_and_is_not_remembered(
        dut: DataplaneUnderTest) -> None:
    """A TCP packet of no known connection (an ACK flood's, or one of a connection the
    table lost) goes where Maglev sends its flow, and makes no entry; a SYN does."""
    before = dut.reasons()["tx_encap_no_entry"]
    action, out = dut.run(syn(sport=50002, flags="PA"))
    assert action == XDP_TX
    assert dut.conns() == 0
    assert dut.reasons()["tx_encap_no_entry"] == before + 1
    _, first = dut.run(syn(sport=50002))
    assert outer_v4(first)[0].dst == outer_v4(out)[0].dst
    assert dut.conns() == 1


def test_entry_of_a_removed_backend_is_repointed_in_place(dut: DataplaneUnderTest) -> None:
    """A flow whose backend left every VIP moves, and its entry follows it: no new entry,
    so the move itself pushes no other flow out."""
    _, out = dut.run(syn(sport=50003))
    first = outer_v4(out)[0].dst
    dut.apply(_without(base_config(), first, (0, 1)))
    _, out = dut.run(syn(sport=50003, flags="A"))
    moved = outer_v4(out)[0].dst
    assert moved != first and dut.conns() == 1
    dut.apply(base_config())  # back in Maglev: the flow stays where its entry now says
    _, out = dut.run(syn(sport=50003, flags="A"))
    assert outer_v4(out)[0].dst == moved


def test_non_vip_passes_untouched(dut: DataplaneUnderTest) -> None:
    pkt = syn(dst="192.0.2.1")
    before = dut.reasons()["pass_not_vip"]
    action, out = dut.run(pkt)
    assert action == XDP_PASS and out == pkt
    assert dut.reasons()["pass_not_vip"] == before + 1


def test_vip_address_other_port_passes(dut: DataplaneUnderTest) -> None:
    pkt = syn(dport=8080)
    before = dut.reasons()["pass_vip_no_service"]
    action, out = dut.run(pkt)
    assert action == XDP_PASS and out == pkt
    assert dut.reasons()["pass_vip_no_service"] == before + 1


def test_other_protocols_to_vip_pass(dut: DataplaneUnderTest) -> None:
    for pkt in (eth() / IP(src=CLIENT, dst="10.100.0.10", proto=47) / Raw(b"gre" * 8),
                eth() / IPv6(src=CLIENT6, dst="2001:db8::10", nh=50) / Raw(b"esp" * 8)):
        raw = bytes(pkt)
        assert _count(dut, "pass_vip_other_proto", raw, XDP_PASS) == raw


def test_any_port_vip(dut: DataplaneUnderTest) -> None:
    action, out = dut.run(syn(dst="10.100.0.20", dport=12345))
    assert action == XDP_TX
    assert outer_v4(out)[0].dst == "10.0.1.4"


def test_udp_vip(dut: DataplaneUnderTest) -> None:
    pkt = bytes(eth() / IP(src=CLIENT, dst="10.100.0.10") / UDP(sport=5353, dport=53)
                / Raw(b"q" * 30))
    action, out = dut.run(pkt)
    assert action == XDP_TX
    ip, inner = outer_v4(out)
    assert ip.proto == 4 and ip.dst in {"10.0.1.1", "10.0.1.2"} and inner == pkt[14:]


def test_ipv6_vip_v6_backend_is_ip6ip6(dut: DataplaneUnderTest) -> None:
    pkt = syn6(payload=b"hello")
    action, out = dut.run(pkt)
    assert action == XDP_TX
    o = Ether(out)
    assert o.type == 0x86DD
    outer = IPv6(out[14:54])
    assert outer.nh == 41 and outer.hlim == 64
    assert outer.dst == "2001:db8:1::1"
    assert ipaddress.ip_address(outer.src) in ENCAP_V6
    assert outer.plen == len(pkt) - 14
    assert out[54:] == pkt[14:]


def test_ipv6_vip_v4_backend_is_ip6_in_ip4(dut: DataplaneUnderTest) -> None:
    pkt = syn6(dport=81)
    action, out = dut.run(pkt)
    assert action == XDP_TX
    ip, inner = outer_v4(out)
    assert ip.proto == 41 and ip.dst == "10.0.1.5" and inner == pkt[14:]


def test_ipv4_vip_v6_backend_is_ip4_in_ip6(dut: DataplaneUnderTest) -> None:
    pkt = syn(dst="10.100.0.30", dport=443)
    action, out = dut.run(pkt)
    assert action == XDP_TX
    outer = IPv6(out[14:54])
    assert outer.nh == 4 and outer.dst == "fd00:1::5" and outer.plen == len(pkt) - 14
    assert out[54:] == pkt[14:]


def test_vlan_tag_is_kept(dut: DataplaneUnderTest) -> None:
    inner = IP(src=CLIENT, dst="10.100.0.10") / TCP(sport=40100, dport=80, flags="S")
    pkt = bytes(eth() / Dot1Q(vlan=42) / inner)
    action, out = dut.run(pkt)
    assert action == XDP_TX
    o = Ether(out)
    assert o[Dot1Q].vlan == 42 and o[Dot1Q].type == 0x0800
    ip, rest = outer_v4(out, l2=18)
    assert ip.proto == 4 and rest == bytes(inner)


def test_vip_without_backends_drops(dut: DataplaneUnderTest) -> None:
    before = dut.reasons()["drop_no_backend"]
    action, _ = dut.run(syn(dst="10.100.0.40"))
    assert action == XDP_DROP
    assert dut.reasons()["drop_no_backend"] == before + 1


def _count(dut: DataplaneUnderTest, reason: str, pkt: bytes, action: int) -> bytes:
    before = dut.reasons()[reason]
    got, out = dut.run(pkt)
    assert got == action
    assert dut.reasons()[reason] == before + 1
    return out


def test_fragments_to_vip_are_dropped_and_counted(dut: DataplaneUnderTest) -> None:
    tcp = TCP(sport=1, dport=80)
    _count(dut, "drop_fragment", bytes(eth() / IP(src=CLIENT, dst="10.100.0.10", flags="MF")
                                       / tcp), XDP_DROP)
    _count(dut, "drop_fragment", bytes(eth() / IP(src=CLIENT, dst="10.100.0.10", frag=100)
                                       / Raw(b"x" * 40)), XDP_DROP)
    _count(dut, "drop_fragment", bytes(eth() / IPv6(src=CLIENT6, dst="2001:db8::10")
                                       / IPv6ExtHdrFragment(m=1) / tcp), XDP_DROP)


V6_VIP = IPv6(src=CLIENT6, dst="2001:db8::10")
HBH, RH, DST = IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, IPv6ExtHdrDestOpt


@pytest.mark.parametrize("chain", [
    [HBH()], [RH()], [DST()], [HBH(), DST(), RH()],
    [DST()] * 7 + [IPv6ExtHdrFragment()],  # longer than the walk: options at least
], ids=["hop-by-hop", "routing", "dest-opts", "three", "too-long"])
def test_ipv6_extension_headers_to_vip_are_dropped_as_options(
        dut: DataplaneUnderTest, chain: list[Packet]) -> None:
    for l4 in (TCP(sport=40400, dport=80, flags="S"), UDP(sport=40400, dport=53)):
        pkt = bytes(eth() / V6_VIP / functools.reduce(lambda a, b: a / b, [*chain, l4]))
        _count(dut, "drop_ip_options", pkt, XDP_DROP)


@pytest.mark.parametrize("chain", [
    [IPv6ExtHdrFragment(m=1)], [HBH(), IPv6ExtHdrFragment(offset=10)],
    [HBH(), DST(), RH(), IPv6ExtHdrFragment(m=1)],
    [DST()] * 6 + [IPv6ExtHdrFragment(m=1)],  # as deep as the walk goes
], ids=["alone", "behind-hop-by-hop", "behind-three", "behind-six"])
def test_ipv6_fragment_header_anywhere_is_a_fragment(
        dut: DataplaneUnderTest, chain: list[Packet]) -> None:
    pkt = bytes(eth() / V6_VIP / functools.reduce(lambda a, b: a / b, chain)
                / TCP(sport=40401, dport=80))
    _count(dut, "drop_fragment", pkt, XDP_DROP)


def test_ipv6_extension_header_cut_short_is_malformed(dut: DataplaneUnderTest) -> None:
    pkt = bytes(eth() / V6_VIP / HBH() / TCP(dport=80))
    _count(dut, "drop_malformed", pkt[:14 + 40 + 1], XDP_DROP)
    # the next header is cut off behind a whole one
    pkt = bytes(eth() / IPv6(src=CLIENT6, dst="2001:db8::10", nh=0) / Raw(b"\x3c\x00" + b"\0" * 6))
    _count(dut, "drop_malformed", pkt, XDP_DROP)


def test_ip_options_to_vip_are_dropped(dut: DataplaneUnderTest) -> None:
    pkt = bytes(eth() / IP(src=CLIENT, dst="10.100.0.10", options=[IPOption_RR()])
                / TCP(dport=80, flags="S"))
    _count(dut, "drop_ip_options", pkt, XDP_DROP)


def test_fragments_and_options_elsewhere_pass(dut: DataplaneUnderTest) -> None:
    for pkt in (eth() / IP(src=CLIENT, dst="192.0.2.9", flags="MF") / TCP(dport=80),
                eth() / IP(src=CLIENT, dst="192.0.2.9", options=[IPOption_RR()]) / TCP(),
                eth() / IPv6(src=CLIENT6, dst="2001:db8::99") / IPv6ExtHdrFragment() / TCP(),
                eth() / IPv6(src=CLIENT6, dst="2001:db8::99") / HBH() / DST() / TCP()):
        raw = bytes(pkt)
        out = _count(dut, "pass_not_vip", raw, XDP_PASS)
        assert out == raw


def test_oversize_v4_answers_fragmentation_needed(dut: DataplaneUnderTest) -> None:
    pkt = bytes(eth() / IP(src=CLIENT, dst="10.100.0.10", flags="DF")
                / TCP(sport=40200, dport=80, flags="PA") / Raw(b"x" * 1450))  # IP len 1490
    out = _count(dut, "tx_icmp_too_big", pkt, XDP_TX)
    o = Ether(out)
    assert (o.dst, o.src) == (CLIENT_MAC, LB_MAC)
    assert checksum(out[14:34]) == 0
    ip = IP(out[14:])
    assert (ip.src, ip.dst, ip.proto, ip.len) == ("10.100.0.10", CLIENT, 1, 56)
    icmp = ip[ICMP]
    assert (icmp.type, icmp.code, icmp.nexthopmtu) == (3, 4, 1500 - 20)
    assert checksum(out[34:70]) == 0, "ICMP checksum invalid"
    assert out[42:70] == pkt[14:42], "quote: original IP header + 8 bytes"
    assert len(out) == 70


def test_oversize_v6_answers_packet_too_big(dut: DataplaneUnderTest) -> None:
    pkt = syn6(payload=b"y" * 1440)  # 40 + 20 + 1440 = 1500 > 1500 - 40
    out = _count(dut, "tx_icmp_too_big", pkt, XDP_TX)
    ip6 = IPv6(out[14:])
    assert (ip6.src, ip6.dst, ip6.nh, ip6.plen) == ("2001:db8::10", CLIENT6, 58, 56)
    ptb = ip6[ICMPv6PacketTooBig]
    assert ptb.type == 2 and ptb.mtu == 1500 - 40
    assert in6_chksum(58, ip6, out[54:110]) == 0, "ICMPv6 checksum invalid"
    assert out[62:110] == pkt[14:62]


def test_mtu_boundary_is_exact(dut: DataplaneUnderTest) -> None:
    fits = bytes(eth() / IP(src=CLIENT, dst="10.100.0.10") / TCP(sport=40300, dport=80)
                 / Raw(b"z" * (1480 - 40)))
    action, _ = dut.run(fits)
    assert action == XDP_TX and Ether(_)[IP].proto == 4
    over = bytes(eth() / IP(src=CLIENT, dst="10.100.0.10") / TCP(sport=40300, dport=80)
                 / Raw(b"z" * (1481 - 40)))
    _, out = dut.run(over)
    assert IP(out[14:]).proto == 1


def tcp_frame(size: int, vlan: bool = False, v6: bool = False, sport: int = 40310) -> bytes:
    """A frame of exactly `size` bytes to a TCP VIP (v4 or v6), optionally VLAN-tagged."""
    l2 = eth() / Dot1Q(vlan=5) if vlan else eth()
    ip = IPv6(src=CLIENT6, dst="2001:db8::10") if v6 else IP(src=CLIENT, dst="10.100.0.10")
    head = l2 / ip / TCP(sport=sport, dport=80, flags="A")
    return bytes(head / Raw(b"j" * (size - len(head))))


def test_largest_mtu_is_honoured_up_to_the_frame_limit(dut: DataplaneUnderTest) -> None:
    """mtu = MAX_MTU: every packet up to mtu - outer header fits the one buffer XDP sees
    (MAX_FRAME bytes) and is balanced; one byte more, and the frame spans buffers: it is
    answered "too big" like any packet over mtu, never dropped as malformed."""
    dut.apply(base_config(mtu=MAX_MTU))
    fits = tcp_frame(MAX_FRAME, vlan=True)  # 18 + (MAX_MTU - 20) bytes
    assert len(fits) - 18 == MAX_MTU - 20
    out = _count(dut, "tx_encap_no_entry", fits, XDP_TX)
    assert len(out) == len(fits) + 20 and Ether(out)[Dot1Q].type == 0x0800
    for over, tag in ((tcp_frame(MAX_FRAME + 1, vlan=True), 18),
                      (tcp_frame(MAX_FRAME + 1), 14), (tcp_frame(9000), 14)):
        out = _count(dut, "tx_icmp_too_big", over, XDP_TX)
        ip = IP(out[tag:])
        assert (ip.src, ip.dst, ip.proto) == ("10.100.0.10", CLIENT, 1)
        assert ip[ICMP].nexthopmtu == MAX_MTU - 20
        assert checksum(out[tag + 20:]) == 0 and len(out) == tag + 56
    # IPv6 to a v6 backend: 40 bytes of outer header
    fits = tcp_frame(14 + MAX_MTU - 40, v6=True)
    _count(dut, "tx_encap_no_entry", fits, XDP_TX)
    out = _count(dut, "tx_icmp_too_big", tcp_frame(MAX_FRAME + 1, v6=True), XDP_TX)
    ptb = IPv6(out[14:])[ICMPv6PacketTooBig]
    assert ptb.mtu == MAX_MTU - 40 and len(out) == 14 + 40 + 8 + 48


def test_truncated_headers_are_dropped_as_malformed(dut: DataplaneUnderTest) -> None:
    pkt = syn()
    for cut in (14, 20, 33, 40, 50):  # below 14 bytes the kernel refuses the run
        action, _ = dut.run(pkt[:cut])
        assert action == XDP_DROP, cut
    before = dut.reasons()["drop_malformed"]
    dut.run(pkt[:40])
    assert dut.reasons()["drop_malformed"] == before + 1


VALID = [syn(), syn6(payload=b"abc"), syn(dst="10.100.0.30", dport=443),
         bytes(eth() / IP(src=CLIENT, dst="10.100.0.10") / UDP(sport=1, dport=53) / Raw(b"1"))]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_garbage_and_truncation_never_tx(dut: DataplaneUnderTest, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        base = data.draw(st.sampled_from(VALID))
        pkt = base[: data.draw(st.integers(0, len(base) - 1))]
    else:
        pkt = data.draw(st.binary(min_size=0, max_size=200))
        if len(pkt) >= 14 and data.draw(st.booleans()):  # an IP ethertype, random rest
            pkt = pkt[:12] + data.draw(st.sampled_from([b"\x08\x00", b"\x86\xdd"])) + pkt[14:]
    before = copy.deepcopy(dut.dp.counters())
    if len(pkt) < 14:
        return  # the kernel refuses test runs below an Ethernet header
    action, _ = dut.run(pkt)
    assert action in (XDP_DROP, XDP_PASS)
    assert action != XDP_ABORTED
    after = dut.dp.counters()
    assert after.reasons[:, 0].sum() - before.reasons[:, 0].sum() == 1
    assert after.queues[0, 0] - before.queues[0, 0] == 1
    assert after.queues[0, 2 + action] - before.queues[0, 2 + action] == 1
