"""The VIP index (bpf/xlb_shared.h, struct xlb_vip_slot): the program finds a packet's VIP
in an array the agent lays out at every apply. It must always say what `vips` says: every
change writes the idle bank and then switches ctl to it, a key that only shares a slot is
no VIP, and past the index's size the program looks up `vips` as before."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from tests.dataplane.test_manager import changed_config
from tests.dataplane.test_snat import snat_config
from tests.helpers import (
    CLIENT,
    XDP_PASS,
    XDP_TX,
    DataplaneUnderTest,
    base_config,
    dataplane_under_test,
    eth,
    syn,
)
from xlb.dataplane import bpfsys, loader, vipindex
from xlb.dataplane import structs as S
from xlb.dataplane.config import parse_config
from xlb.dataplane.manager import Dataplane, geometry_of
from xlb.dataplane.maps import pin_dir


@pytest.fixture(scope="module")
def vix(roots: tuple[str, str]) -> Iterator[DataplaneUnderTest]:
    with dataplane_under_test("vix", snat_config(name="vix"), roots) as d:
        yield d


def _desc(dut: DataplaneUnderTest) -> int:
    return int(dut.dp.maps["ctl"].get(0).vip_index)


def _bank(dut: DataplaneUnderTest, bank: int) -> np.ndarray:
    return vipindex.bank(dut.dp.maps["vip_index"].read_rows(), bank)


def _indexed(dut: DataplaneUnderTest) -> dict[bytes, bytes]:
    """The active bank as {key: meta} (bytes), empty slots left out."""
    out = {}
    for row in _bank(dut, vipindex.bank_of(_desc(dut))):
        s = S.VipSlot.from_buffer_copy(row.tobytes())
        if s.key.family:
            out[bytes(s.key)] = bytes(s.meta)
    return out


def _in_vips(dut: DataplaneUnderTest) -> dict[bytes, bytes]:
    return {bytes(k): bytes(m) for k, m in dut.dp.vip_entries().values()}


def _reason_of(dut: DataplaneUnderTest, frame: bytes) -> tuple[int, str]:
    before = dut.reasons()
    action, _ = dut.run(frame)
    after = dut.reasons()
    (reason,) = [r for r in after if after[r] != before[r]]
    return action, reason


def _cfg(**vips: str) -> dict[str, Any]:
    """snat_config() for instance vix, with the named VIPs' modes changed."""
    cfg = snat_config(name="vix")
    for v in cfg["vip"]:
        v["mode"] = vips.get(v["name"], v["mode"])
    return cfg


def test_the_index_holds_exactly_the_vips_after_apply(vix: DataplaneUnderTest) -> None:
    vix.apply(_cfg())
    assert _desc(vix) != 0
    assert _indexed(vix) == _in_vips(vix) and len(_in_vips(vix)) == 6


def test_a_change_writes_the_idle_bank_then_switches_to_it(vix: DataplaneUnderTest) -> None:
    vix.apply(_cfg())
    first = _desc(vix)
    old_bank = _bank(vix, vipindex.bank_of(first)).copy()
    vix.apply(_cfg(dsr="snat"))  # one VIP's mode: its entry (flags) changes
    second = _desc(vix)
    assert vipindex.bank_of(second) != vipindex.bank_of(first)
    assert np.array_equal(_bank(vix, vipindex.bank_of(first)), old_bank), "bank in use written"
    assert _indexed(vix) == _in_vips(vix)
    vix.flush_conns()
    assert _reason_of(vix, syn(sport=42001, dst="10.100.0.30")) == (XDP_TX, "tx_snat")
    vix.apply(_cfg(dsr="snat"))  # nothing changed: nothing written, no switch
    assert _desc(vix) == second
    vix.apply(_cfg())
    assert vipindex.bank_of(_desc(vix)) == vipindex.bank_of(first)
    vix.flush_conns()
    assert _reason_of(vix, syn(sport=42002, dst="10.100.0.30")) == (XDP_TX, "tx_encap")


