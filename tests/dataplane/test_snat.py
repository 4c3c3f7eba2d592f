"""SNAT mode, packet by packet (BPF_PROG_TEST_RUN + scapy): the forward translation to the
backend, the reply translated back, checksums (scapy recomputes them), the claim of
(address, port) pairs, and that a flow keeps the mode it started in."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from tests.helpers import (
    CLIENT,
    CLIENT6,
    CLIENT_MAC,
    LB_MAC,
    WEB_BACKENDS,
    XDP_DROP,
    XDP_PASS,
    XDP_TX,
    DataplaneUnderTest,
    dataplane_under_test,
    eth,
    one_cpu,
    outer_v4,
)
from xlb.dataplane import structs as S
from xlb.dataplane.manager import key_label

POOL4 = ipaddress.ip_network("198.19.1.0/28")
POOL6 = ipaddress.ip_network("fd00:5f1b:19:1::/124")
VIP4, VIP6 = "10.100.0.10", "2001:db8::10"
BACKEND6 = "2001:db8:1::1"


def snat_config(mode: str = "snat", dsr_mode: str = "dsr", **instance: Any) -> dict[str, Any]:
    """SNAT VIPs of both families and protocols, an any-port one and a DSR one."""
    inst = {"name": "snat", "interface": "lo", "max_vips": 8, "max_backends": 64,
            "max_connections": 65536, "snat_pool_v4": str(POOL4), "snat_pool_v6": str(POOL6),
            **instance}
    return {
        "instance": inst,
        "vip": [
            {"name": "web", "address": VIP4, "port": 80, "protocol": "tcp", "mode": mode,
             "backend": [{"address": a} for a in sorted(WEB_BACKENDS)]},
            {"name": "dns", "address": VIP4, "port": 53, "protocol": "udp", "mode": mode,
             "backend": [{"address": "10.0.1.1"}, {"address": "10.0.1.2"}]},
            {"name": "anyport", "address": "10.100.0.20", "port": 0, "protocol": "tcp",
             "mode": mode, "backend": [{"address": "10.0.1.4"}]},
            {"name": "web6", "address": VIP6, "port": 80, "protocol": "tcp", "mode": mode,
             "backend": [{"address": BACKEND6}]},
            {"name": "dns6", "address": VIP6, "port": 53, "protocol": "udp", "mode": mode,
             "backend": [{"address": BACKEND6}]},
            {"name": "dsr", "address": "10.100.0.30", "port": 80, "protocol": "tcp",
             "mode": dsr_mode, "backend": [{"address": "10.0.1.5"}]},
        ],
    }


@pytest.fixture(scope="module")
def snat_session(roots: tuple[str, str]) -> Iterator[DataplaneUnderTest]:
    with dataplane_under_test("snat", snat_config(), roots) as d:
        yield d


@pytest.fixture
def dut(snat_session: DataplaneUnderTest) -> DataplaneUnderTest:
    """The SNAT data plane reset to snat_config(), with empty conns and snat_rev."""
    snat_session.apply(snat_config())
    snat_session.flush_conns()
    rev = snat_session.dp.maps["snat_rev"]
    for k in rev.keys():
        rev.delete(k)
    return snat_session


def tcp4(sport: int = 40000, flags: str = "S", dst: str = VIP4, dport: int = 80,
         payload: bytes = b"hello") -> bytes:
    return bytes(eth() / IP(src=CLIENT, dst=dst) / TCP(sport=sport, dport=dport, flags=flags,
                                                       seq=1000) / Raw(payload))


def udp4(sport: int = 40000, payload: bytes = b"query", chksum: int | None = None) -> bytes:
    u = UDP(sport=sport, dport=53) if chksum is None else UDP(sport=sport, dport=53,
                                                               chksum=chksum)
    return bytes(eth() / IP(src=CLIENT, dst=VIP4) / u / Raw(payload))


def tcp6(sport: int = 40000, flags: str = "S") -> bytes:
    return bytes(eth() / IPv6(src=CLIENT6, dst=VIP6) / TCP(sport=sport, dport=80, flags=flags)
                 / Raw(b"hello6"))


def udp6(sport: int = 40000) -> bytes:
    return bytes(eth() / IPv6(src=CLIENT6, dst=VIP6) / UDP(sport=sport, dport=53)
                 / Raw(b"query6"))


def l3(p: Packet) -> Packet:
    return p[IP] if IP in p else p[IPv6]


def l4(p: Packet) -> Packet:
    return p[TCP] if TCP in p else p[UDP]


def assert_checksums(out: bytes) -> Packet:
    """The frame's IPv4 and TCP/UDP checksums are what scapy computes from scratch (a
    UDP/IPv4 checksum of 0, "none", is left out); returns the parsed frame."""
    p = Ether(out)
    q = p.copy()
    if IP in q:
        del q[IP].chksum
    if not (UDP in p and IP in p and p[UDP].chksum == 0):
        del l4(q).chksum
    r = Ether(bytes(q))
    if IP in p:
        assert p[IP].chksum == r[IP].chksum, "IPv4 header checksum wrong"
    assert l4(p).chksum == l4(r).chksum, "TCP/UDP checksum wrong"
    return p


def reply_to(fwd: Packet, flags: str = "SA", payload: bytes = b"answer") -> bytes:
    """The backend's answer to a translated packet: its addresses and ports swapped."""
    ip = l3(fwd)
    rip = (IP(src=ip.dst, dst=ip.src) if IP in fwd else IPv6(src=ip.dst, dst=ip.src))
    f = l4(fwd)
    rl4 = (TCP(sport=f.dport, dport=f.sport, flags=flags, seq=5000, ack=1001) if TCP in fwd
           else UDP(sport=f.dport, dport=f.sport))
    return bytes(Ether(src="02:00:00:00:00:0b", dst=LB_MAC) / rip / rl4 / Raw(payload))


