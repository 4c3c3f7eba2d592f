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
  A round walks the positions (multiplying mod M as adding discrete logarithms, see
  ``_LogTables``) while many slots are free; once few are, it asks instead at which position
  each backend would reach each free slot, as walks through a nearly full table mostly pass
  taken slots.

Everything is derived from blake2b digests of the keys, never from Python's salted ``hash()``, so a
table is identical across processes, hosts and runs, and does not depend on the order of the list.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
from collections.abc import Sequence
from typing import NamedTuple

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


@functools.lru_cache(maxsize=4)
def _inverse_visit_order(m: int) -> np.ndarray:
    """``sigma``'s inverse: the position of each value in the visiting order."""
    inverse = np.empty(m, dtype=np.int64)
    inverse[_visit_order(m)] = np.arange(m, dtype=np.int64)
    inverse.flags.writeable = False
    return inverse


class _LogTables(NamedTuple):
    """``sigma[j] * skip mod m`` as ``exp2[log_visit[j] + log(skip)]``: two lookups and an add.

    With a primitive root r of the prime m, every nonzero value is ``r ** e``, so multiplying
    mod m is adding exponents; ``exp2`` holds two periods of ``r ** e`` so the sum needs no
    reduction. This takes the multiply and the division out of the fill's inner loop.
    ``sigma[j] == 0`` (at ``zero_pos``) has no logarithm: its slot is the offset itself.
    """

    log: np.ndarray  # log[v] for v in 1..m-1 (log[0] unused)
    log_visit: np.ndarray  # log[sigma[j]] (0 at zero_pos)
    exp2: np.ndarray  # r ** (e mod (m - 1)) for e in 0 .. 2(m - 1) - 1
    zero_pos: int


