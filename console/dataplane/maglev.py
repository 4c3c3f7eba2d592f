"""Weighted Maglev lookup tables, built with numpy.

The dataplane picks a backend as ``table[flow_hash % len(table)]``, so the table decides both how
traffic is split (each backend's share of entries) and how much of it moves when the backend set
changes (entries whose owner differs between the old and new table break established flows).

As in Maglev (Eisenbud et al., NSDI 2016) every backend walks its own permutation of the slots,
derived from nothing but its key, and claims the slots it reaches first while they are still free.
Because a backend's preferences do not depend on who else is in the pool, removing one backend
mostly just hands its slots to others: about ``1/N`` of the table moves, plus a little.

Two departures from the paper:

* Weights are honoured exactly. Each backend gets a target entry count from the largest-remainder
  method, so its share is within one entry of ``M * w / W``, and it stops claiming once it has
  its target. Who reaches a slot first is decided by "virtual time" ``j / target``: a backend
  with twice the target walks its permutation twice as fast.
* The fill is batched instead of serial. In each round every backend that still needs ``k``
  entries proposes the next ``k`` free slots on its permutation; a slot proposed by several goes
  to the earliest virtual time (exact ties go to a fixed order derived from the keys' hashes);
  then every backend skips past what it examined. Positions behind a backend's pointer are all
  taken, so nobody ever misses a free slot, and each round fills roughly ``1 - 1/e`` of what is
  left: about ``ln M`` rounds of vectorised work instead of ``M`` Python iterations.

Everything is derived from blake2b digests of the keys, never from Python's salted ``hash()``, so a
table is identical across processes, hosts and runs, and does not depend on the order of the list.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DEFAULT_RING_SIZE",
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

MAX_WEIGHT = 65535
"""Weights are u16 on the wire (control plane and BPF maps)."""

# Window headroom: a backend needing k free slots, with a fraction f of the slots ahead of its
# pointer free, examines k / f * _WINDOW_FACTOR + _WINDOW_SLACK positions per round. Too small
# and it comes up short (another round); too large and it gathers positions it never uses.
_WINDOW_FACTOR = 1.1
_WINDOW_SLACK = 4

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


def _validate(backends: Sequence[tuple[str, int]], ring_size: int) -> tuple[list[str], list[int]]:
    """Check inputs up front so a bad pool fails loudly instead of yielding a skewed table."""
    if not is_prime(ring_size):
        raise ValueError(f"ring_size must be prime (Maglev permutations need it), got {ring_size}")
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
    return keys, weights


def _tiebreak_rank(digests: Sequence[bytes]) -> np.ndarray:
    """Rank of each backend in digest order: a tie-break that ignores list order and names."""
    order = sorted(range(len(digests)), key=digests.__getitem__)
    rank = np.empty(len(digests), dtype=np.int64)
    rank[order] = np.arange(len(digests), dtype=np.int64)
    return rank


def _targets(weights: np.ndarray, ring_size: int, rank: np.ndarray) -> np.ndarray:
    """Largest-remainder apportionment of ``ring_size`` entries; remainder ties go by ``rank``."""
    total = int(weights.sum())
    if total == 0:
        return np.zeros(len(weights), dtype=np.int64)
    # Python ints: ring_size * weight can exceed int64 only for absurd rings, but be exact anyway.
    quota = [divmod(ring_size * int(w), total) for w in weights]
    base = np.array([q for q, _ in quota], dtype=np.int64)
    rem = np.array([r for _, r in quota], dtype=np.int64)
    left = ring_size - int(base.sum())
    base[np.lexsort((rank, -rem))[:left]] += 1
    return base


def targets(backends: Sequence[tuple[str, int]], ring_size: int = DEFAULT_RING_SIZE) -> np.ndarray:
    """Exact entry count each backend will get, so callers and tests can check the split."""
    keys, weights = _validate(backends, ring_size)
    rank = _tiebreak_rank([_digest(k) for k in keys])
    return _targets(np.array(weights, dtype=np.int64), ring_size, rank)


def build_table(
    backends: Sequence[tuple[str, int]], ring_size: int = DEFAULT_RING_SIZE
) -> np.ndarray:
    """Build the lookup table: ``int32[ring_size]`` of indices into ``backends``.

    ``backends`` holds ``(key, weight)`` pairs; the key (e.g. the backend's address) alone fixes
    the backend's slot preferences, which is what keeps tables stable as the pool changes.
    Returns ``NO_BACKEND`` everywhere when the pool is empty or every weight is 0.
    """
    keys, weights = _validate(backends, ring_size)
    m = ring_size
    n = len(keys)
    table = np.full(m, NO_BACKEND, dtype=np.int32)
    if n == 0 or not any(weights):
        return table

    digests = [_digest(k) for k in keys]
    rank = _tiebreak_rank(digests)
    target = _targets(np.array(weights, dtype=np.int64), m, rank)
    h1 = [int.from_bytes(d[:8], "little") for d in digests]
    h2 = [int.from_bytes(d[8:], "little") for d in digests]
    offset = np.array([h % m for h in h1], dtype=np.int64)
    skip = np.array([h % (m - 1) + 1 if m > 1 else 1 for h in h2], dtype=np.int64)
    # Virtual time of position j is j / target: correctly rounded, so equal fractions compare
    # equal, and (for M below ~2**17) distinct ones keep their order. It is deterministic anyway.
    target_f = target.astype(np.float64)
    clock = (np.cumsum((1 << 40) // np.arange(m, 0, -1, dtype=np.int64)) - ((1 << 40) // m)).astype(np.float64)

    free = np.ones(m, dtype=bool)
    n_free = m
    need = target.copy()
    ptr = np.zeros(n, dtype=np.int64)  # every permutation position before ptr is taken
    best_time = np.empty(m, dtype=np.float64)
    best_rank = np.empty(m, dtype=np.int64)

    while n_free:
        act = np.flatnonzero(need)
        a_need = need[act]
        a_ptr = ptr[act]
        ahead = m - a_ptr  # positions not yet examined; they hold all n_free free slots
        # Window expected to hold a_need free slots, with headroom, capped at the end.
        win = np.ceil(a_need * (ahead * (_WINDOW_FACTOR / n_free))).astype(np.int64)
        win = np.minimum(win + _WINDOW_SLACK, ahead)

        # Ragged gather of positions a_ptr[g] .. a_ptr[g] + win[g] - 1 for every active g.
        ends = np.cumsum(win)
        total = int(ends[-1])
        grp = np.repeat(np.arange(len(act), dtype=np.int64), win)
        pos = np.arange(total, dtype=np.int64) + np.repeat(a_ptr - (ends - win), win)
        raw = offset[act][grp] + pos * skip[act][grp]
        slot = raw - (raw // m) * m  # == raw % m; floor-divide by a scalar is much cheaper

        # Keep each backend's first a_need free slots; fewer if its window came up short.
        is_free = free[slot]
        seen_free = np.cumsum(is_free)
        before = np.concatenate(([0], seen_free[ends[:-1] - 1]))
        nth = seen_free - before[grp]  # 1-based rank among this window's free slots
        keep = np.flatnonzero(is_free & (nth <= a_need[grp]))
        k_grp = grp[keep]
        k_pos = pos[keep]
        k_slot = slot[keep]

        # Advance pointers: past the last proposal if the window had enough, else past it all.
        # Lost proposals were taken by someone else this round, so skipping them is safe.
        found = seen_free[ends - 1] - before
        new_ptr = a_ptr + win
        if len(keep):
            last = np.flatnonzero(np.r_[k_grp[1:] != k_grp[:-1], True])
            short = found[k_grp[last]] >= a_need[k_grp[last]]
            new_ptr[k_grp[last][short]] = k_pos[last][short] + 1
        ptr[act] = new_ptr
        if not len(keep):
            continue

        # Conflicts: earliest virtual time wins; exact ties go to the lowest digest rank.
        k_back = act[k_grp]
        k_time = clock[k_pos] / target_f[k_back]
        best_time[k_slot] = np.inf
        np.minimum.at(best_time, k_slot, k_time)
        cand = np.flatnonzero(k_time == best_time[k_slot])
        c_slot = k_slot[cand]
        c_rank = rank[k_back[cand]]
        best_rank[c_slot] = n
        np.minimum.at(best_rank, c_slot, c_rank)
        won = cand[c_rank == best_rank[c_slot]]

        w_slot = k_slot[won]
        w_back = k_back[won]
        table[w_slot] = w_back
        free[w_slot] = False
        n_free -= len(won)
        need -= np.bincount(w_back, minlength=n)
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