def forward(dut: DataplaneUnderTest, pkt: bytes) -> Packet:
    """Run a client packet that must be translated; checks it and returns the output."""
    action, out = dut.run(pkt)
    assert action == XDP_TX
    return assert_checksums(out)


def snat_stats(dut: DataplaneUnderTest, vip_id: int) -> dict[str, int]:
    row = dut.dp.counters().snat[vip_id]
    return dict(zip(("packets", "bytes", "reply_packets", "reply_bytes", "translations",
                     "no_port"), (int(x) for x in row), strict=True))


def vip_id(dut: DataplaneUnderTest, name: str) -> int:
    label = {"web": f"{VIP4}:80/tcp", "dns": f"{VIP4}:53/udp", "web6": f"[{VIP6}]:80/tcp",
             "dns6": f"[{VIP6}]:53/udp"}[name]
    ids = {key_label(k): int(m.vip_id) for k, m in dut.dp.vip_entries().values()}
    return ids[label]


@pytest.mark.parametrize("make, proto", [(tcp4, "tcp"), (udp4, "udp"), (tcp6, "tcp"),
                                         (udp6, "udp")],
                         ids=["tcp4", "udp4", "tcp6", "udp6"])
def test_forward_and_reply_are_translated(dut: DataplaneUnderTest, make: Any,
                                          proto: str) -> None:
    before = dut.reasons()
    pkt = make(sport=41000)
    sent = Ether(pkt)
    out = forward(dut, pkt)
    # the backend sees the LB's pool address and a port of the range, the VIP's port
    ip, seg = l3(out), l4(out)
    pool = POOL4 if IP in out else POOL6
    assert ipaddress.ip_address(ip.src) in pool
    assert 1024 <= seg.sport <= 65535
    assert ip.dst in (WEB_BACKENDS | {"10.0.1.1", "10.0.1.2", BACKEND6})
    assert seg.dport == l4(sent).dport
    assert (out.dst, out.src) == (CLIENT_MAC, LB_MAC)  # MACs swapped like the DSR path
    assert bytes(seg.payload) == bytes(l4(sent).payload)
    assert len(out) == len(sent)
    # the reply comes back through the LB: VIP:port -> client:port
    action, back = dut.run(reply_to(out))
    assert action == XDP_TX
    b = assert_checksums(back)
    assert (l3(b).src, l4(b).sport) == (l3(sent).dst, l4(sent).dport)
    assert (l3(b).dst, l4(b).dport) == (l3(sent).src, l4(sent).sport)
    assert bytes(l4(b).payload) == b"answer"
    assert (b.dst, b.src) == ("02:00:00:00:00:0b", LB_MAC)
    after = dut.reasons()
    assert after["tx_snat"] - before["tx_snat"] == 1
    assert after["tx_snat_reply"] - before["tx_snat_reply"] == 1
    # a packet of the established flow keeps its translation
    again = forward(dut, make(sport=41000, **({"flags": "A"} if proto == "tcp" else {})))
    assert (l3(again).src, l4(again).sport) == (ip.src, seg.sport)


