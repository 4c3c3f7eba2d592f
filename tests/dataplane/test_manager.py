"""Data plane manager: all-or-nothing apply, geometry checks, adoption of pinned state."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.helpers import XDP_TX, DataplaneUnderTest, base_config, outer_v4, syn
from xlb.dataplane import bpfsys, loader, vipindex
from xlb.dataplane import structs as S
from xlb.dataplane.config import parse_config
from xlb.dataplane.manager import ApplyError, Dataplane, geometry_of
from xlb.dataplane.maps import SPECS, LayoutError, PinnedMap


def snapshot(dp: Dataplane) -> dict[str, Any]:
    """Everything apply() may write, as bytes."""
    vips = {bytes(k): bytes(v) for k, v in dp.vip_entries().values()}
    rings = {bytes(k): dp.ring(v.ring_slot).tobytes() for k, v in dp.vip_entries().values()}
    return {
        "vips": vips, "rings": rings,
        "vip_addrs": sorted(bytes(k) for k in dp.maps["vip_addrs"].keys()),
        "backends": [bytes(b) for b in dp.maps["backends"].read_structs()],
        "ctl": bytes(dp.maps["ctl"].get(0)),  # type: ignore[arg-type]
        "vip_index": _active_bank(dp),
    }


def _active_bank(dp: Dataplane) -> bytes:
    """The bank of the VIP index in use (the idle one may be written: no packet reads it)."""
    bank = vipindex.bank_of(dp.maps["ctl"].get(0).vip_index)  # type: ignore[union-attr]
    return vipindex.bank(dp.maps["vip_index"].read_rows(), bank).tobytes()


def changed_config() -> dict[str, Any]:
    """Touches every kind of write: ctl, new/removed backends and VIPs, changed rings."""
    cfg = base_config(mtu=1400, nexthop_mac="02:aa:bb:cc:dd:ee")
    cfg["vip"][0]["backend"] = [{"address": "10.0.1.1", "weight": 5}, {"address": "10.0.9.9"}]
    del cfg["vip"][1]
    cfg["vip"].append({"name": "new", "address": "10.100.0.99", "port": 8443,
                       "protocol": "udp", "backend": [{"address": "10.0.9.8"}]})
    return cfg


def instrument(monkeypatch: pytest.MonkeyPatch, fail_at: int = 0) -> dict[str, int]:
    """Count map writes; with fail_at, make that write fail like the kernel would."""
    calls = {"n": 0}
    for name in ("update", "update_batch", "delete"):
        real = getattr(bpfsys, name)

        def wrapped(*a: Any, _real: Any = real, **kw: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == fail_at:
                raise bpfsys.BpfError(12, "injected failure")
            return _real(*a, **kw)
        monkeypatch.setattr(bpfsys, name, wrapped)
    return calls


def test_apply_is_all_or_nothing_at_every_write(dut: DataplaneUnderTest,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls = instrument(monkeypatch)
    dut.apply(changed_config())
    monkeypatch.undo()
    dut.apply(base_config())
    total = calls["n"]
    assert total > 10
    before = snapshot(dut.dp)
    _, out = dut.run(syn(sport=60000))
    backend_before = outer_v4(out)[0].dst
    for fail_at in range(1, total + 1):
        instrument(monkeypatch, fail_at)
        with pytest.raises(ApplyError, match="previous state restored"):
            dut.apply(changed_config())
        monkeypatch.undo()
        assert snapshot(dut.dp) == before, f"state changed after failure at write {fail_at}"
    dut.flush_conns()
    _, out = dut.run(syn(sport=60000))
    assert outer_v4(out)[0].dst == backend_before


def test_apply_changes_what_it_says(dut: DataplaneUnderTest) -> None:
    result = dut.apply(changed_config())
    assert result.vips_added == ["new"]
    assert result.vips_removed == ["10.100.0.10:53/udp"]
    assert result.vips_changed == ["web"]
    assert set(result.backends_added) == {"10.0.9.9", "10.0.9.8"}
    assert set(result.backends_removed) == {"10.0.1.2", "10.0.1.3"}
    again = dut.apply(changed_config())
    assert (again.vips_added, again.vips_changed, again.vips_removed) == ([], [], [])


def test_weights_shape_the_ring(dut: DataplaneUnderTest) -> None:
    cfg = base_config()
    cfg["vip"][0]["backend"] = [{"address": "10.0.1.1", "weight": 3},
                                {"address": "10.0.1.2", "weight": 1}]
    dut.apply(cfg)
    dp = dut.dp
    (key, meta), = [(k, m) for k, m in dp.vip_entries().values() if m.vip_id == 0]
    ring = dp.ring(meta.ring_slot)
    ids = {str(a): i for i, a in ((i, dut.backend_address(i)) for i in dp.backend_entries())}
    share = (ring == ids["10.0.1.1"]).mean()
    assert abs(share - 0.75) < 0.001


def test_geometry_change_is_refused_without_writing(dut: DataplaneUnderTest) -> None:
    before = snapshot(dut.dp)
    with pytest.raises(ApplyError, match="compiled in"):
        dut.apply(base_config(ring_size=307))  # room for 3 backends, but not compiled in
    assert snapshot(dut.dp) == before


def test_more_vips_than_pinned_maps_hold_is_refused(dut: DataplaneUnderTest) -> None:
    cfg = base_config()
    cfg["instance"]["max_vips"] = 8
    for i in range(8 - len(cfg["vip"]) + 1):
        cfg["vip"].append({"address": f"10.100.1.{i + 1}", "port": 80, "protocol": "tcp"})
    before = snapshot(dut.dp)
    with pytest.raises(Exception, match="max_vips|more VIPs"):
        dut.apply(cfg)
    assert snapshot(dut.dp) == before


def test_reload_adopts_pins_keeping_flows_and_counters(roots: tuple[str, str]) -> None:
    pin_root, run_root = roots
    cfg = parse_config(base_config("adopt"))
    first = loader.load("adopt", geometry_of(cfg), pin_root)
    try:
        with Dataplane("adopt", pin_root, run_root) as dp:
            dp.apply(cfg)
        assert not first.adopted
        action, out, _ = bpfsys.test_run(first.prog_fd, syn(sport=61000))
        assert action == XDP_TX
        backend = outer_v4(out)[0].dst
        second = loader.load("adopt", geometry_of(cfg), pin_root)
        assert second.adopted and second.prog_id != first.prog_id
        with Dataplane("adopt", pin_root, run_root) as dp:
            tx_before = dp.counters().reasons[10, 0]
            assert len(dp.maps["conns"].keys()) == 1
            drained = copy.deepcopy(base_config("adopt"))
            drained["vip"][0]["backend"] = [
                {"address": a, "state": "drained" if a == backend else "active"}
                for a in ("10.0.1.1", "10.0.1.2", "10.0.1.3")]
            dp.apply(parse_config(drained))
            action, out, _ = bpfsys.test_run(second.prog_fd, syn(sport=61000, flags="A"))
            assert action == XDP_TX and outer_v4(out)[0].dst == backend
            assert dp.counters().reasons[10, 0] == tx_before + 1
    finally:
        loader.remove_pins("adopt", pin_root)


def test_pins_of_another_geometry_are_refused(roots: tuple[str, str]) -> None:
    pin_root, _ = roots
    cfg = parse_config(base_config("geo"))
    loader.load("geo", geometry_of(cfg), pin_root)
    try:
        other = loader.Geometry(ring_size=251, max_vips=8, max_backends=64,
                                max_connections=65536, max_snat=65536)
        with pytest.raises(LayoutError, match="entries"):
            loader.load("geo", other, pin_root)
    finally:
        loader.remove_pins("geo", pin_root)


def test_pins_of_an_older_layout_are_refused_with_the_way_out(roots: tuple[str, str]) -> None:
    """Pins made by an xlb with another struct layout (e.g. before the active-flow
    epochs of layout 2) are refused, and the message says what to do."""
    pin_root, _ = roots
    cfg = parse_config(base_config("oldlayout"))
    loader.load("oldlayout", geometry_of(cfg), pin_root)
    try:
        meta = PinnedMap(f"{pin_root}/oldlayout/meta", SPECS["meta"])
        try:
            m = meta.get(0)
            m.layout_version = S.XLB_LAYOUT_VERSION - 1
            meta.set(0, m)
        finally:
            meta.close()
        v = S.XLB_LAYOUT_VERSION
        with pytest.raises(LayoutError, match=rf"layout version {v - 1}, this xlb uses {v}\).*"
                                              r"--remove-pins"):
            loader.load("oldlayout", geometry_of(cfg), pin_root)
    finally:
        loader.remove_pins("oldlayout", pin_root)
