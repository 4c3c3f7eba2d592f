"""Properties of the weighted Maglev table builder (xlb.dataplane.maglev).

The table decides the traffic split and how many flows break when the pool changes, and every
load balancer must compute the same table, so these check balance, disruption, determinism and
equality with a slow, independent serial implementation of the same definition.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import REPO
from xlb.dataplane import maglev
from xlb.dataplane.maglev import (
    DEFAULT_RING_SIZE,
    MAX_RING_SIZE,
    MAX_WEIGHT,
    NO_BACKEND,
    build_table,
    disruption,
    is_prime,
    shares,
    targets,
)

M = DEFAULT_RING_SIZE
SMALL_PRIMES = [2, 3, 13, 251, 1009, 4093]

# Each example builds one or two 65537-entry tables (~10 ms each); the file runs in seconds.
SOME = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(deadline=None, max_examples=120, suppress_health_check=[HealthCheck.too_slow])


def ip(n: int) -> str:
    return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))


def addresses(min_size: int, max_size: int) -> st.SearchStrategy[list[str]]:
    return st.lists(
        st.integers(0, 2**32 - 1), min_size=min_size, max_size=max_size, unique=True
    ).map(lambda xs: [ip(x) for x in xs])


@st.composite
def pools(draw, min_size=1, max_size=60, max_weight=MAX_WEIGHT):
    keys = draw(addresses(min_size, max_size))
    return [(k, draw(st.integers(0, max_weight))) for k in keys]


def counts(table: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(table[table != NO_BACKEND], minlength=n)


def keyed(pool, table) -> list[str | None]:
    return [pool[i][0] if i != NO_BACKEND else None for i in table.tolist()]


# --- balance ---------------------------------------------------------------------------------


@SOME
@given(pools())
def test_each_share_is_within_one_entry_of_its_weight_share(pool):
    weights = [w for _, w in pool]
    total = sum(weights)
    table = build_table(pool)
    got = counts(table, len(pool))
    if total == 0:
        assert (table == NO_BACKEND).all()
        return
    assert got.sum() == M
    for (key, w), c in zip(pool, got, strict=True):
        ideal = Fraction(M * w, total)
        # Largest remainder: floor or ceil of the ideal. That is far inside the requirement
        # (max(1 entry, 1% of the ideal)), which is asserted too so a regression says which.
        assert abs(c - ideal) < 1, (key, w, c, float(ideal))
        assert abs(c - ideal) <= max(1, ideal / 100)
    assert np.array_equal(targets(pool), got)
    assert np.allclose(shares(table, len(pool)), got / M)


@SOME
@given(pools(min_size=1, max_size=40), st.sampled_from(SMALL_PRIMES))
def test_small_prime_rings_hold_only_valid_indices_and_exact_counts(pool, m):
    table = build_table(pool, m)
    assert table.dtype == np.int32 and table.shape == (m,)
    total = sum(w for _, w in pool)
    if total == 0:
        assert (table == NO_BACKEND).all()
        return
    assert table.min() >= 0 and table.max() < len(pool)
    for (_, w), c in zip(pool, counts(table, len(pool)), strict=True):
        assert abs(c - Fraction(m * w, total)) < 1


def test_more_backends_than_slots():
    pool = [(f"10.0.0.{i}", 1) for i in range(20)]
    table = build_table(pool, 13)
    got = counts(table, 20)
    assert sorted(got.tolist()) == [0] * 7 + [1] * 13


def test_zero_weight_gets_no_entries_and_changes_nothing():
    pool = [("10.0.0.1", 5), ("10.0.0.2", 0), ("10.0.0.3", 7), ("10.0.0.4", 0), ("10.0.0.5", 1)]
    table = build_table(pool)
    got = counts(table, len(pool))
    assert got[1] == 0 and got[3] == 0
    assert (got[[0, 2, 4]] > 0).all()
    # A zero-weight backend is invisible: same table, by key, as without it.
    live = [b for b in pool if b[1]]
    assert keyed(pool, table) == keyed(live, build_table(live))


@SOME
@given(pools(min_size=2, max_size=30, max_weight=1000))
def test_zero_weights_are_never_used(pool):
    table = build_table(pool, 1009)
    zero = [i for i, (_, w) in enumerate(pool) if w == 0]
    assert not np.isin(table, zero).any()


@pytest.mark.parametrize("pool", [[], [("10.0.0.1", 0)], [("a", 0), ("b", 0), ("c", 0)]])
@pytest.mark.parametrize("m", [13, M])
def test_empty_or_all_zero_pool_is_all_no_backend(pool, m):
    table = build_table(pool, m)
    assert table.shape == (m,) and table.dtype == np.int32
    assert (table == NO_BACKEND).all()
    assert shares(table, len(pool)).sum() == 0


# --- disruption ------------------------------------------------------------------------------


@st.composite
def removal(draw, equal: bool):
    keys = draw(addresses(2, 50))
    n = len(keys)
    weights = [1] * n if equal else draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    return keys, weights, draw(st.integers(0, n - 1))


def removal_disruption(keys, weights, victim):
    before = build_table(list(zip(keys, weights, strict=True)))
    k2 = keys[:victim] + keys[victim + 1 :]
    w2 = weights[:victim] + weights[victim + 1 :]
    after = build_table(list(zip(k2, w2, strict=True)))
    moved = disruption(keys, before, k2, after)
    own = np.count_nonzero(before == victim) / M
    return moved, own


# Regression pools. With the paper's permutation, (offset + j * skip) % M, any two backends'
# permutations are affine images of each other, and for these key sets that structure made a
# removal move far more than the victim's share: 1/N + 1.58% for the equal pool (classic serial
# Maglev: + 1.53%) and + 1.66% for the weighted one. The scrambled visiting order gives + 0.14%
# and + 0.07%.
EQUAL_PATHOLOGICAL = (
    [
        "10.200.65.222",
        "10.0.141.110",
        "10.57.228.198",
        "10.57.194.245",
        "10.216.157.148",
        "10.189.187.74",
    ],
    [1] * 6,
    2,
)
WEIGHTED_PATHOLOGICAL = (
    ["10.174.50.11", "10.171.244.24", "10.24.218.90", "10.138.127.112", "10.66.181.101"],
    [478, 414, 278, 980, 904],
    4,
)


@MANY
@given(removal(equal=True))
@example(EQUAL_PATHOLOGICAL)
def test_removing_one_of_n_equal_backends_moves_at_most_1_over_n_plus_1_percent(case):
    keys, weights, victim = case
    moved, own = removal_disruption(keys, weights, victim)
    assert moved >= own  # its own entries must move: the check can see a change
    assert moved <= 1 / len(keys) + 0.01, (len(keys), moved)


@MANY
@given(removal(equal=False))
@example(WEIGHTED_PATHOLOGICAL)
def test_removing_one_weighted_backend_moves_at_most_its_share_plus_1_percent(case):
    # With unequal weights the floor is the removed backend's own share w/W, not 1/N (removing
    # a backend with half the weight must move half the table), so the 1% allowance is on that.
    keys, weights, victim = case
    moved, own = removal_disruption(keys, weights, victim)
    assert abs(own - weights[victim] / sum(weights)) <= 1 / M
    assert own <= moved <= own + 0.01, (len(keys), weights[victim] / sum(weights), moved)


def test_weight_change_moves_little():
    keys = [f"10.1.0.{i}" for i in range(20)]
    before = build_table([(k, 100) for k in keys])
    after = build_table([(k, 150 if k == keys[3] else 100) for k in keys])
    moved = disruption(keys, before, keys, after)
    gained = 150 / 2050 - 100 / 2000  # the least that must move: what backend 3 gains
    assert gained - 2 / M <= moved <= gained + 0.01


# --- determinism -----------------------------------------------------------------------------

DET_POOL = [(f"192.0.2.{i}", (i * 7919) % 1000 + 1) for i in range(37)]

_CHILD = """
import hashlib, json, sys
from xlb.dataplane.maglev import build_table
pool = [tuple(b) for b in json.loads(sys.argv[1])]
print(hashlib.sha256(build_table(pool).astype("<i4").tobytes()).hexdigest())
"""


def table_digest(table: np.ndarray) -> str:
    return hashlib.sha256(table.astype("<i4").tobytes()).hexdigest()


@pytest.mark.parametrize("hashseed", ["0", "4242"])
def test_same_table_in_another_process(hashseed):
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(DET_POOL)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == table_digest(build_table(DET_POOL))


# Every load balancer must agree on the table; pin it so that a change to the algorithm (or to
# a numpy behaviour it leans on) is a deliberate, visible event rather than a silent reshuffle.
GOLDEN_SMALL = [2, 2, 1, 1, 2, 2, 1, 1, 0, 2, 0, 2, 2]
GOLDEN_DET_POOL = "ea822080f8ea22a36271ae9f36aa861a7cfb4c78b09afd08f18d6f8bb066d0a7"


def test_golden_tables():
    small = build_table([("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.3", 3)], 13)
    assert small.tolist() == GOLDEN_SMALL
    assert table_digest(build_table(DET_POOL)) == GOLDEN_DET_POOL


@SOME
@given(pools(min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_table_depends_on_keys_not_list_order(pool, rnd):
    shuffled = pool[:]
    rnd.shuffle(shuffled)
    assert keyed(pool, build_table(pool, 1009)) == keyed(shuffled, build_table(shuffled, 1009))


# --- the batched fill equals the serial definition -------------------------------------------


def reference_table(pool, m):
    """Serial, pure-Python fill, written from the definition and sharing no code with it.

    Backend i walks slots (offset + sigma[j] * skip) % m for j = 0, 1, ...; position j is
    reached at virtual time clock[j] / target; events go in (time, digest) order, and a backend
    claims the slot if it is free and it still needs entries.
    """
    n = len(pool)
    digests = [hashlib.blake2b(k.encode(), digest_size=16).digest() for k, _ in pool]
    offset = [int.from_bytes(d[:8], "little") % m for d in digests]
    skip = [int.from_bytes(d[8:], "little") % (m - 1) + 1 for d in digests]
    total = sum(w for _, w in pool)
    quota = [divmod(m * w, total) for _, w in pool]
    target = [q for q, _ in quota]
    by_remainder = sorted(range(n), key=lambda i: (-quota[i][1], digests[i]))
    for i in by_remainder[: m - sum(target)]:
        target[i] += 1

    one = 1 << 40
    clock, acc = [], 0
    for j in range(m):
        clock.append(float(acc))
        acc += one // (m - 1 - j) if j < m - 1 else 0

    mask = (1 << 64) - 1

    def mix(x):
        x = (x + 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    sigma = sorted(range(m), key=mix)

    table = [NO_BACKEND] * m
    need = target[:]
    nxt = [0] * n
    events = [(0.0, digests[i], i) for i in range(n) if target[i]]
    heapq.heapify(events)
    while events:
        _, _, i = heapq.heappop(events)
        j = nxt[i]
        slot = (offset[i] + sigma[j] * skip[i]) % m
        nxt[i] = j + 1
        if table[slot] == NO_BACKEND:
            table[slot] = i
            need[i] -= 1
        if need[i]:
            heapq.heappush(events, (clock[j + 1] / target[i], digests[i], i))
    return table


@MANY
@given(pools(min_size=1, max_size=40), st.sampled_from(SMALL_PRIMES))
def test_batched_fill_equals_serial_reference(pool, m):
    if not any(w for _, w in pool):
        return
    assert build_table(pool, m).tolist() == reference_table(pool, m)


@pytest.mark.parametrize(
    "weights",
    [[1, 1, 5, 100, 100, 3000, 65535, 7, 0, 42], [(i * 37) % 100 + 1 for i in range(30)]],
)
def test_batched_fill_equals_serial_reference_full_ring(weights):
    pool = [(f"10.9.{i}.1", w) for i, w in enumerate(weights)]
    assert build_table(pool).tolist() == reference_table(pool, M)



@settings(deadline=None, max_examples=6, suppress_health_check=[HealthCheck.too_slow])
@given(pools(50, 1000, max_weight=100) | pools(50, 1000, max_weight=1))
def test_batched_fill_equals_serial_reference_large_pools(pool):
    # Large pools on the full ring: many rounds, most of them finding proposals from the free
    # slots' side (the fill's tail), with exact time ties at equal weights.
    if not any(w for _, w in pool):
        return
    assert build_table(pool).tolist() == reference_table(pool, M)


@st.composite
def fill_states(draw):
    """A mid-fill state: free slots, and each backend's pointer and horizon (limit)."""
    m = draw(st.sampled_from(SMALL_PRIMES[1:]))
    g = draw(st.integers(1, 12))
    rnd = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    free = rnd.random(m) < draw(st.floats(0.0, 1.0))
    ptr = rnd.integers(0, m + 1, g)
    lim = np.minimum(ptr + rnd.integers(0, m + 1, g), m)
    return free, ptr, lim, rnd.integers(0, m, g), rnd.integers(1, m, g)