def test_udp4_without_checksum_stays_without(dut: DataplaneUnderTest) -> None:
    out = forward(dut, udp4(sport=41100, chksum=0))
    assert out[UDP].chksum == 0
    action, back = dut.run(bytes(Ether(reply_to(out)).copy()))
    assert action == XDP_TX


def test_any_port_vip_keeps_the_clients_destination_port(dut: DataplaneUnderTest) -> None:
    out = forward(dut, tcp4(sport=41200, dst="10.100.0.20", dport=8443))
    assert (out[IP].dst, out[TCP].dport) == ("10.0.1.4", 8443)
    action, back = dut.run(reply_to(out))
    assert action == XDP_TX
    b = Ether(back)
    assert (b[IP].src, b[TCP].sport, b[TCP].dport) == ("10.100.0.20", 8443, 41200)


def test_counters_per_mode(dut: DataplaneUnderTest) -> None:
    vid = vip_id(dut, "web")
    before = snat_stats(dut, vid)
    vips_before = int(dut.dp.counters().vips[vid, 0])
    pkt = tcp4(sport=41300)
    out = forward(dut, pkt)
    forward(dut, tcp4(sport=41300, flags="A"))
    dut.run(reply_to(out))
    after = snat_stats(dut, vid)
    assert after["packets"] - before["packets"] == 2
    assert after["bytes"] - before["bytes"] == 2 * len(pkt)
    assert after["reply_packets"] - before["reply_packets"] == 1
    assert after["translations"] - before["translations"] == 1
    # VIP counters count the client's packets of either mode, never replies
    assert int(dut.dp.counters().vips[vid, 0]) - vips_before == 2
    assert dut.dp.counters().snat.shape == (8, 6)


def test_syn_retransmit_reuses_the_translation(dut: DataplaneUnderTest) -> None:
    first = forward(dut, tcp4(sport=41400))
    vid = vip_id(dut, "web")
    made = snat_stats(dut, vid)["translations"]
    second = forward(dut, tcp4(sport=41400))
    assert (second[IP].src, second[TCP].sport, second[IP].dst) == (
        first[IP].src, first[TCP].sport, first[IP].dst)
    assert snat_stats(dut, vid)["translations"] == made
    assert len(dut.dp.maps["snat_rev"].keys()) == 1


def test_flows_get_distinct_ports(dut: DataplaneUnderTest) -> None:
    seen = set()
    for port in range(42000, 42200):
        out = forward(dut, tcp4(sport=port))
        assert ipaddress.ip_address(out[IP].src) in POOL4
        seen.add((out[IP].src, out[TCP].sport, out[IP].dst))
    assert len(seen) == 200
    assert len({s for s, _, _ in seen}) > 8  # spread over the pool's addresses


