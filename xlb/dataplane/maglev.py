"""Weighted Maglev lookup tables, built with numpy.

A Maglev dataplane picks a backend as ``table[flow_hash % len(table)]``, so the table decides both
how traffic is split (each backend's share of entries) and how much of it moves when the backend
set changes (entries whose owner differs between the old and new table break established flows).

As in Maglev (Eisenbud et al., NSDI 2016) every backend walks its own permutation of the slots,
derived from nothing but its key, and claims the slots it reaches first while they are still free.
Because a backend's preferences do not depend on who else is in the pool, removing one backend
mostly just hands its slots to others: about ``1/N`` of the table moves, plus a little.

Three departures from the paper:

* The permutation is ``(offset + sigma[j] * skip) % M`` with the paper's offset and skip and a
  fixed, key-independent scramble ``sigma`` of the positions (see ``_visit_order``): with the
  plain ``j`` some key sets make a removal move over 1.5% more than necessary.
* Weights are honoured exactly. Each backend gets a target entry count from the largest-remainder
  method, so its share is within one entry of ``M * w / W``, and it stops claiming once it has
  its target. Who reaches a slot first is decided by virtual time: position ``j`` of a backend
  with target ``T`` is reached at ``clock[j] / T`` with ``clock[j] ~ -ln(1 - j/M)`` (see
  ``_clock`` for why not ``j / T``). Conceptually the fill is serial: take events in time
  order, and a backend claims the slot at its position if the slot is free and it still needs
  entries.
* The fill is computed in batched rounds with the same result. Each round picks a horizon time;
  every backend still short gathers (vectorised, ragged) all its positions up to the horizon
  whose slots are free; each contested slot goes to the earliest time (exact ties: an order
  fixed by the keys' hashes). A backend reaching a slot does not depend on its earlier wins or
  losses, only on whether it has stopped, so the one correction needed is: a backend that won
  more than it needs would have stopped at its need-th win, so its later proposals are dropped
  and the round re-resolved until nobody is over. Every backend then moves past the horizon.
  About a dozen rounds of numpy work replace ``M`` Python iterations, and the table is
  bit-identical to the serial fill (the tests check this against a reference implementation).

Everything is derived from blake2b digests of the keys, never from Python's salted ``hash()``, so a
table is identical across processes, hosts and runs, and does not depend on the order of the list.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Sequence

import numpy as np

from xlb.api import protocol

__all__ = [
    "DEFAULT_RING_SIZE",
    "MAX_RING_SIZE",
    "MAX_WEIGHT",
    "NO_BACKEND",
    "build_table",
    "disruption",
    "is_prime",
    "shares",
    "targets",
]

DEFAULT_RING_SIZE = 65537
"""Prime table size; 65537 gives sub-0.01% share granularity with a 256 KiB int32 table."""

NO_BACKEND = -1
"""Table entry meaning "no backend": every weight is zero or the pool is empty."""

MAX_WEIGHT = protocol.MAX_WEIGHT
"""Weights are 16-bit."""

MAX_RING_SIZE = 1 << 24
"""Keeps the int64 index arithmetic and the fixed-point clock exact; 64 MiB of table is plenty."""

# Fixed-point scale of the virtual clock (see _clock).
_CLOCK_ONE = 1 << 40

# Deterministic Miller-Rabin witnesses: exact for every n < 3.3e24, i.e. any 64-bit ring size.
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime: the ring size must be, or some skips would not visit every slot."""
    n = operator.index(n)
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _digest(key: str) -> bytes:
    """Stable 128-bit digest of a backend key (same on every host, unlike ``hash()``)."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).digest()


@functools.lru_cache(maxsize=4)
def _clock(m: int) -> np.ndarray:
    """Virtual clock of each permutation position: ``clock[j] ~ -ln(1 - j/m)``, fixed point.

    Position j of a backend with target T is reached at time ``clock[j] / T``. A linear clock
    (``j / T``) would make a heavy backend run off the end of its permutation long before a light
    one, so who wins a slot would depend on the whole weight mix and removing a heavy backend
    would reshuffle far more than its own slots. With this clock the time at which a backend
    reaches a given slot is (nearly) exponential with rate T, so every backend claims in
    proportion to its target throughout the fill, and scaling all targets together (what a
    removal does) keeps everyone's relative order. It is the partial harmonic sum
    ``H(m - 1) - H(m - 1 - j)`` in integers, so it is the same on every machine (``np.log`` may
    differ by an ulp between CPUs, and the tables of all load balancers must agree).
    """
    step = _CLOCK_ONE // np.arange(m, 0, -1, dtype=np.int64)
    clock = (np.cumsum(step) - step[0]).astype(np.float64)  # exact: < 2**45
    clock.flags.writeable = False
    return clock


@functools.lru_cache(maxsize=4)
def _visit_order(m: int) -> np.ndarray:
    """Fixed scramble of permutation positions, shared by all backends: ``sigma[j]``.

    A backend's j-th preference is slot ``(offset + sigma[j] * skip) % m``. With the identity
    for sigma that is the paper's permutation, but then any two backends' permutations are
    affine images of each other (position in one = a * position in the other + b mod m), and
    for some key pairs that lattice structure decides who is left with the last free slots, so
    removing a backend reshuffles well beyond its own share. Measured on 1,500 random pools of
    2..50 backends (M = 65537): 2 removals exceeded the share + 1% (worst +1.66%); classic
    serial Maglev on the worst equal-weight pool: +1.53%, and up to +2.2% for other removals
    from it. Visiting positions in a pseudo-random order breaks the structure (worst of the same
    1,500: +0.46%) while each backend's order still depends on its key alone.

    The scramble sorts a splitmix64 bijection of 0..m-1: integer-only, so identical everywhere.
    """
    x = np.arange(m, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    order = np.argsort(x, kind="stable").astype(np.int32)  # m <= MAX_RING_SIZE < 2**31
    order.flags.writeable = False
    return order


def _validate(
    backends: Sequence[tuple[str, int]], ring_size: int
) -> tuple[int, list[str], list[int]]:
    """Check inputs up front so a bad pool fails loudly instead of yielding a skewed table."""
    m = operator.index(ring_size)
    if m > MAX_RING_SIZE:
        raise ValueError(f"ring_size must be at most {MAX_RING_SIZE}, got {m}")
    if not is_prime(m):
        raise ValueError(f"ring_size must be prime (Maglev permutations need it), got {m}")
    keys: list[str] = []
    weights: list[int] = []
    seen: set[str] = set()
    for key, weight in backends:
        if not isinstance(key, str):
            raise TypeError(f"backend key must be a str, got {type(key).__name__}: {key!r}")
        if key in seen:
            raise ValueError(f"duplicate backend key {key!r}: keys must identify backends uniquely")
        seen.add(key)
        try:
            w = operator.index(weight)
        except TypeError:
            raise TypeError(f"weight of backend {key!r} must be an int, got {weight!r}") from None
        if not 0 <= w <= MAX_WEIGHT:
            raise ValueError(f"weight of backend {key!r} must be in 0..{MAX_WEIGHT}, got {w}")
        keys.append(key)
        weights.append(w)
    return m, keys, weights


def _tiebreak_rank(digests: Sequence[bytes]) -> np.ndarray:
    """Rank of each backend in digest order: a tie-break fixed by the keys, not the list order."""
    order = sorted(range(len(digests)), key=digests.__getitem__)
    rank = np.empty(len(digests), dtype=np.int64)
    rank[order] = np.arange(len(digests), dtype=np.int64)
    return rank


def _targets(weights: np.ndarray, ring_size: int, rank: np.ndarray) -> np.ndarray:
    """Largest-remainder apportionment of ``ring_size`` entries; remainder ties go by ``rank``."""
    total = int(weights.sum())
    if total == 0:
        return np.zeros(len(weights), dtype=np.int64)
    base, rem = np.divmod(ring_size * weights, total)  # exact in int64: M * w <= 2**40
    left = ring_size - int(base.sum())
    base[np.lexsort((rank, -rem))[:left]] += 1
    return base


def targets(backends: Sequence[tuple[str, int]], ring_size: int = DEFAULT_RING_SIZE) -> np.ndarray:
    """Exact entry count each backend will get, so callers and tests can check the split."""
    m, keys, weights = _validate(backends, ring_size)
    rank = _tiebreak_rank([_digest(k) for k in keys])
    return _targets(np.array(weights, dtype=np.int64), m, rank)


def build_table(
    backends: Sequence[tuple[str, int]], ring_size: int = DEFAULT_RING_SIZE
) -> np.ndarray:
    """Build the lookup table: ``int32[ring_size]`` of indices into ``backends``.

    ``backends`` holds ``(key, weight)`` pairs; the key (e.g. the backend's address) alone fixes
    the backend's slot preferences, which is what keeps tables stable as the pool changes.
    Returns ``NO_BACKEND`` everywhere when the pool is empty or every weight is 0.
    """
    m, keys, weights = _validate(backends, ring_size)
    n = len(keys)
    table = np.full(m, NO_BACKEND, dtype=np.int32)
    if not any(weights):
        return table

    digests = [_digest(k) for k in keys]
    rank = _tiebreak_rank(digests)
    target = _targets(np.array(weights, dtype=np.int64), m, rank)
    offset = np.array([int.from_bytes(d[:8], "little") % m for d in digests], dtype=np.int64)
    skip = np.array(
        [int.from_bytes(d[8:], "little") % (m - 1) + 1 for d in digests], dtype=np.int64
    )
    target_f = target.astype(np.float64)
    clock = _clock(m)
    visit = _visit_order(m)

    free = np.ones(m, dtype=bool)
    n_free = m
    need = target.copy()
    ptr = np.zeros(n, dtype=np.int64)  # every position before ptr is taken, or need is 0
    best_time = np.empty(m, dtype=np.float64)
    best_rank = np.empty(m, dtype=np.int64)

    while n_free:
        act = np.flatnonzero(need)
        a_need = need[act]
        a_ptr = ptr[act]
        a_tgt = target_f[act]
        a_skip = skip[act]

        # Horizon: the median of the times at which each backend expects to have seen its
        # remaining need in free slots (free density ahead of its pointer is n_free / ahead).
        # Any horizon gives the serial result; the median trades rounds against wasted work.
        ahead = m - a_ptr
        est = np.minimum(a_ptr + np.ceil(a_need * (ahead / n_free)).astype(np.int64) - 1, m - 1)
        half = len(act) // 2
        tau = np.partition(clock[est] / a_tgt, half)[half]
        # lim = how many positions have clock[j] / target <= tau (searchsorted on the product
        # can be one off through rounding; fix that with the exact comparison).
        lim = np.searchsorted(clock, tau * a_tgt, side="right")
        lim -= (lim > 0) & (clock[np.maximum(lim - 1, 0)] / a_tgt > tau)
        lim += (lim < m) & (clock[np.minimum(lim, m - 1)] / a_tgt <= tau)
        win = np.maximum(lim - a_ptr, 0)

        # Ragged gather of the slots at positions a_ptr[g] .. lim[g] - 1 for every active g.
        # Positions fit int32 (m <= 2**24), which halves the memory traffic of this, the
        # biggest step; in-place arithmetic avoids page-faulting fresh temporaries.
        ends = np.cumsum(win)
        starts = ends - win
        total = int(ends[-1])
        idx_t = np.int32 if total < 2**31 else np.int64
        pos = np.repeat((a_ptr - starts).astype(idx_t), win)
        pos += np.arange(total, dtype=idx_t)
        slot = visit[pos].astype(np.int64)
        slot *= np.repeat(a_skip, win)
        slot += np.repeat(offset[act], win)
        quot = slot // m  # floor-divide by a scalar and subtract: much cheaper than % m
        quot *= m
        slot -= quot
        prop = np.flatnonzero(free[slot])
        p_slot = slot[prop]
        p_count = np.diff(np.searchsorted(prop, ends), prepend=0)
        p_grp = np.repeat(np.arange(len(act)), p_count)
        p_time = clock[pos[prop]] / a_tgt[p_grp]
        p_rank = rank[act][p_grp]

        # Earliest proposal wins each slot (exact ties: lowest digest rank). A backend that wins
        # more than it needs would have stopped at its need-th win, so its later proposals are
        # void; re-resolve until nobody is over. Voiding only ever grows, so this settles.
        live = np.arange(len(prop))
        while True:
            s, t = p_slot[live], p_time[live]
            best_time[s] = np.inf
            np.minimum.at(best_time, s, t)
            cand = live[t == best_time[s]]
            s, r = p_slot[cand], p_rank[cand]
            best_rank[s] = n
            np.minimum.at(best_rank, s, r)
            won = cand[r == best_rank[s]]
            w_grp = p_grp[won]
            n_won = np.bincount(w_grp, minlength=len(act))
            over = n_won > a_need
            if not over.any():
                break
            # Time of each over-subscribed backend's need-th win (won is in (group, time)
            # order, so that is the win at offset need - 1 within the group).
            o_won = won[over[w_grp]]
            o_first = np.cumsum(n_won * over) - n_won
            stop = o_won[o_first[over] + a_need[over] - 1]
            cutoff = np.full(len(act), np.inf)
            cutoff[p_grp[stop]] = p_time[stop]
            kept = live[p_time[live] <= cutoff[p_grp[live]]]
            if len(kept) == len(live):  # cannot happen: each pass voids the overshoot
                raise RuntimeError("maglev fill failed to settle (bug)")
            live = kept

        if not len(won) and (lim <= a_ptr).all():  # cannot happen: the median moves on
            raise RuntimeError("maglev fill made no progress (bug)")
        w_slot = p_slot[won]
        w_back = act[w_grp]
        table[w_slot] = w_back
        free[w_slot] = False
        n_free -= len(won)
        need -= np.bincount(w_back, minlength=n)
        ptr[act] = np.maximum(lim, a_ptr)
    return table


def shares(table: np.ndarray, n: int) -> np.ndarray:
    """Fraction of ``table`` held by each of ``n`` backends: the traffic split it implies."""
    table = np.asarray(table)
    valid = table[table != NO_BACKEND]
    if len(valid) and (valid.min() < 0 or valid.max() >= n):
        raise ValueError(f"table holds indices outside 0..{n - 1}")
    return np.bincount(valid, minlength=n).astype(np.float64) / max(len(table), 1)


def _owner_ids(keys: Sequence[str], table: np.ndarray, ids: dict[str, int]) -> np.ndarray:
    """Map table entries to key ids (NO_BACKEND -> -1) so tables over different lists compare."""
    lut = np.array([ids[k] for k in keys] + [-1], dtype=np.int64)
    table = np.asarray(table)
    if len(table) and (table.min() < NO_BACKEND or table.max() >= len(keys)):
        raise ValueError(f"table holds indices outside 0..{len(keys) - 1}")
    return lut[table]  # NO_BACKEND == -1 picks the trailing -1


def disruption(
    keys_a: Sequence[str], table_a: np.ndarray, keys_b: Sequence[str], table_b: np.ndarray
) -> float:
    """Fraction of entries whose backend key differs: the share of flows a change would move."""
    if len(table_a) != len(table_b):
        raise ValueError(f"tables differ in size: {len(table_a)} vs {len(table_b)}")
    if len(table_a) == 0:
        return 0.0
    ids = {k: i for i, k in enumerate(dict.fromkeys([*keys_a, *keys_b]))}
    owners_a = _owner_ids(keys_a, table_a, ids)
    owners_b = _owner_ids(keys_b, table_b, ids)
    return float(np.count_nonzero(owners_a != owners_b)) / len(table_a)