@SOME
@given(fill_states())
def test_both_ways_of_finding_proposals_agree(state):
    # A round finds (backend, position, slot) proposals by walking positions, or from the free
    # slots when few are left; the choice is a cost estimate, so the answers must be identical.
    free, ptr, lim, offset, skip = state
    m = len(free)
    logs = maglev._log_tables(m)
    win = np.maximum(lim - ptr, 0)
    walked = maglev._proposals_by_position(
        np.concatenate([free, free]), logs, ptr, win, int(win.sum()), offset, logs.log[skip]
    )
    slots = np.flatnonzero(free)
    by_slot = maglev._proposals_by_slot(slots, logs, ptr, lim, offset, logs.log[skip])
    for a, b in zip(walked, by_slot, strict=True):
        assert a.tolist() == b.tolist()
    # and they are what the definition says: slot (offset + sigma[j] * skip) % m, free
    sigma = maglev._visit_order(m)
    grp, pos, slot = walked
    assert slot.tolist() == ((offset[grp] + sigma[pos].astype(np.int64) * skip[grp]) % m).tolist()
    assert free[slot].all()
    expect = sum(int(free[(offset[i] + sigma[ptr[i]:lim[i]].astype(np.int64) * skip[i]) % m].sum())
                 for i in range(len(ptr)))
    assert len(slot) == expect