def _primitive_root(m: int) -> int:
    """Smallest generator of the multiplicative group mod the prime ``m``."""
    order = m - 1
    factors, rest, f = [], order, 2
    while f * f <= rest:
        if rest % f == 0:
            factors.append(f)
            while rest % f == 0:
                rest //= f
        f += 1
    if rest > 1:
        factors.append(rest)
    return next(g for g in range(1, m) if all(pow(g, order // q, m) != 1 for q in factors))


@functools.lru_cache(maxsize=4)
def _log_tables(m: int) -> _LogTables:
    """The tables for ring size ``m``, cached like the clock and the visiting order."""
    order = m - 1
    r = _primitive_root(m)
    block = math.isqrt(order) + 1  # r ** (block * k + i), from two short power lists
    low = np.array([pow(r, i, m) for i in range(block)], dtype=np.int64)
    high = np.array([pow(r, block * k, m) for k in range(-(-order // block))], dtype=np.int64)
    exp = (high[:, None] * low[None, :] % m).ravel()[:order]
    log = np.zeros(m, dtype=np.int64)
    log[exp] = np.arange(order, dtype=np.int64)
    zero_pos = int(_inverse_visit_order(m)[0])
    tables = _LogTables(log, log.take(_visit_order(m)), np.concatenate([exp, exp]), zero_pos)
    for a in tables[:3]:
        a.flags.writeable = False
    return tables


def _proposals_by_position(
    free2: np.ndarray,
    logs: _LogTables,
    ptr: np.ndarray,
    win: np.ndarray,
    walked: int,
    offset: np.ndarray,
    log_skip: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Walk positions ``ptr[g] .. ptr[g] + win[g] - 1`` of every backend g; keep the free slots.

    Returns (group, position, slot) of each proposal, by group then position. ``free2`` is the
    free mask twice over, so ``offset + sigma * skip`` (< 2m) needs no reduction either. Index
    arrays are intp and gathers use ``take``, so no gather converts its indices first.
    """
    m = len(free2) // 2
    ends = np.cumsum(win)
    starts = ends - win
    pos = np.repeat(ptr - starts, win)
    pos += np.arange(walked)
    slot = logs.log_visit.take(pos)
    slot += np.repeat(log_skip, win)
    slot = logs.exp2.take(slot)
    slot += np.repeat(offset, win)
    # The one position whose sigma is 0 lands on the offset itself.
    zero = (ptr <= logs.zero_pos) & (logs.zero_pos < ptr + win)
    slot[(starts + logs.zero_pos - ptr)[zero]] = offset[zero]
    prop = np.flatnonzero(free2.take(slot))
    grp = np.repeat(np.arange(len(win)), np.diff(np.searchsorted(prop, ends), prepend=0))
    p_slot = slot.take(prop)
    p_slot -= m * (p_slot >= m)
    return grp, pos.take(prop), p_slot


def _proposals_by_slot(
    slots: np.ndarray,
    logs: _LogTables,
    ptr: np.ndarray,
    lim: np.ndarray,
    offset: np.ndarray,
    log_skip: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same proposals as ``_proposals_by_position``, found from the free ``slots``' side.

    Backend g reaches slot s at the position j with ``sigma[j] = (s - offset) / skip mod m``
    (dividing: subtracting logarithms), a proposal if ``ptr[g] <= j < lim[g]``. Costs groups x
    free slots instead of the positions walked: far less once the table is nearly full and the
    walks mostly pass taken slots.
    """
    m = len(logs.log)
    diff = slots[None, :] - offset[:, None]
    diff += m * (diff < 0)
    quot = logs.log.take(diff)
    quot += ((m - 1 - log_skip) % (m - 1))[:, None]
    quot = logs.exp2.take(quot)
    quot[diff == 0] = 0  # s == offset: sigma[j] == 0, which has no logarithm
    pos = _inverse_visit_order(m).take(quot)
    grp, col = np.nonzero((pos < lim[:, None]) & (pos >= ptr[:, None]))
    p_pos = pos[grp, col]
    order = np.argsort(grp * m + p_pos)  # by group, then position
    return grp.take(order), p_pos.take(order), slots.take(col.take(order))


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
    halves = np.frombuffer(b"".join(digests), dtype="<u8").reshape(n, 2)
    offset = (halves[:, 0] % np.uint64(m)).astype(np.int64)
    skip = (halves[:, 1] % np.uint64(m - 1)).astype(np.int64) + 1
    target_f = target.astype(np.float64)
    clock = _clock(m)
    logs = _log_tables(m)
    log_skip = logs.log[skip]

    free2 = np.ones(2 * m, dtype=bool)  # free mask, twice (see _proposals_by_position)
    free = free2[:m]
    n_free = m
    need = target.copy()
    ptr = np.zeros(n, dtype=np.int64)  # every position before ptr is taken, or need is 0
    best_time = np.empty(m, dtype=np.float64)
    best_rank = np.empty(m, dtype=np.int64)
    owner = np.empty(m, dtype=np.int64)
    slots: np.ndarray | None = None  # the free slots, once the rounds look from their side

    while n_free:
        act = np.flatnonzero(need)
        a_need = need[act]
        a_ptr = ptr[act]
        a_tgt = target_f[act]

        # Horizon: the median of the times at which each backend expects to have seen its
        # remaining need in free slots (free density ahead of its pointer is n_free / ahead).
        # Any horizon gives the serial result; the median trades rounds against wasted work.
        ahead = m - a_ptr
        est = np.minimum(a_ptr + np.ceil(a_need * (ahead / n_free)).astype(np.int64) - 1, m - 1)
        half = len(act) // 2
        tau = np.partition(clock.take(est) / a_tgt, half)[half]
        # lim = how many positions have clock[j] / target <= tau (searchsorted on the product
        # can be one off through rounding; fix that with the exact comparison).
        lim = np.searchsorted(clock, tau * a_tgt, side="right")
        lim -= (lim > 0) & (clock.take(np.maximum(lim - 1, 0)) / a_tgt > tau)
        lim += (lim < m) & (clock.take(np.minimum(lim, m - 1)) / a_tgt <= tau)
        win = np.maximum(lim - a_ptr, 0)

        # Proposals: every (backend, position) up to the horizon whose slot is free, grouped by
        # backend in position order. Early on, walk the positions; once few slots are free,
        # it is cheaper to ask, for every free slot, at which position each backend reaches it.
        walked = int(win.sum())
        if len(act) * n_free < walked:
            # the free slots: found once, then only those still free (an m-wide scan per
            # round would cost more than the rest of a late round)
            slots = np.flatnonzero(free) if slots is None else slots[free.take(slots)]
            p_grp, p_pos, p_slot = _proposals_by_slot(
                slots, logs, a_ptr, lim, offset[act], log_skip[act]
            )
        else:
            p_grp, p_pos, p_slot = _proposals_by_position(
                free2, logs, a_ptr, win, walked, offset[act], log_skip[act]
            )
        p_time = clock.take(p_pos) / a_tgt.take(p_grp)
        p_rank = rank[act].take(p_grp)

        # Earliest proposal wins each slot (exact ties: lowest digest rank). A backend that wins
        # more than it needs would have stopped at its need-th win, so its later proposals are
        # void; re-resolve until nobody is over. Voiding only ever grows, so this settles.
        live = np.arange(len(p_slot))
        while True:
            s, t = p_slot.take(live), p_time.take(live)
            best_time[s] = np.inf
            np.minimum.at(best_time, s, t)
            cand = live[t == best_time.take(s)]
            s = p_slot.take(cand)
            owner[s] = cand  # one candidate per slot unless times tie exactly (rare)
            won = cand[owner.take(s) == cand]
            if len(won) < len(cand):
                r = p_rank.take(cand)
                best_rank[s] = n
                np.minimum.at(best_rank, s, r)
                won = cand[r == best_rank.take(s)]
            w_grp = p_grp.take(won)
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
            kept = live[p_time.take(live) <= cutoff.take(p_grp.take(live))]
            if len(kept) == len(live):  # cannot happen: each pass voids the overshoot
                raise RuntimeError("maglev fill failed to settle (bug)")
            live = kept

        if not len(won) and (lim <= a_ptr).all():  # cannot happen: the median moves on
            raise RuntimeError("maglev fill made no progress (bug)")
        w_slot = p_slot.take(won)
        w_back = act[w_grp]
        table[w_slot] = w_back
        free[w_slot] = False
        free2[w_slot + m] = False
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
