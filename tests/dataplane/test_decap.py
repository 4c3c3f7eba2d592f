"""The backends' decapsulation program undoes exactly what the LB's encapsulation did."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet

from tests.helpers import CLIENT, CLIENT6, XDP_PASS, XDP_TX, DataplaneUnderTest, eth, syn, syn6
from xlb import resources
from xlb.dataplane import bpfsys


@pytest.fixture(scope="module")
def decap_fd() -> Iterator[int]:
    from bcc import BPF

    bpf_dir = resources.data_dir("bpf")
    b = BPF(src_file=str(bpf_dir / "decap.c").encode(), cflags=[f"-I{bpf_dir}"])
    yield b.load_func(b"xlb_decap", BPF.XDP).fd
    b.cleanup()


@pytest.mark.parametrize("packet", [syn(), syn6(payload=b"abc"), syn6(dport=81),
                                    syn(dst="10.100.0.30", dport=443)],
                         ids=["4in4", "6in6", "6in4", "4in6"])
def test_decap_restores_the_inner_packet(dut: DataplaneUnderTest, decap_fd: int,
                                         packet: bytes) -> None:
    action, encapsulated = dut.run(packet)
    assert action == XDP_TX
    action, out, _ = bpfsys.test_run(decap_fd, encapsulated)
    assert action == XDP_PASS
    assert out[14:] == packet[14:], "inner IP packet must come back byte-identical"
    assert Ether(out).type == Ether(packet).type


def test_decap_leaves_other_traffic_alone(decap_fd: int) -> None:
    plain = bytes(Ether() / IP(src="198.18.0.2", dst="198.18.2.11") / UDP(dport=53))
    action, out, _ = bpfsys.test_run(decap_fd, plain)
    assert action == XDP_PASS and out == plain


@pytest.mark.parametrize("tag", [Dot1Q(vlan=42, prio=5), Dot1AD(vlan=7)], ids=["802.1Q", "802.1ad"])
@pytest.mark.parametrize("inner", [IP(src=CLIENT, dst="10.100.0.10") / TCP(sport=40200, dport=80),
                                   IPv6(src=CLIENT6, dst="2001:db8::10") / TCP(sport=40200)],
                         ids=["4in4", "6in6"])
def test_decap_keeps_the_vlan_tag(dut: DataplaneUnderTest, decap_fd: int, tag: Packet,
                                  inner: Packet) -> None:
    packet = bytes(eth() / tag.copy() / inner.copy())
    action, encapsulated = dut.run(packet)
    assert action == XDP_TX
    action, out, _ = bpfsys.test_run(decap_fd, encapsulated)
    assert action == XDP_PASS
    assert out[18:] == packet[18:], "inner IP packet must come back byte-identical"
    assert out[:18] == encapsulated[:12] + packet[12:18], \
        "the LB's MACs, the tag (type, TCI) and the inner ethertype must follow"