@pytest.mark.parametrize("m", [2, 3, 13, 251, 65537])
def test_log_tables_multiply_mod_m(m):
    logs = maglev._log_tables(m)
    sigma = maglev._visit_order(m).astype(np.int64)
    js = np.arange(m)
    js = js[js != logs.zero_pos]
    for s in {1, m - 1, (m // 3) or 1, 12345 % m or 1}:
        got = logs.exp2[logs.log_visit[js] + logs.log[s]]
        assert got.tolist() == (sigma[js] * s % m).tolist()
    assert sigma[logs.zero_pos] == 0


# --- input validation ------------------------------------------------------------------------


@pytest.mark.parametrize("m", [0, 1, 4, 100, 65536, 65535, -7])
def test_non_prime_ring_is_rejected(m):
    with pytest.raises(ValueError, match="prime"):
        build_table([("10.0.0.1", 1)], m)


def test_oversized_ring_is_rejected():
    big = next(p for p in range(MAX_RING_SIZE + 1, MAX_RING_SIZE + 1000) if is_prime(p))
    with pytest.raises(ValueError, match="at most"):
        build_table([("10.0.0.1", 1)], big)


@pytest.mark.parametrize("weight", [-1, MAX_WEIGHT + 1, 10**9])
def test_out_of_range_weight_is_rejected(weight):
    with pytest.raises(ValueError, match="weight of backend '10.0.0.2'"):
        build_table([("10.0.0.1", 1), ("10.0.0.2", weight)])


@pytest.mark.parametrize("weight", [1.5, "3", None])
def test_non_integer_weight_is_rejected(weight):
    with pytest.raises(TypeError, match="must be an int"):
        build_table([("10.0.0.1", weight)])


def test_duplicate_keys_are_rejected():
    with pytest.raises(ValueError, match="duplicate backend key '10.0.0.1'"):
        build_table([("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.1", 2)])


def test_non_string_key_is_rejected():
    with pytest.raises(TypeError, match="key must be a str"):
        build_table([(167772161, 1)])  # type: ignore[list-item]


# --- helpers ---------------------------------------------------------------------------------


def test_is_prime_matches_a_sieve():
    limit = 5000
    sieve = [True] * limit
    sieve[0] = sieve[1] = False
    for p in range(2, int(limit**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = [False] * len(sieve[p * p :: p])
    assert [n for n in range(limit) if is_prime(n)] == [n for n in range(limit) if sieve[n]]
    assert all(is_prime(p) for p in (65537, 655373, 2**31 - 1, 2**61 - 1))
    # Carmichael numbers and strong pseudoprimes to small bases
    assert not any(is_prime(c) for c in (561, 41041, 825265, 3215031751, 65537 * 257))
    assert not is_prime(-5)


def test_disruption_and_shares_helpers():
    keys = ["a", "b", "c"]
    table = build_table([(k, 1) for k in keys], 251)
    assert disruption(keys, table, keys, table) == 0.0
    # Same owners under a different list order is no disruption.
    rev = keys[::-1]
    assert disruption(keys, table, rev, (2 - table).astype(np.int32)) == 0.0
    empty = np.full(251, NO_BACKEND, dtype=np.int32)
    assert disruption(keys, table, [], empty) == 1.0
    assert disruption([], empty, [], empty) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        disruption(keys, table, keys, table[:13])
    s = shares(table, 3)
    assert s.sum() == pytest.approx(1.0) and (s > 0.33).all()
    with pytest.raises(ValueError, match="outside"):
        shares(table, 2)
