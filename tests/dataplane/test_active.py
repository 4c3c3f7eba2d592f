"""Active connections per backend: counted in the data plane, once per flow per epoch.

The epoch arithmetic is tested on its own, then the XDP program through
BPF_PROG_TEST_RUN: new flows count, repeats in the same epoch do not, a flow
whose last packet was in an earlier epoch counts again, and slots left over
from an older epoch are never reported.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from tests.helpers import CLIENT_MAC, LB_MAC, XDP_TX, DataplaneUnderTest
from xlb.dataplane import structs as S
from xlb.dataplane.manager import active_flows, activity_epoch

SHIFT = S.XLB_ACTIVE_EPOCH_SHIFT
EPOCH_NS = 1 << SHIFT
WORDS = 7  # u64 words of struct xlb_backend_stats


def rows(nbackends: int, ncpu: int) -> np.ndarray:
    return np.zeros((nbackends, ncpu, WORDS), dtype=np.uint64)


def put(r: np.ndarray, backend: int, cpu: int, epoch: int, count: int) -> None:
    """What the data plane leaves after counting `count` flows in `epoch` on `cpu`."""
    slot = epoch & 1
    r[backend, cpu, 3 + slot] = count
    r[backend, cpu, 5 + slot] = epoch


def test_epoch_is_the_clock_shifted() -> None:
    assert EPOCH_NS / 1e9 == pytest.approx(8.59, abs=0.01)
    assert activity_epoch(0) == 0
    assert activity_epoch(EPOCH_NS - 1) == 0
    assert activity_epoch(EPOCH_NS) == 1
    assert activity_epoch(5 * EPOCH_NS + 123) == 5


def test_active_flows_sums_cpus_of_the_asked_epoch_only() -> None:
    r = rows(4, 3)
    put(r, 1, 0, 100, 5)
    put(r, 1, 2, 100, 7)     # another CPU, same epoch: summed
    put(r, 1, 1, 101, 40)    # the current epoch's slot: not the one asked for
    put(r, 2, 0, 98, 99)     # same slot as 100, but stale: ignored
    put(r, 2, 1, 100, 1)
    put(r, 3, 0, 99, 8)      # only an older epoch in the other slot
    got = active_flows(r, 100)
    assert got.tolist() == [0, 12, 1, 0]
    assert got.dtype == np.uint64
    assert active_flows(r, 101).tolist() == [0, 40, 0, 0]
    assert active_flows(r, 102).tolist() == [0, 0, 0, 0]  # slot of 100 and 98: both stale


def test_counters_are_not_mixed_into_the_active_columns() -> None:
    r = rows(1, 2)
    r[0, :, :3] = 1_000_000  # packets, bytes, new connections
    assert active_flows(r, 0).tolist() == [0]  # epoch 0 slot holds epoch 0, count 0


# -- through the XDP program -------------------------------------------------------

VIP = "10.100.0.20"  # the "anyport" VIP: one backend, 10.0.1.4
BACKEND = "10.0.1.4"
CLIENT = "198.51.100.9"


def tcp(sport: int, flags: str = "S") -> bytes:
    return bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst=VIP)
                 / TCP(sport=sport, dport=80, flags=flags))


def backend_id(dut: DataplaneUnderTest, address: str) -> int:
    (bid,) = [i for i, b in dut.dp.backend_entries().items()
              if str(S.unpack_addr(b.addr, b.family)) == address]
    return bid


def steady_epoch() -> int:
    """The current epoch, with at least 1.5 s of it left and 50 ms gone (the coarse
    clock the data plane reads lags CLOCK_MONOTONIC by up to a jiffy)."""
    now = time.monotonic_ns()
    into = now % EPOCH_NS
    if into < 50_000_000 or EPOCH_NS - into < 1_500_000_000:
        time.sleep(((EPOCH_NS - into) % EPOCH_NS + 100_000_000) / 1e9)
    return activity_epoch(time.monotonic_ns())


def active(dut: DataplaneUnderTest, bid: int, epoch: int) -> int:
    return int(dut.dp.counters(active_epoch=epoch).active[bid])


def set_last_seen(dut: DataplaneUnderTest, sport: int, ns: int) -> None:
    m = dut.dp.maps["conns"]
    (key,) = [k for k in m.keys() if S.host_port(k.sport) == sport]
    conn = m.get(key)
    conn.last_seen_ns = ns
    m.set(key, conn)


def last_seen(dut: DataplaneUnderTest, sport: int) -> int:
    m = dut.dp.maps["conns"]
    (key,) = [k for k in m.keys() if S.host_port(k.sport) == sport]
    return int(m.get(key).last_seen_ns)


def test_each_flow_counts_once_per_epoch(dut: DataplaneUnderTest) -> None:
    bid = backend_id(dut, BACKEND)
    dut.dp.maps["backend_stats"].zero(bid)
    epoch = steady_epoch()
    ports = range(42000, 42020)
    for p in ports:
        assert dut.run(tcp(p))[0] == XDP_TX
    assert active(dut, bid, epoch) == 20
    for flags in ("A", "PA", "A"):  # the same flows again, same epoch: no more
        for p in ports:
            assert dut.run(tcp(p, flags))[0] == XDP_TX
    assert active(dut, bid, epoch) == 20
    # a mid-flow packet without an entry makes none, so it cannot be counted once: it is
    # not counted (nor as a new connection)
    assert dut.run(tcp(42100, "A"))[0] == XDP_TX
    assert active(dut, bid, epoch) == 20
    udp = bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src=CLIENT, dst="10.100.0.10")
                / UDP(sport=5000, dport=53))  # another VIP, other backends: not here
    dut.run(udp)
    assert active(dut, bid, epoch) == 20
    # seen earlier in this same epoch (the once-a-second refresh may run): still no count
    set_last_seen(dut, 42001, epoch << SHIFT)
    dut.run(tcp(42001, "A"))
    assert active(dut, bid, epoch) == 20
    # the flow's last packet was in the previous epoch: it counts again, once
    set_last_seen(dut, 42000, ((epoch - 1) << SHIFT) + 12345)
    assert dut.run(tcp(42000, "A"))[0] == XDP_TX
    assert activity_epoch(last_seen(dut, 42000)) == epoch, "a new epoch refreshes last_seen"
    assert active(dut, bid, epoch) == 21
    dut.run(tcp(42000, "A"))
    assert active(dut, bid, epoch) == 21
    assert activity_epoch(time.monotonic_ns()) == epoch, "test ran across an epoch boundary"
    # what the agent reads: the last complete epoch, where this backend counted nothing
    assert active(dut, bid, epoch - 1) == 0
    assert dut.dp.counters().active_epoch == epoch - 1
    # packets, bytes and new connections keep their meaning
    c = dut.dp.counters()
    assert int(c.backends[bid, 0]) == 20 + 60 + 1 + 1 + 2 and int(c.backends[bid, 2]) == 20


def test_stale_slots_are_not_reported(dut: DataplaneUnderTest) -> None:
    """A CPU's slot from two epochs ago shares the slot of the epoch read: ignored."""
    bid = backend_id(dut, BACKEND)
    m = dut.dp.maps["backend_stats"]
    epoch = steady_epoch()
    last = epoch - 1
    vals = (S.BackendStats * m.ncpu)()
    vals[0].active[last & 1], vals[0].active_epoch[last & 1] = 99, last - 2  # stale
    vals[0].active[epoch & 1], vals[0].active_epoch[epoch & 1] = 50, epoch   # current, partial
    if m.ncpu > 1:
        vals[1].active[last & 1], vals[1].active_epoch[last & 1] = 5, last
    m.set(bid, vals)
    c = dut.dp.counters()
    assert c.active_epoch == last
    assert int(c.active[bid]) == (5 if m.ncpu > 1 else 0)
    assert active(dut, bid, epoch) == 50
    # the data plane restarts a stale slot instead of adding to it
    m.set(bid, (S.BackendStats * m.ncpu)(*[S.BackendStats(active=(99, 99),
                                                          active_epoch=(epoch - 2, epoch - 3))
                                           for _ in range(m.ncpu)]))
    dut.run(tcp(42200))
    assert active(dut, bid, epoch) == 1
    assert activity_epoch(time.monotonic_ns()) == epoch, "test ran across an epoch boundary"
