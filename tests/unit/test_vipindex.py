"""The VIP index's layout (xlb/dataplane/vipindex.py): every key its own slot, or no index.
That the program reads the same slots is shown by the packet tests (tests/dataplane)."""

from __future__ import annotations

import ipaddress
import random

import numpy as np

from xlb.dataplane import structs as S
from xlb.dataplane import vipindex


def _key(addr: str, port: int, proto: int = 6) -> S.VipKey:
    a = ipaddress.ip_address(addr)
    return S.VipKey(addr=S.pack_addr(a), port=S.net_port(port), proto=proto,
                    family=S.family_of(a))


def _keys(n: int, seed: int = 1) -> list[S.VipKey]:
    rnd = random.Random(seed)
    out: dict[bytes, S.VipKey] = {}
    while len(out) < n:
        if rnd.random() < 0.5:
            addr = str(ipaddress.IPv4Address(rnd.getrandbits(32)))
        else:
            addr = str(ipaddress.IPv6Address(rnd.getrandbits(128)))
        k = _key(addr, rnd.choice([0, 53, 80, 443, rnd.randrange(1, 65536)]), rnd.choice([6, 17]))
        out[bytes(k)] = k
    return list(out.values())


def test_every_key_gets_its_own_slot_up_to_the_limit() -> None:
    for n in (1, 2, 16, 40, vipindex.MAX_KEYS):
        keys = _keys(n, seed=n)
        salt = vipindex.pick_salt(keys)
        assert 0 < salt <= vipindex.SALT_MASK, n
        where = vipindex.slots(keys, np.array([salt]))[0]
        assert len(set(where.tolist())) == n
        assert all(0 <= s < vipindex.SLOTS for s in where)


def test_a_port_vip_and_its_addresss_any_port_vip_are_apart() -> None:
    keys = [_key("10.100.0.10", 80), _key("10.100.0.10", 0), _key("10.100.0.10", 80, 17)]
    salt = vipindex.pick_salt(keys)
    assert len(set(vipindex.slots(keys, np.array([salt]))[0].tolist())) == 3


def test_too_many_keys_or_none_means_no_index() -> None:
    assert vipindex.pick_salt(_keys(vipindex.MAX_KEYS + 1)) == 0
    assert vipindex.pick_salt([]) == 0
    assert vipindex.descriptor(1, 0) == 0


def test_a_bank_holds_each_key_and_its_entry_at_its_slot_and_nothing_else() -> None:
    keys = _keys(10)
    entries = [(k, S.VipMeta(vip_id=i, ring_slot=i + 1, flags=i % 2)) for i, k in enumerate(keys)]
    salt = vipindex.pick_salt(keys)
    rows = vipindex.bank_rows(entries, salt)
    assert rows.shape == (vipindex.SLOTS, vipindex.ROW)
    where = vipindex.slots(keys, np.array([salt]))[0]
    for (k, m), i in zip(entries, where, strict=True):
        got = S.VipSlot.from_buffer_copy(rows[i].tobytes())
        assert bytes(got.key) == bytes(k) and bytes(got.meta) == bytes(m)
    empty = np.delete(rows, where, axis=0)
    assert not empty.any()  # family 0: matches no packet


def test_the_descriptor_names_bank_and_salt() -> None:
    for bank in (0, 1):
        d = vipindex.descriptor(bank, 0x1234)
        assert vipindex.bank_of(d) == bank and d & vipindex.SALT_MASK == 0x1234
        assert 0 < d <= 0xFFFF  # ctl.vip_index is 16 bits