def test_added_and_removed_vips_follow(dut: DataplaneUnderTest) -> None:
    dut.apply(changed_config())  # adds 10.100.0.99:8443/udp, removes 10.100.0.10:53/udp
    assert _indexed(dut) == _in_vips(dut)
    new = bytes(eth() / IP(src=CLIENT, dst="10.100.0.99") / UDP(sport=42003, dport=8443)
                / Raw(b"q"))
    assert _reason_of(dut, new) == (XDP_TX, "tx_encap")
    gone = bytes(eth() / IP(src=CLIENT, dst="10.100.0.10") / UDP(sport=42004, dport=53)
                 / Raw(b"q"))
    assert _reason_of(dut, gone) == (XDP_PASS, "pass_vip_no_service")
    dut.apply(base_config())
    assert _reason_of(dut, gone) == (XDP_TX, "tx_encap")
    assert _reason_of(dut, new) == (XDP_PASS, "pass_not_vip")


def sharing_port(dut: DataplaneUnderTest, addr: str, taken: set[int]) -> tuple[int, int]:
    """A TCP port of VIP address `addr` that is no VIP but whose key falls in the slot of a
    VIP key under the index's salt; and that slot."""
    salt = _desc(dut) & vipindex.SALT_MASK
    a = ipaddress.ip_address(addr)
    vip_keys = [S.VipKey.from_buffer_copy(k) for k in _in_vips(dut)]
    used = set(vipindex.slots(vip_keys, np.array([salt]))[0].tolist())
    for port in range(1, 65536):
        if port in taken:
            continue
        k = S.VipKey(addr=S.pack_addr(a), port=S.net_port(port), proto=6, family=S.family_of(a))
        slot = int(vipindex.slots([k], np.array([salt]))[0][0])
        if slot in used:
            return port, slot
    raise AssertionError("no port shares a slot")


def test_a_key_that_only_shares_a_vips_slot_is_no_vip(dut: DataplaneUnderTest) -> None:
    port, _ = sharing_port(dut, "10.100.0.10", {80})
    assert _reason_of(dut, syn(sport=42005, dport=port)) == (XDP_PASS, "pass_vip_no_service")
    assert _reason_of(dut, syn(sport=42006)) == (XDP_TX, "tx_encap")


def test_past_the_index_size_vips_is_looked_up(roots: tuple[str, str]) -> None:
    n = vipindex.MAX_KEYS + 1
    cfg = base_config(name="vixbig", max_vips=n + 1)
    cfg["vip"] = [{"name": f"v{i}", "address": f"10.101.{i // 200}.{i % 200 + 1}", "port": 80,
                   "protocol": "tcp", "backend": [{"address": "10.0.1.1"}]} for i in range(n)]
    with dataplane_under_test("vixbig", cfg, roots) as d:
        d.apply(cfg)
        assert _desc(d) == 0
        assert _reason_of(d, syn(sport=42007, dst="10.101.0.64")) == (XDP_TX, "tx_encap")
        assert _reason_of(d, syn(sport=42008, dst="10.101.0.64", dport=81)) == \
            (XDP_PASS, "pass_vip_no_service")
        del cfg["vip"][1:]  # back under the limit: the index comes on
        d.apply(cfg)
        assert _desc(d) != 0 and _indexed(d) == _in_vips(d)
        assert _reason_of(d, syn(sport=42009, dst="10.101.0.1")) == (XDP_TX, "tx_encap")


def test_pins_made_before_the_index_are_adopted(roots: tuple[str, str]) -> None:
    """An upgrade over an older xlb's pins (no vip_index map, ctl's word 0): the load makes
    the map, packets find their VIPs in `vips` until the agent's apply lays out the index."""
    pin_root, run_root = roots
    cfg = parse_config(base_config("vixold"))
    loader.load("vixold", geometry_of(cfg), pin_root)
    try:
        with Dataplane("vixold", pin_root, run_root) as dp:
            dp.apply(cfg)
            ctl = dp.maps["ctl"].get(0)
            ctl.vip_index = 0  # what an older agent wrote there
            dp.maps["ctl"].set(0, ctl)
        os.unlink(os.path.join(pin_dir("vixold", pin_root), "vip_index"))
        second = loader.load("vixold", geometry_of(cfg), pin_root)
        assert second.adopted
        assert bpfsys.test_run(second.prog_fd, syn(sport=42010))[0] == XDP_TX
        with Dataplane("vixold", pin_root, run_root) as dp:
            dp.apply(cfg)
            assert dp.maps["ctl"].get(0).vip_index != 0
        assert bpfsys.test_run(second.prog_fd, syn(sport=42011))[0] == XDP_TX
        assert bpfsys.test_run(second.prog_fd, syn(sport=42012, dport=82))[0] == XDP_PASS
    finally:
        loader.remove_pins("vixold", pin_root)
