"""The tick reads only the backend counter rows of ids in use (the read costs per row
of the map, however few are in use), and what it reads is what a full read gives."""

from __future__ import annotations

import ctypes
import time

import numpy as np

from tests.helpers import DataplaneUnderTest
from xlb.agent.core import ROWS_AHEAD, _rows_in_use
from xlb.dataplane import bpfsys
from xlb.dataplane.manager import activity_epoch


def _write(dut: DataplaneUnderTest, rows: np.ndarray) -> None:
    m = dut.dp.maps["backend_stats"]
    keys = np.arange(len(rows), dtype=np.uint32)
    rows = np.ascontiguousarray(rows)
    bpfsys.update_batch(m.fd, ctypes.c_char.from_address(keys.ctypes.data),
                        ctypes.c_char.from_address(rows.ctypes.data), len(rows))


def test_counters_of_the_first_rows_equal_a_full_read_and_keep_its_shape(
        dut: DataplaneUnderTest) -> None:
    m = dut.dp.maps["backend_stats"]
    before = m.read_percpu().copy()
    rows = np.zeros_like(before)
    n, cpus, _ = rows.shape
    epoch = activity_epoch(time.monotonic_ns()) - 1
    rows[:, :, :3] = np.arange(1, n * cpus * 3 + 1, dtype=np.uint64).reshape(n, cpus, 3)
    rows[:, :, 3 + (epoch & 1)] = 5  # active flows of the epoch the counters report
    rows[:, :, 5 + (epoch & 1)] = epoch
    try:
        _write(dut, rows)
        full = dut.dp.counters(active_epoch=epoch)
        part = dut.dp.counters(active_epoch=epoch, backend_rows=8)
        assert full.backends.shape == part.backends.shape == (n, 3)
        assert full.active.shape == part.active.shape == (n,)
        assert (part.backends[:8] == full.backends[:8]).all() and full.backends[8:].all()
        assert not part.backends[8:].any() and not part.active[8:].any()
        assert (part.active[:8] == full.active[:8]).all()
        assert (full.active == 5 * cpus).all()
        assert (dut.dp.counters(active_epoch=epoch, backend_rows=10 * n).backends
                == full.backends).all(), "more rows than the map has: all of them"
    finally:
        _write(dut, before)


def test_the_tick_reads_past_every_id_in_use() -> None:
    assert _rows_in_use({}) == ROWS_AHEAD
    assert _rows_in_use({"10.0.0.1": 0, "10.0.0.2": 7}) == ROWS_AHEAD
    assert _rows_in_use({"10.0.0.1": ROWS_AHEAD - 1}) == 2 * ROWS_AHEAD
    assert _rows_in_use({"10.0.0.1": 3, "10.0.0.2": 1000}) > 1000