def test_dsr_flow_keeps_dsr_when_its_vip_switches_to_snat(dut: DataplaneUnderTest) -> None:
    dut.apply(snat_config(mode="dsr"))
    action, out = dut.run(tcp4(sport=43000))
    assert action == XDP_TX and outer_v4(out)[0].proto == 4  # IP-in-IP
    slots = {k: m.ring_slot for k, (_, m) in dut.dp.vip_entries().items()}
    result = dut.apply(snat_config(mode="snat"))
    assert result.rings == {}, "a mode switch rebuilt a ring"
    assert {k: m.ring_slot for k, (_, m) in dut.dp.vip_entries().items()} == slots
    assert "web" in result.vips_changed
    # the established DSR flow stays DSR, byte for byte as before
    pkt = tcp4(sport=43000, flags="A")
    action, out = dut.run(pkt)
    assert action == XDP_TX
    assert outer_v4(out)[1] == pkt[14:]
    # a new flow is translated
    fresh = forward(dut, tcp4(sport=43001))
    assert ipaddress.ip_address(fresh[IP].src) in POOL4


def test_snat_flow_keeps_snat_when_its_vip_switches_to_dsr(dut: DataplaneUnderTest) -> None:
    out = forward(dut, tcp4(sport=43100))
    udp_out = forward(dut, udp4(sport=43100))
    result = dut.apply(snat_config(mode="dsr"))
    assert result.rings == {}
    again = forward(dut, tcp4(sport=43100, flags="A"))
    assert (again[IP].src, again[TCP].sport) == (out[IP].src, out[TCP].sport)
    udp_again = forward(dut, udp4(sport=43100))
    assert (udp_again[IP].src, udp_again[UDP].sport) == (udp_out[IP].src, udp_out[UDP].sport)
    action, back = dut.run(reply_to(again, flags="A"))
    assert action == XDP_TX and Ether(back)[IP].dst == CLIENT
    # a new flow (and a new UDP one) is DSR now
    for pkt in (tcp4(sport=43101), udp4(sport=43101)):
        action, o = dut.run(pkt)
        assert action == XDP_TX and outer_v4(o)[1] == pkt[14:]


def test_port_exhaustion_is_a_counted_drop_never_a_mistranslation(
        dut: DataplaneUnderTest) -> None:
    dut.apply(snat_config(snat_pool_v4="198.19.1.7/32", snat_port_min=2000,
                          snat_port_max=2001))
    vid = vip_id(dut, "web")
    before = snat_stats(dut, vid)
    # the pool is per (backend, port): three flows of one backend want its two ports
    ports = [p for p in range(44000, 44400) if _backend_of(dut, p) == "10.0.1.1"][:3]
    first, second = (forward(dut, tcp4(sport=p)) for p in ports[:2])
    assert {(first[IP].src, first[TCP].sport), (second[IP].src, second[TCP].sport)} == {
        ("198.19.1.7", 2000), ("198.19.1.7", 2001)}
    assert dut.run(tcp4(sport=ports[2]))[0] == XDP_DROP
    assert dut.reasons()["drop_snat_no_port"] >= 1
    after = snat_stats(dut, vid)
    assert after["no_port"] - before["no_port"] == 1
    assert after["translations"] - before["translations"] == 2
    # each reply reaches its own client port
    for p, translated in zip(ports, (first, second), strict=False):
        action, back = dut.run(reply_to(translated))
        assert action == XDP_TX and Ether(back)[TCP].dport == p
    assert dut.run(tcp4(sport=ports[2], flags="A"))[0] == XDP_TX  # no entry: the DSR path


def _age_translations(dut: DataplaneUnderTest, seconds: float) -> None:
    """Make every translation look idle for `seconds` more (as if time passed)."""
    rev = dut.dp.maps["snat_rev"]
    for k, e in rev.items():
        e.last_seen_ns = max(0, e.last_seen_ns - int(seconds * 1e9))  # type: ignore[attr-defined]
        rev.set(k, e)


