"""Floods against the connection table: idle connections on a drained backend must keep
their backend while a flood of made-up flows runs (an LRU table evicts its least recently
used entries, so every entry a flood makes pushes an idle one closer to the door).

A small table (1024 entries: 1024 / possible CPUs per CPU) and the test pinned to one CPU
make eviction certain without the protections, whatever the machine.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    XDP_TX,
    DataplaneUnderTest,
    base_config,
    dataplane_under_test,
    one_cpu,
    outer_v4,
    syn,
)
from xlb.dataplane import bpfsys, loader
from xlb.dataplane.manager import new_flow_limit

TABLE = 1024
FLOOD = 20_000  # packets: many times what one CPU's share of the table holds


def config(**instance: Any) -> dict[str, Any]:
    return base_config("flood", max_connections=TABLE, **instance)


@pytest.fixture
def small(roots: tuple[str, str]) -> Iterator[DataplaneUnderTest]:
    try:
        with dataplane_under_test("flood", config(), roots) as d:
            d.apply(config(flow_table_turnover=0))  # setting up makes entries freely
            with one_cpu():
                yield d
    finally:
        loader.remove_pins("flood", roots[0])


def drained_connections(d: DataplaneUnderTest, n: int = 8,
                        **instance: Any) -> tuple[str, list[int]]:
    """n established connections on one backend, which is then drained (with the
    `instance` settings under test): from now on only their entries keep them there
    (Maglev sends their tuples elsewhere)."""
    _, out = d.run(syn(sport=52000))
    owner, ports = outer_v4(out)[0].dst, [52000]
    port = 52001
    while len(ports) < n:
        _, out = d.run(syn(sport=port))
        if outer_v4(out)[0].dst == owner:
            ports.append(port)
        port += 1
    cfg = config(**instance)
    cfg["vip"][0]["backend"] = [{"address": b["address"],
                                 "state": "drained" if b["address"] == owner else "active"}
                                for b in cfg["vip"][0]["backend"]]
    d.apply(cfg)
    return owner, ports


def flood(d: DataplaneUnderTest, template: bytes, n: int = FLOOD) -> None:
    """n packets like `template` (Ethernet + option-less IPv4 + TCP/UDP) from random
    sources and ports: each one a flow the table has never seen."""
    rng = random.Random(14)
    fd = d.loaded.prog_fd
    frame = bytearray(template)
    for _ in range(n):
        frame[26:30] = struct.pack("!I", rng.getrandbits(32) | 0x01000000)
        frame[34:36] = struct.pack("!H", rng.randrange(1024, 65536))
        action, _, _ = bpfsys.test_run(fd, bytes(frame))
        assert action == XDP_TX


def still_there(d: DataplaneUnderTest, owner: str, ports: list[int]) -> list[int]:
    """Ports of the connections whose packets still reach their (drained) backend."""
    return [p for p in ports if outer_v4(d.run(syn(sport=p, flags="A"))[1])[0].dst == owner]


def test_ack_flood_makes_no_entries_and_moves_no_connection(small: DataplaneUnderTest) -> None:
    owner, ports = drained_connections(small)
    conns, before = small.conns(), small.reasons()
    flood(small, syn(flags="A"))
    assert small.conns() == conns, "ACKs of unknown connections must not make entries"
    assert small.reasons()["tx_encap_no_entry"] - before["tx_encap_no_entry"] == FLOOD
    assert still_there(small, owner, ports) == ports


@pytest.mark.parametrize("kind", ["syn", "udp"])
def test_new_flow_flood_is_held_to_the_limit(small: DataplaneUnderTest, kind: str) -> None:
    """SYNs (or UDP packets) of new flows make entries, but at most the limit's worth a
    second per CPU: the rest are balanced without one, counted, and the established
    connections keep their entries."""
    owner, ports = drained_connections(small)
    conns, before = small.conns(), small.reasons()
    template = (syn() if kind == "syn" else
                syn(dport=53)[:23] + b"\x11" + syn(dport=53)[24:])  # the same bytes as UDP
    flood(small, template)
    made = small.conns() - conns
    limited = small.reasons()["tx_encap_flow_limit"] - before["tx_encap_flow_limit"]
    assert made + limited == FLOOD
    limit = new_flow_limit(TABLE, 10.0, bpfsys.possible_cpus())
    assert 0 < made <= 10 * limit, (made, limit)  # a window a second: the flood takes < 10 s
    assert still_there(small, owner, ports) == ports


def test_without_a_limit_a_flood_takes_the_table(small: DataplaneUnderTest) -> None:
    """What the limit is for (flow_table_turnover = 0): the table fills, idle entries go."""
    owner, ports = drained_connections(small, flow_table_turnover=0)
    flood(small, syn(), n=4 * TABLE)
    assert small.reasons()["tx_encap_flow_limit"] == 0
    assert still_there(small, owner, ports) == []


def test_limit_is_the_per_cpu_share_of_the_table_over_the_turnover() -> None:
    assert new_flow_limit(262144, 10.0, 2) == 13107
    assert new_flow_limit(262144, 0.0, 2) == 0  # no limit
    assert new_flow_limit(1024, 3600.0, 64) == 1  # never below one a second
    assert new_flow_limit(67108864, 0.001, 1) == 0xFFFFFFFF
