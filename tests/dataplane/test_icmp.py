"""ICMP to a VIP address: pings answered by the load balancer, and ICMP errors about a
VIP flow (the router's "fragmentation needed" / "packet too big" about a DSR reply)
sent to the backend that owns the flow, through BPF_PROG_TEST_RUN."""

from __future__ import annotations

import ipaddress

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrHopByHop,
    in6_chksum,
)
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw
from scapy.utils import checksum

from tests.helpers import (
    CLIENT,
    CLIENT6,
    CLIENT_MAC,
    LB_MAC,
    XDP_DROP,
    XDP_PASS,
    XDP_TX,
    DataplaneUnderTest,
    base_config,
    eth,
    outer_v4,
    syn,
)

ROUTER = "198.51.100.1"
ROUTER6 = "2001:db8:ffff::1"
VIP, VIP6 = "10.100.0.10", "2001:db8::10"
V6_BACKENDS = ["2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3"]


def counted(dut: DataplaneUnderTest, reason: str, pkt: bytes, action: int) -> bytes:
    """Run pkt; it must get `action` and be counted once under `reason`."""
    before = dut.reasons()
    got, out = dut.run(pkt)
    after = dut.reasons()
    assert got == action
    assert {r: after[r] - before[r] for r in after if after[r] != before[r]} == {reason: 1}
    return out


# -- pings ---------------------------------------------------------------------------------

def test_ping_to_a_vip_is_answered(dut: DataplaneUnderTest) -> None:
    for vip in (VIP, "10.100.0.40"):  # any VIP address, with or without usable backends
        req = bytes(eth() / IP(src=CLIENT, dst=vip, ttl=9) / ICMP(id=77, seq=3)
                    / Raw(b"payload!" * 8))
        out = counted(dut, "tx_icmp_echo", req, XDP_TX)
        o = Ether(out)
        assert (o.dst, o.src) == (CLIENT_MAC, LB_MAC)
        assert len(out) == len(req)
        assert checksum(out[14:34]) == 0, "IP checksum invalid"
        ip = o[IP]
        assert (ip.src, ip.dst, ip.ttl, ip.proto) == (vip, CLIENT, 64, 1)
        icmp = ip[ICMP]
        assert (icmp.type, icmp.code, icmp.id, icmp.seq) == (0, 0, 77, 3)
        assert checksum(out[34:]) == 0, "ICMP checksum invalid"
        assert out[42:] == req[42:], "the payload comes back as it was"


def test_ping_to_a_v6_vip_is_answered(dut: DataplaneUnderTest) -> None:
    req = bytes(eth() / IPv6(src=CLIENT6, dst=VIP6, hlim=5)
                / ICMPv6EchoRequest(id=9, seq=1, data=b"x" * 40))
    out = counted(dut, "tx_icmp_echo", req, XDP_TX)
    ip6 = Ether(out)[IPv6]
    assert (ip6.src, ip6.dst, ip6.hlim, ip6.nh) == (VIP6, CLIENT6, 64, 58)
    rep = ip6[ICMPv6EchoReply]
    assert (rep.type, rep.id, rep.seq, rep.data) == (129, 9, 1, b"x" * 40)
    assert in6_chksum(58, ip6, out[54:]) == 0, "ICMPv6 checksum invalid"


def test_ping_keeps_the_vlan_tag(dut: DataplaneUnderTest) -> None:
    req = bytes(eth() / Dot1Q(vlan=7) / IP(src=CLIENT, dst=VIP) / ICMP())
    out = counted(dut, "tx_icmp_echo", req, XDP_TX)
    o = Ether(out)
    assert o[Dot1Q].vlan == 7 and o[IP].dst == CLIENT and o[ICMP].type == 0