def test_idle_translation_is_taken_over_after_its_timeout(dut: DataplaneUnderTest) -> None:
    dut.apply(snat_config(snat_pool_v4="198.19.1.7/32", snat_port_min=3000,
                          snat_port_max=3000, snat_udp_timeout=60))
    a = forward(dut, udp4(sport=45000))
    assert a[UDP].sport == 3000
    b_port = next(p for p in range(45001, 45400)  # a flow to the same backend
                  if _backend_of(dut, p, "udp") == a[IP].dst)
    before = dut.reasons()["drop_snat_no_port"]
    assert dut.run(udp4(sport=b_port))[0] == XDP_DROP  # the one port is A's
    _age_translations(dut, 30)  # idle, but not past 60 s: still A's
    assert dut.run(udp4(sport=b_port))[0] == XDP_DROP
    assert dut.reasons()["drop_snat_no_port"] == before + 2
    _age_translations(dut, 31)
    b = forward(dut, udp4(sport=b_port))
    assert (b[UDP].sport, b[IP].dst) == (3000, a[IP].dst)
    action, back = dut.run(reply_to(b))  # the port's replies now go to B's client
    assert action == XDP_TX and Ether(back)[UDP].dport == b_port
    # A's next packet finds its translation taken: UDP tries a new one, none is free
    assert dut.run(udp4(sport=45000))[0] == XDP_DROP
    assert len(dut.dp.maps["snat_rev"].keys()) == 1


def _age_conns(dut: DataplaneUnderTest, seconds: float) -> None:
    """Make every connection entry look idle for `seconds` more."""
    conns = dut.dp.maps["conns"]
    for k, c in conns.items():
        c.last_seen_ns = max(0, c.last_seen_ns - int(seconds * 1e9))  # type: ignore[attr-defined]
        conns.set(k, c)


def test_udp_flow_idle_past_the_timeout_takes_its_vips_new_mode(
        dut: DataplaneUnderTest) -> None:
    """A UDP flow ends only in silence: idle past snat_udp_timeout, after its VIP switched
    mode, it is a new flow in the new mode, either way (and explain says so); idle for
    less, it keeps its mode; a TCP flow keeps its mode however long it was idle."""
    from xlb.dataplane.explain import explain

    dut.apply(snat_config(snat_udp_timeout=60))
    first = forward(dut, udp4(sport=47000))
    tcp_first = forward(dut, tcp4(sport=47000))
    dut.apply(snat_config(mode="dsr", snat_udp_timeout=60))
    dsr_pkt = udp4(sport=47001)
    action, out = dut.run(dsr_pkt)
    assert action == XDP_TX and outer_v4(out)[1] == dsr_pkt[14:]
    _age_conns(dut, 59)
    again = forward(dut, udp4(sport=47000))  # idle 59 s: still its SNAT flow
    assert (again[IP].src, again[UDP].sport) == (first[IP].src, first[UDP].sport)
    _age_conns(dut, 61)
    said = explain(dut.dp, CLIENT, 47000, VIP4, 53, "udp")
    assert said["reason"] == "tx_encap", said
    assert any("past the UDP timeout" in step["text"] for step in said["steps"]), said
    pkt = udp4(sport=47000)
    action, out = dut.run(pkt)  # idle 61 s: a new flow, DSR as its VIP is now
    assert action == XDP_TX and outer_v4(out)[1] == pkt[14:]
    tcp_again = forward(dut, tcp4(sport=47000, flags="A"))
    assert (tcp_again[IP].src, tcp_again[TCP].sport) == (tcp_first[IP].src,
                                                         tcp_first[TCP].sport)
    dut.apply(snat_config(snat_udp_timeout=60))  # and back: the idle DSR flow turns SNAT
    _age_conns(dut, 61)
    assert explain(dut.dp, CLIENT, 47001, VIP4, 53, "udp")["reason"] == "tx_snat"
    fresh = forward(dut, udp4(sport=47001))
    assert ipaddress.ip_address(fresh[IP].src) in POOL4
    action, back = dut.run(reply_to(fresh))
    assert action == XDP_TX and Ether(back)[UDP].dport == 47001


def test_fin_or_rst_marks_the_translation_closing(dut: DataplaneUnderTest) -> None:
    rev = dut.dp.maps["snat_rev"]
    out = forward(dut, tcp4(sport=46000))
    [(key, entry)] = rev.items()
    assert entry.flags == 0  # type: ignore[attr-defined]
    forward(dut, tcp4(sport=46000, flags="FA"))
    assert rev.get(key).flags & S.XLB_CONN_F_CLOSING
    # the reply direction: a backend's RST
    out2 = forward(dut, tcp4(sport=46001))
    dut.run(reply_to(out2, flags="R"))
    closing = [e for _, e in rev.items() if e.flags & S.XLB_CONN_F_CLOSING]  # type: ignore[attr-defined]
    assert len(closing) == 2
    del out


