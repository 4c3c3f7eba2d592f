"""The VIP index (struct xlb_vip_slot in bpf/xlb_shared.h): every key of `vips` in a small
array, one key per slot, so the data plane finds a packet's VIP with one array read and a
key compare instead of a hash lookup.

This module lays out one bank: it picks the first salt under which every key gets its own
slot (vip_index_slot() in bpf/xlb.c computes the same slot) and returns the bank's rows.
The manager writes them into the idle bank and then points ctl.vip_index at it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import numpy as np

from xlb.dataplane import structs as S

SLOTS = S.XLB_VIP_INDEX_SLOTS
MAX_KEYS = S.XLB_VIP_INDEX_MAX_KEYS
SALT_MASK = 0x7FFF  # ctl.vip_index = bank << 15 | salt; salt 0 is "no index"
BANK_SHIFT = 15
ROW = ctypes.sizeof(S.VipSlot)
_CHUNK = 4096  # salts tried per numpy pass


def key_words(keys: Sequence[S.VipKey]) -> np.ndarray:
    """The five 32-bit words of each key, as the program reads them (native order)."""
    raw = b"".join(bytes(k) for k in keys)
    return np.frombuffer(raw, dtype=np.uint32).reshape(len(keys), 5)


def slots(keys: Sequence[S.VipKey], salts: np.ndarray) -> np.ndarray:
    """(len(salts), len(keys)) slot of each key under each salt: vip_index_slot()."""
    x = np.bitwise_xor.reduce(key_words(keys), axis=1)
    s = (np.asarray(salts, dtype=np.uint32) * np.uint32(0x85EBCA6B))[:, None]
    h = (x[None, :] ^ s) * np.uint32(0x9E3779B1)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    return (h >> np.uint32(24)).astype(np.int64)


def pick_salt(keys: Sequence[S.VipKey]) -> int:
    """The first salt (1..0x7FFF) that gives every key its own slot; 0 if none does or
    there are more than MAX_KEYS keys (the data plane then looks up `vips`)."""
    if not keys or len(keys) > MAX_KEYS:
        return 0
    for start in range(1, SALT_MASK + 1, _CHUNK):
        salts = np.arange(start, min(start + _CHUNK, SALT_MASK + 1), dtype=np.uint32)
        s = np.sort(slots(keys, salts), axis=1)
        ok = np.flatnonzero((np.diff(s, axis=1) != 0).all(axis=1))
        if len(ok):
            return int(salts[ok[0]])
    return 0


def bank_rows(entries: Sequence[tuple[S.VipKey, S.VipMeta]], salt: int) -> np.ndarray:
    """One bank: (SLOTS, ROW) bytes, each key and its entry at its slot, the rest zero."""
    rows = np.zeros((SLOTS, ROW), dtype=np.uint8)
    if entries:
        where = slots([k for k, _ in entries], np.array([salt]))[0]
        for (key, meta), i in zip(entries, where, strict=True):
            rows[i] = np.frombuffer(bytes(S.VipSlot(key=key, meta=meta)), dtype=np.uint8)
    return rows


def bank(rows: np.ndarray, b: int) -> np.ndarray:
    """Bank b's rows out of the whole map's rows (PinnedMap.read_rows())."""
    return rows[b * SLOTS:(b + 1) * SLOTS]


def descriptor(bank: int, salt: int) -> int:
    """ctl.vip_index for `bank` laid out with `salt` (0: no index)."""
    return (bank << BANK_SHIFT) | salt if salt else 0


def bank_of(desc: int) -> int:
    return (desc >> BANK_SHIFT) & 1