def test_other_icmp_to_a_vip_and_pings_elsewhere_pass(dut: DataplaneUnderTest) -> None:
    for pkt in (eth() / IP(src=CLIENT, dst=VIP) / ICMP(type=0),   # an echo reply
                eth() / IP(src=CLIENT, dst=VIP) / ICMP(type=13),  # timestamp request
                eth() / IPv6(src=CLIENT6, dst=VIP6) / ICMPv6EchoReply()):
        raw = bytes(pkt)
        assert counted(dut, "pass_vip_other_proto", raw, XDP_PASS) == raw
    raw = bytes(eth() / IP(src=CLIENT, dst="192.0.2.1") / ICMP())
    assert counted(dut, "pass_not_vip", raw, XDP_PASS) == raw


def test_pings_with_options_or_cut_short_are_dropped(dut: DataplaneUnderTest) -> None:
    counted(dut, "drop_ip_options", bytes(eth() / IPv6(src=CLIENT6, dst=VIP6)
                                          / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest()),
            XDP_DROP)
    req = bytes(eth() / IP(src=CLIENT, dst=VIP) / ICMP() / Raw(b"z" * 20))
    counted(dut, "drop_malformed", req[:14 + 20 + 6], XDP_DROP)  # ICMP header cut
    counted(dut, "drop_malformed", req[:-4], XDP_DROP)  # shorter than its IP length


# -- ICMP errors about a VIP flow ------------------------------------------------------------

def reply_v4(sport: int, proto: str = "udp", size: int = 1400) -> Packet:
    """What the backend sent back to the client from the VIP (DSR): the packet that
    the router quotes in its ICMP error."""
    l4 = UDP(sport=53, dport=sport) if proto == "udp" else TCP(sport=80, dport=sport, flags="A")
    return IP(src=VIP, dst=CLIENT, flags="DF") / l4 / Raw(b"r" * size)


def frag_needed(quoted: Packet, quote: int = 548) -> bytes:
    """The router's ICMP "fragmentation needed" to the VIP, quoting up to `quote` bytes
    (a whole ICMP error stays within 576 bytes)."""
    return bytes(eth() / IP(src=ROUTER, dst=quoted[IP].src)
                 / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(bytes(quoted)[:quote]))


def udp_query(sport: int) -> bytes:
    return bytes(eth() / IP(src=CLIENT, dst=VIP) / UDP(sport=sport, dport=53) / Raw(b"q"))


def test_fragmentation_needed_goes_to_the_flows_backend(dut: DataplaneUnderTest) -> None:
    """The flow's connection entry decides, even where Maglev would now choose another
    backend; the ICMP packet arrives whole; nothing is recorded."""
    _, out = dut.run(udp_query(5353))
    owner = outer_v4(out)[0].dst
    cfg = base_config()
    dns = cfg["vip"][1]
    dns["backend"] = [{"address": b["address"],
                       "state": "drained" if b["address"] == owner else "active"}
                      for b in dns["backend"]]
    dut.apply(cfg)  # new flows avoid the owner now; this one stays
    conns = dut.conns()
    err = frag_needed(reply_v4(5353))
    out = counted(dut, "tx_encap_icmp_error", err, XDP_TX)
    ip, inner = outer_v4(out)
    assert ip.dst == owner and ip.proto == 4
    assert inner == err[14:], "the ICMP error is delivered byte for byte"
    assert dut.conns() == conns, "an ICMP error must not make a connection entry"


def test_icmp_error_without_an_entry_follows_maglev(dut: DataplaneUnderTest) -> None:
    """No entry (e.g. the error reached the other LB): Maglev, as for the flow's SYN."""
    seen = set()
    for port in range(41000, 41040):
        conns = dut.conns()
        _, out = dut.run(frag_needed(reply_v4(port, "tcp")))
        to = outer_v4(out)[0].dst
        assert dut.conns() == conns
        _, out = dut.run(syn(sport=port))
        assert outer_v4(out)[0].dst == to, port
        seen.add(to)
    assert len(seen) >= 2


def v6_config() -> dict:
    cfg = base_config()
    cfg["vip"][3]["backend"] = [{"address": a} for a in V6_BACKENDS]
    return cfg


def reply_v6(sport: int, size: int = 1400) -> Packet:
    return IPv6(src=VIP6, dst=CLIENT6) / TCP(sport=80, dport=sport, flags="PA") / Raw(b"r" * size)