def test_closing_translation_is_reusable_after_the_close_timeout(
        dut: DataplaneUnderTest) -> None:
    dut.apply(snat_config(snat_pool_v4="198.19.1.7/32", snat_port_min=3000,
                          snat_port_max=3000, snat_close_timeout=10, snat_tcp_timeout=7440))
    out = forward(dut, tcp4(sport=46100))
    forward(dut, tcp4(sport=46100, flags="FA"))
    other = next(p for p in range(46101, 46400)  # a flow to the same backend
                 if _backend_of(dut, p) == out[IP].dst)
    assert dut.run(tcp4(sport=other))[0] == XDP_DROP
    _age_translations(dut, 11)
    again = forward(dut, tcp4(sport=other))
    assert again[TCP].sport == 3000


def _backend_of(dut: DataplaneUnderTest, sport: int, protocol: str = "tcp") -> str:
    """Where Maglev sends a new flow from CLIENT:sport (explain, without a packet)."""
    from xlb.dataplane.explain import explain
    r = explain(dut.dp, CLIENT, sport, VIP4, 80 if protocol == "tcp" else 53, protocol,
                syn=protocol == "tcp")
    return str(r["backend"])


def test_reply_without_translation_is_dropped(dut: DataplaneUnderTest) -> None:
    pkt = bytes(Ether(dst=LB_MAC) / IP(src="10.0.1.1", dst="198.19.1.3")
                / TCP(sport=80, dport=5555, flags="SA"))
    before = dut.reasons()["drop_snat_no_entry"]
    action, _ = dut.run(pkt)
    assert action == XDP_DROP
    assert dut.reasons()["drop_snat_no_entry"] == before + 1
    # not TCP/UDP to a pool address: not translated, the host's
    ping = bytes(Ether(dst=LB_MAC) / IP(src="10.0.1.1", dst="198.19.1.3") / ICMP())
    assert dut.run(ping)[0] == XDP_PASS
    # beside the pool: host traffic as ever
    assert dut.run(bytes(Ether(dst=LB_MAC) / IP(src="10.0.1.1", dst="198.19.1.16")
                         / TCP(sport=80, dport=5555)))[0] == XDP_PASS


def test_tcp_of_a_lost_translation_is_dropped_udp_gets_a_new_one(
        dut: DataplaneUnderTest) -> None:
    rev = dut.dp.maps["snat_rev"]
    forward(dut, tcp4(sport=47000))
    forward(dut, udp4(sport=47000))
    for k in rev.keys():
        rev.delete(k)
    before = dut.reasons()["drop_snat_no_entry"]
    assert dut.run(tcp4(sport=47000, flags="A"))[0] == XDP_DROP
    assert dut.reasons()["drop_snat_no_entry"] == before + 1
    forward(dut, udp4(sport=47000))
    assert len(rev.keys()) == 1


def test_tcp_without_entry_to_a_snat_vip_takes_the_dsr_path(dut: DataplaneUnderTest) -> None:
    """Most likely a DSR flow whose entry this LB lost, or one failing over from another
    LB: the DSR path, as ever."""
    pkt = tcp4(sport=47100, flags="A")
    action, out = dut.run(pkt)
    assert action == XDP_TX and outer_v4(out)[1] == pkt[14:]
    assert len(dut.dp.maps["snat_rev"].keys()) == 0


def test_icmp_error_about_a_snat_flow_is_not_translated(dut: DataplaneUnderTest) -> None:
    forward(dut, tcp4(sport=47200))
    quote = IP(src=VIP4, dst=CLIENT) / TCP(sport=80, dport=47200)
    err = bytes(eth() / IP(src="192.0.2.1", dst=VIP4) / ICMP(type=3, code=4, nexthopmtu=1400)
                / bytes(quote)[:28])
    before = dut.reasons()["pass_vip_other_proto"]
    assert dut.run(err)[0] == XDP_PASS
    assert dut.reasons()["pass_vip_other_proto"] == before + 1


