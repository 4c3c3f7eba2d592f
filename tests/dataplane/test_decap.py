"""The backends' decapsulation program undoes exactly what the LB's encapsulation did."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.helpers import XDP_PASS, XDP_TX, DataplaneUnderTest, syn, syn6
from xlb import resources
from xlb.dataplane import bpfsys


@pytest.fixture(scope="module")
def decap_fd() -> Iterator[int]:
    from bcc import BPF

    b = BPF(src_file=str(resources.data_dir("bpf") / "decap.c").encode())
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