def too_big_v6(quoted: Packet, quote: int = 1232) -> bytes:
    return bytes(eth() / IPv6(src=ROUTER6, dst=VIP6) / ICMPv6PacketTooBig(mtu=1400)
                 / Raw(bytes(quoted)[:quote]))


def outer6_dst(out: bytes) -> str:
    outer = IPv6(out[14:54])
    assert outer.nh == 41
    return str(outer.dst)


def test_packet_too_big_goes_to_the_flows_backend(dut: DataplaneUnderTest) -> None:
    dut.apply(v6_config())
    seen = set()
    for port in range(42000, 42030):  # no entry: Maglev, as the SYN will be
        _, out = dut.run(too_big_v6(reply_v6(port)))
        to = outer6_dst(out)
        _, out = dut.run(bytes(eth() / IPv6(src=CLIENT6, dst=VIP6)
                               / TCP(sport=port, dport=80, flags="S")))
        assert outer6_dst(out) == to
        seen.add(to)
    assert len(seen) >= 2
    # with an entry: the entry, although the owner is drained now
    owner = outer6_dst(dut.run(bytes(eth() / IPv6(src=CLIENT6, dst=VIP6)
                                     / TCP(sport=42100, dport=80, flags="S")))[1])
    cfg = v6_config()
    cfg["vip"][3]["backend"] = [{"address": a, "state": "drained" if a == owner else "active"}
                                for a in V6_BACKENDS]
    dut.apply(cfg)
    err = too_big_v6(reply_v6(42100))
    out = counted(dut, "tx_encap_icmp_error", err, XDP_TX)
    assert outer6_dst(out) == owner
    assert out[54:] == err[14:]
    assert ipaddress.ip_address(IPv6(out[14:54]).src) in ipaddress.ip_network("fd00:5f1b::/64")


def test_v6_destination_unreachable_goes_to_the_flows_backend(dut: DataplaneUnderTest) -> None:
    dut.apply(v6_config())
    err = bytes(eth() / IPv6(src=ROUTER6, dst=VIP6) / ICMPv6DestUnreach(code=3)
                / Raw(bytes(reply_v6(42200, size=40))))
    out = counted(dut, "tx_encap_icmp_error", err, XDP_TX)
    _, syn_out = dut.run(bytes(eth() / IPv6(src=CLIENT6, dst=VIP6)
                               / TCP(sport=42200, dport=80, flags="S")))
    assert outer6_dst(out) == outer6_dst(syn_out)


def test_icmp_errors_that_name_no_vip_flow_are_not_routed(dut: DataplaneUnderTest) -> None:
    quoted = IP(src=VIP, dst=CLIENT) / UDP(sport=5000, dport=9) / Raw(b"r" * 20)
    raw = frag_needed(quoted)  # no VIP on port 5000/udp
    assert counted(dut, "pass_vip_no_service", raw, XDP_PASS) == raw
    quoted = IP(src=VIP, dst=CLIENT) / ICMP() / Raw(b"r" * 20)  # about an ICMP packet
    counted(dut, "pass_vip_other_proto", frag_needed(quoted), XDP_PASS)
    time_exceeded = bytes(eth() / IP(src=ROUTER, dst=VIP) / ICMP(type=11)
                          / Raw(bytes(reply_v4(5353))[:28]))
    counted(dut, "pass_vip_other_proto", time_exceeded, XDP_PASS)
    counted(dut, "drop_malformed", frag_needed(reply_v4(5353), quote=22), XDP_DROP)  # no ports


def test_icmp_error_too_big_to_encapsulate_is_dropped_not_answered(
        dut: DataplaneUnderTest) -> None:
    dut.apply(base_config(mtu=576))
    err = frag_needed(reply_v4(5353))  # 576 bytes: 596 once encapsulated
    assert len(err) - 14 == 576
    counted(dut, "drop_icmp_too_big", err, XDP_DROP)
    counted(dut, "tx_encap_icmp_error", frag_needed(reply_v4(5353), quote=500), XDP_TX)