def test_new_snat_flow_over_the_new_flow_limit_is_dropped(dut: DataplaneUnderTest) -> None:
    ctl = dut.dp.maps["ctl"]
    c = ctl.get(0)
    c.new_flow_limit = 1
    ctl.set(0, c)
    before = dut.reasons()["drop_snat_flow_limit"]
    with one_cpu():  # one CPU's one-second window: at most one new entry
        results = [dut.run(tcp4(sport=p))[0] for p in range(48000, 48004)]
    assert results.count(XDP_TX) <= 1 and results.count(XDP_DROP) >= 3
    assert dut.reasons()["drop_snat_flow_limit"] - before == results.count(XDP_DROP)
    assert len(dut.dp.maps["snat_rev"].keys()) == results.count(XDP_TX)


def test_trace_events_carry_the_mode_and_the_translation(dut: DataplaneUnderTest) -> None:
    from xlb.dataplane.trace import TraceReader, filter_config

    dut.dp.set_trace(filter_config())
    trace = TraceReader("snat", dut.pin_root)
    trace.skip()
    try:
        out = forward(dut, tcp4(sport=49000))
        dut.run(reply_to(out))
        dut.run(bytes(Ether(dst=LB_MAC) / IP(src="10.0.1.1", dst="198.19.1.3")
                      / TCP(sport=80, dport=5555)))
        dut.run(tcp4(sport=49001, dst="10.100.0.30"))  # the DSR VIP
        fwd, rep, stray, dsr = trace.poll(1, 16)
    finally:
        trace.close()
        dut.dp.set_trace(filter_config(mode=S.XLB_TRACE_OFF))
    assert (fwd.reason, fwd.mode) == (S.Reason.TX_SNAT, S.XLB_MODE_SNAT)
    assert (str(fwd.snat_src), fwd.snat_port) == (out[IP].src, out[TCP].sport)
    assert str(fwd.src) == CLIENT and fwd.outer_src is None
    # the reply's event names the client's flow, its VIP and backend
    assert (rep.reason, rep.mode) == (S.Reason.TX_SNAT_REPLY, S.XLB_MODE_SNAT)
    assert (str(rep.src), rep.sport, str(rep.dst), rep.dport) == (CLIENT, 49000, VIP4, 80)
    assert (rep.snat_src, rep.snat_port) == (fwd.snat_src, fwd.snat_port)
    assert (rep.vip_id, rep.backend_id) == (fwd.vip_id, fwd.backend_id)
    assert stray.reason == S.Reason.DROP_SNAT_NO_ENTRY and stray.snat_src is None
    assert (dsr.reason, dsr.mode, dsr.snat_src) == (S.Reason.TX_ENCAP, S.XLB_MODE_DSR, None)


def test_explain_follows_snat_both_ways(dut: DataplaneUnderTest) -> None:
    from xlb.dataplane.explain import explain

    new = explain(dut.dp, CLIENT, 49100, VIP4, 80, "tcp", syn=True)
    assert new["reason"] == "tx_snat" and any("claims" in s["text"] for s in new["steps"])
    out = forward(dut, tcp4(sport=49100))
    est = explain(dut.dp, CLIENT, 49100, VIP4, 80, "tcp")
    assert (est["reason"], est["path"], est["backend"]) == ("tx_snat", "conn", out[IP].dst)
    assert f"{out[IP].src}:{out[TCP].sport}" in " ".join(s["text"] for s in est["steps"])
    rep = explain(dut.dp, out[IP].dst, 80, out[IP].src, out[TCP].sport, "tcp")
    assert (rep["reason"], rep["vip"]) == ("tx_snat_reply", "web")
    stray = explain(dut.dp, out[IP].dst, 80, out[IP].src, out[TCP].sport + 1, "tcp")
    assert stray["reason"] == "drop_snat_no_entry"
