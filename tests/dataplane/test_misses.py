"""Connection-table misses counted by kind: a SYN is a new flow, a TCP non-SYN without an
entry is a flow whose state this LB lost (or made-up packets), UDP apart."""

from __future__ import annotations

import os

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from tests.helpers import CLIENT, XDP_DROP, XDP_TX, DataplaneUnderTest, base_config, eth, syn
from xlb.dataplane import bpfsys, loader
from xlb.dataplane.config import parse_config
from xlb.dataplane.manager import Dataplane, geometry_of
from xlb.dataplane.maps import pin_dir


def _udp(sport: int) -> bytes:
    return bytes(eth() / IP(src=CLIENT, dst="10.100.0.10") / UDP(sport=sport, dport=53)
                 / Raw(b"q" * 20))


def _grew(dut: DataplaneUnderTest, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in dut.misses().items()}


def test_syn_and_non_syn_misses_are_counted_apart(dut: DataplaneUnderTest) -> None:
    before = dut.misses()
    for pkt in (syn(sport=50010),             # a new flow: a SYN miss, an entry made
                syn(sport=50010, flags="A"),  # its next packet: found, no miss
                syn(sport=50011, flags="A"),  # a flow the table does not know ...
                syn(sport=50011, flags="PA"),  # ... and stays unknown: no entry made
                _udp(5300), _udp(5300)):      # a new UDP flow, then found
        action, _ = dut.run(pkt)
        assert action == XDP_TX
    assert _grew(dut, before) == {"tcp_syn": 1, "tcp_non_syn": 2, "udp": 1}


def test_a_miss_that_ends_in_a_drop_is_a_miss(dut: DataplaneUnderTest) -> None:
    before = dut.misses()
    action, _ = dut.run(syn(dst="10.100.0.40", flags="A"))  # a VIP without backends
    assert action == XDP_DROP
    assert _grew(dut, before) == {"tcp_syn": 0, "tcp_non_syn": 1, "udp": 0}


def test_pins_made_before_the_miss_counters_are_adopted(roots: tuple[str, str]) -> None:
    """An upgrade over pins an older xlb made (no miss_stats) keeps the connection table:
    the load adopts them and makes the missing map."""
    pin_root, run_root = roots
    cfg = parse_config(base_config("oldpins"))
    first = loader.load("oldpins", geometry_of(cfg), pin_root)
    try:
        with Dataplane("oldpins", pin_root, run_root) as dp:
            dp.apply(cfg)
        assert bpfsys.test_run(first.prog_fd, syn(sport=61001))[0] == XDP_TX
        os.unlink(os.path.join(pin_dir("oldpins", pin_root), "miss_stats"))
        second = loader.load("oldpins", geometry_of(cfg), pin_root)
        assert second.adopted
        with Dataplane("oldpins", pin_root, run_root) as dp:
            assert len(dp.maps["conns"].keys()) == 1, "the connection table was kept"
            assert bpfsys.test_run(second.prog_fd, syn(sport=61002))[0] == XDP_TX
            assert int(dp.counters().misses[0, 0]) == 1, "counted in the new map"
    finally:
        loader.remove_pins("oldpins", pin_root)
