"""bench/katran.py's path checks: a Katran run that took another path than the class names
(an LRU miss where a hit was meant, the fallback table, a frame not encapsulated to the
VIP's real) must stop the benchmark, not print a figure for the wrong thing."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from bench import katran

N = 1000


def counters(**set_: tuple[int, int]) -> dict[str, tuple[int, int]]:
    base = {c: (0, 0) for c in ("lru", "lru_miss", "fallback_lru", "total", "tx", "drop",
                                "pass")}
    return {**base, **set_}


def test_established_path_accepted() -> None:
    text = katran.check_counts("established_v4", counters(tx=(N, 0), lru=(N, 0)), N)
    assert f"tx {N}" in text


@pytest.mark.parametrize("wrong", [
    {"lru": (N, N)},  # every packet went through the ring: the flow had no entry
    {"fallback_lru": (N, 0)},  # the per-CPU table was missing
    {"lru_miss": (0, N)},  # non-SYN misses
])
def test_established_on_another_path_refused(wrong: dict[str, tuple[int, int]]) -> None:
    with pytest.raises(SystemExit, match="wrong path"):
        katran.check_counts("established_v4", counters(**{"tx": (N, 0), "lru": (N, 0), **wrong}), N)


def test_syn_must_use_the_ring_and_non_vip_must_pass() -> None:
    katran.check_counts("syn_new_flow_v4", counters(tx=(N, 0), lru=(N, N), lru_miss=(N, 0)), N)
    with pytest.raises(SystemExit):
        katran.check_counts("syn_new_flow_v4", counters(tx=(N, 0), lru=(N, 0)), N)
    katran.check_counts("non_vip_pass", counters(**{"pass": (N, 0)}), N)
    with pytest.raises(SystemExit):
        katran.check_counts("non_vip_pass", counters(tx=(N, 0), lru=(N, 0)), N)


def test_frame_check() -> None:
    pkt = katran.packets()["established_v4"][0]
    vip = katran.VIP_OF["established_v4"]
    inner = Ether(pkt).payload

    def encap(real: str) -> bytes:
        return bytes(Ether(dst=katran.GATEWAY_MAC.hex(":"), src="02:00:00:00:00:02")
                     / IP(src="172.16.0.1", dst=real, proto=4) / inner)

    assert vip.reals[5] in katran.check_frame("e", pkt, encap(vip.reals[5]), vip, None)
    with pytest.raises(SystemExit, match="not the VIP's real"):
        katran.check_frame("e", pkt, encap(vip.reals[5]), vip, vip.reals[6])
    with pytest.raises(SystemExit, match="not the VIP's real"):
        katran.check_frame("e", pkt, encap("192.0.2.9"), vip, None)
    with pytest.raises(SystemExit, match="not IP-in-IP"):
        katran.check_frame("e", pkt, pkt, vip, None)
    bad = Ether(encap(vip.reals[5]))
    bad[TCP].sport = 1
    with pytest.raises(SystemExit, match="not the client's"):
        katran.check_frame("e", pkt, bytes(bad), vip, None)
