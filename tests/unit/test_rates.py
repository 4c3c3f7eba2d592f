"""RateTracker: per-second rates from cumulative counters, resets, and bounded history."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xlb.agent.rates import Q_ABORTED, Q_DROP, Rates, RateTracker, counter_rates
from xlb.dataplane import structs as S
from xlb.dataplane.manager import Counters

NQ, NACT, NVIPS, NBACKENDS, NREASONS = 64, 5, 8, 16, len(S.Reason)


def zeros(at: float = 0.0) -> Counters:
    return Counters(at, np.zeros((NQ, 2 + NACT), np.uint64), np.zeros((NVIPS, 2), np.uint64),
                    np.zeros((NBACKENDS, 3), np.uint64), np.zeros((NREASONS, 2), np.uint64))


def advance(c: Counters, dt: float, *, q: tuple[int, int, int] = (0, 0, 0), pkts: int = 0,
            nbytes: int = 0, drop: int = 0, aborted: int = 0) -> Counters:
    """c moved on by dt seconds; queue q[0] gains pkts/bytes/drop/aborted; vip 3 and
    backend 5 get the same packets, Reason.TX_ENCAP too."""
    n = Counters(c.at + dt, c.queues.copy(), c.vips.copy(), c.backends.copy(), c.reasons.copy())
    n.queues[q[0], 0] += np.uint64(pkts)
    n.queues[q[0], 1] += np.uint64(nbytes)
    n.queues[q[0], Q_DROP] += np.uint64(drop)
    n.queues[q[0], Q_ABORTED] += np.uint64(aborted)
    n.vips[3] += np.array([pkts, nbytes], np.uint64)
    n.backends[5] += np.array([pkts, nbytes, 1], np.uint64)
    n.reasons[S.Reason.TX_ENCAP] += np.array([pkts, nbytes], np.uint64)
    return n


def test_first_update_returns_none_and_records_nothing() -> None:
    t = RateTracker()
    assert t.update(zeros(10.0)) is None
    assert len(t) == 0
    assert t.last is None
    assert t.history("pps").shape == (0,)
    assert t.history("backends", index=0).shape == (0,)


def test_rates_are_delta_over_interval_for_every_array() -> None:
    t = RateTracker()
    c0 = zeros(100.0)
    c0.queues[:] = 1_000_000  # a nonzero baseline: rates must be deltas, not totals
    t.update(c0)
    r = t.update(advance(c0, 2.0, q=(7, 0, 0), pkts=1000, nbytes=1_500_000))
    assert r is not None
    assert r.at == 102.0 and r.interval == pytest.approx(2.0)
    assert r.queues.dtype == np.float64 and r.queues.shape == (NQ, 2 + NACT)
    assert r.vips.shape == (NVIPS, 2) and r.backends.shape == (NBACKENDS, 3)
    assert r.reasons.shape == (NREASONS, 2)
    assert r.queues[7, 0] == pytest.approx(500.0)
    assert r.queues[7, 1] == pytest.approx(750_000.0)
    assert r.queues[6].sum() == 0 and r.queues[:, 2:].sum() == 0
    assert r.vips[3].tolist() == pytest.approx([500.0, 750_000.0])
    assert r.backends[5].tolist() == pytest.approx([500.0, 750_000.0, 0.5])
    assert r.backends.sum() == pytest.approx(500.0 + 750_000.0 + 0.5)
    assert r.reasons[S.Reason.TX_ENCAP].tolist() == pytest.approx([500.0, 750_000.0])
    assert r.reasons[S.Reason.DROP_MALFORMED].sum() == 0


def test_totals_pps_bps_drop_pps() -> None:
    t = RateTracker()
    c0 = zeros(0.0)
    t.update(c0)
    c1 = advance(c0, 0.5, q=(0, 0, 0), pkts=100, nbytes=10_000, drop=20, aborted=5)
    c1 = advance(c1, 0.5, q=(63, 0, 0), pkts=300, nbytes=30_000, drop=10)
    c1.queues[10, 2 + S.XDP_ACTIONS.index("pass")] += np.uint64(999)  # not a drop
    c1.queues[10, 2 + S.XDP_ACTIONS.index("tx")] += np.uint64(999)
    r = t.update(c1)
    assert r is not None and r.interval == pytest.approx(1.0)
    assert r.pps == pytest.approx(400.0)
    assert r.bps == pytest.approx(40_000 * 8.0)
    assert r.drop_pps == pytest.approx(35.0)
    assert t.history("pps").tolist() == pytest.approx([400.0])
    assert t.history("bps").tolist() == pytest.approx([320_000.0])
    assert t.history("drop_pps").tolist() == pytest.approx([35.0])


def test_rates_totals_are_derived_from_queues() -> None:
    q = np.zeros((NQ, 2 + NACT))
    q[:, 0], q[:, 1], q[:, Q_DROP], q[:, Q_ABORTED] = 1.0, 100.0, 0.25, 0.5
    r = Rates(1.0, 1.0, q, np.zeros((1, 2)), np.zeros((1, 3)), np.zeros((NREASONS, 2)))
    assert (r.pps, r.bps, r.drop_pps) == pytest.approx((64.0, 64 * 800.0, 48.0))


def test_reset_reads_zero_then_new_baseline() -> None:
    t = RateTracker()
    c0 = zeros(0.0)
    c0.backends[5] = (10_000, 5_000_000, 300)
    c0.backends[6] = (2_000, 1_000_000, 50)
    t.update(c0)
    c1 = zeros(1.0)
    c1.backends[5] = (40, 20_000, 2)  # id 5 reused: its row was zeroed, then counted again
    c1.backends[6] = (2_100, 1_050_000, 50)
    r1 = t.update(c1)
    assert r1 is not None
    assert r1.backends[5].tolist() == [0.0, 0.0, 0.0]  # not negative, not a 1.8e19 wrap
    assert r1.backends[6].tolist() == pytest.approx([100.0, 50_000.0, 0.0])
    assert (r1.backends >= 0).all() and r1.backends.max() < 1e6
    c2 = zeros(3.0)
    c2.backends[5] = (240, 120_000, 6)
    c2.backends[6] = (2_100, 1_050_000, 50)
    r2 = t.update(c2)
    assert r2 is not None
    assert r2.backends[5].tolist() == pytest.approx([100.0, 50_000.0, 2.0])  # from 40, not 10000
    assert t.history("backends", index=5, column=0).tolist() == pytest.approx([0.0, 100.0])


def test_reset_is_per_element() -> None:
    prev = np.array([[5, 100], [7, 100]], np.uint64)
    now = np.array([[9, 50], [7, 300]], np.uint64)
    assert counter_rates(prev, now, 2.0).tolist() == [[2.0, 0.0], [0.0, 100.0]]


def test_recreated_maps_read_zero_not_wrap() -> None:
    t = RateTracker()
    c0 = zeros(0.0)
    c0.queues[:, :2] = (2**63, 2**64 - 1)
    t.update(c0)
    r = t.update(zeros(1.0))
    assert r is not None
    assert r.pps == 0.0 and r.bps == 0.0 and r.queues.max() == 0.0


def test_irregular_intervals_divide_by_actual_interval() -> None:
    t = RateTracker(tick=1.0)
    c = zeros(50.0)
    t.update(c)
    got = []
    for dt in (1.0, 0.25, 3.0, 1.7):
        c = advance(c, dt, pkts=600)
        r = t.update(c)
        assert r is not None
        assert r.interval == pytest.approx(dt)
        got.append(r.pps)
    assert got == pytest.approx([600.0, 2400.0, 200.0, 600 / 1.7])
    assert t.history("pps").tolist() == pytest.approx(got)
    assert t.history("vips", index=3).tolist() == pytest.approx(got)


def test_non_increasing_time_rebaselines() -> None:
    t = RateTracker()
    c0 = zeros(5.0)
    t.update(c0)
    same = advance(c0, 0.0, pkts=10)
    assert t.update(same) is None  # no interval, no rate; no division by zero
    r = t.update(advance(same, 1.0, pkts=10))
    assert r is not None and r.pps == pytest.approx(10.0)
    assert len(t) == 1


def test_history_is_bounded_and_oldest_first() -> None:
    t = RateTracker(history_seconds=5.0, tick=1.0)
    assert t.capacity == 5
    c = zeros(0.0)
    t.update(c)
    for i in range(1, 13):
        c = advance(c, 1.0, q=(2, 0, 0), pkts=i, nbytes=10 * i, drop=i)
        t.update(c)
    assert len(t) == 5
    assert t.history("pps").tolist() == pytest.approx([8, 9, 10, 11, 12])
    assert t.history("pps", n=2).tolist() == pytest.approx([11, 12])
    assert t.history("pps", n=100).tolist() == pytest.approx([8, 9, 10, 11, 12])
    assert t.history("pps", n=0).shape == (0,)
    assert t.history("bps").tolist() == pytest.approx([640, 720, 800, 880, 960])
    assert t.history("drop_pps", n=3).tolist() == pytest.approx([10, 11, 12])
    assert t.history("queues", index=2, column=1).tolist() == pytest.approx([80, 90, 100, 110, 120])
    assert t.history("queues", index=3).tolist() == [0.0] * 5
    assert t.history("reasons", index=S.Reason.TX_ENCAP, n=1).tolist() == pytest.approx([12])
    assert t.history("backends", index=5, column=2).tolist() == pytest.approx([1.0] * 5)
    assert t.history("pps").dtype == np.float64


def test_history_partial_fill_and_capacity_rounding() -> None:
    assert RateTracker(history_seconds=300.0, tick=1.0).capacity == 300
    assert RateTracker(history_seconds=10.0, tick=3.0).capacity == 4
    assert RateTracker(history_seconds=0.3, tick=0.1).capacity == 3
    t = RateTracker(history_seconds=10.0, tick=1.0)
    c = zeros(0.0)
    t.update(c)
    for i in (1, 2, 3):
        c = advance(c, 1.0, pkts=i)
        t.update(c)
    assert t.history("pps").tolist() == pytest.approx([1, 2, 3])


def test_history_returns_copies() -> None:
    t = RateTracker(history_seconds=3.0)
    c = zeros(0.0)
    t.update(c)
    t.update(advance(c, 1.0, pkts=5))
    h = t.history("pps")
    h[:] = -1
    assert t.history("pps").tolist() == [5.0]


def test_history_argument_errors() -> None:
    t = RateTracker()
    c = zeros(0.0)
    t.update(c)
    t.update(advance(c, 1.0, pkts=1))
    with pytest.raises(ValueError):
        t.history("nope")
    with pytest.raises(ValueError):
        t.history("vips")  # which row?
    with pytest.raises(ValueError):
        t.history("pps", index=0)
    with pytest.raises(IndexError):
        t.history("vips", index=NVIPS)
    with pytest.raises(IndexError):
        t.history("vips", index=0, column=2)
    with pytest.raises(ValueError):
        RateTracker(history_seconds=0)


def test_baseline_is_a_copy() -> None:
    t = RateTracker()
    c = zeros(0.0)
    t.update(c)
    c.queues[0, 0] = 1000  # a caller reusing its arrays must not move the baseline
    nxt = zeros(1.0)
    nxt.queues[0, 0] = 1000
    r = t.update(nxt)
    assert r is not None and r.pps == pytest.approx(1000.0)


def test_shape_change_reads_zero_and_restarts_that_history() -> None:
    t = RateTracker(history_seconds=4.0)
    c = zeros(0.0)
    t.update(c)
    c = advance(c, 1.0, pkts=10)
    t.update(c)
    bigger = Counters(2.0, c.queues.copy(), c.vips.copy(), np.zeros((2 * NBACKENDS, 3), np.uint64),
                      c.reasons.copy())
    bigger.backends[20] = (5, 5, 5)
    r = t.update(bigger)
    assert r is not None and r.backends.shape == (2 * NBACKENDS, 3) and r.backends.max() == 0
    bigger2 = Counters(3.0, bigger.queues, bigger.vips, bigger.backends.copy(), bigger.reasons)
    bigger2.backends[20] += np.uint64(7)
    r = t.update(bigger2)
    assert r is not None and r.backends[20].tolist() == pytest.approx([7, 7, 7])
    assert t.history("backends", index=20).tolist() == pytest.approx([0, 0, 7])


@settings(max_examples=200, deadline=None)
@given(st.lists(
    st.tuples(st.floats(0.01, 10.0),
              st.lists(st.integers(-(2**40), 2**40), min_size=NREASONS * 2,
                       max_size=NREASONS * 2)),
    min_size=1, max_size=12),
    st.integers(1, 6))
def test_matches_reference_model(steps: list[tuple[float, list[int]]], cap: int) -> None:
    """Random walks with random resets, against a plain per-element model."""
    t = RateTracker(history_seconds=float(cap), tick=1.0)
    c = zeros(0.0)
    t.update(c)
    expected: list[float] = []
    for dt, moves in steps:
        prev = c.reasons.astype(np.int64)
        new = np.clip(prev + np.array(moves, np.int64).reshape(NREASONS, 2), 0, None)
        c = Counters(c.at + dt, c.queues, c.vips, c.backends, new.astype(np.uint64))
        r = t.update(c)
        assert r is not None
        want = np.where(new >= prev, new - prev, 0) / dt
        np.testing.assert_allclose(r.reasons, want, rtol=1e-12)
        assert (r.reasons >= 0).all()
        expected.append(float(want[S.Reason.DROP_NO_BACKEND, 1]))
    hist = t.history("reasons", index=S.Reason.DROP_NO_BACKEND, column=1)
    assert len(hist) == min(cap, len(steps))
    np.testing.assert_allclose(hist, expected[-cap:], rtol=1e-6)


def test_connection_table_misses_become_rates_by_kind() -> None:
    t = RateTracker()
    c = zeros(1.0)
    t.update(c)
    n = Counters(3.0, c.queues, c.vips, c.backends, c.reasons, c.misses.copy())
    n.misses[S.Miss.TCP_NON_SYN] += np.array([40, 2400], np.uint64)
    n.misses[S.Miss.TCP_SYN] += np.array([10, 600], np.uint64)
    r = t.update(n)
    assert r is not None
    assert r.misses[S.Miss.TCP_NON_SYN, 0] == 20.0 and r.misses[S.Miss.TCP_SYN, 0] == 5.0
    assert r.misses[S.Miss.UDP, 0] == 0.0
    assert t.history("misses", int(S.Miss.TCP_NON_SYN)).tolist() == [20.0]
