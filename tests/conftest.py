"""Shared fixtures: a data plane compiled once per session under private pins.

Tests never touch /sys/fs/bpf/xlb or /run/xlb: every instance lives under a
per-session pin root and run dir that are removed at the end, pass or fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from console.dataplane import bpfsys, loader
from console.dataplane import structs as S
from console.dataplane.config import parse_config
from console.dataplane.manager import Dataplane, geometry_of

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = 0, 1, 2, 3

CLIENT_MAC = "02:00:00:00:00:01"
LB_MAC = "02:00:00:00:00:02"


def base_config(name: str = "pkt", **instance: Any) -> dict[str, Any]:
    """The packet tests' config: one VIP per encapsulation family and then some."""
    return {
        "instance": {"name": name, "interface": "lo", "max_vips": 8, "max_backends": 64,
                     "max_connections": 65536, **instance},
        "vip": [
            {"name": "web", "address": "10.100.0.10", "port": 80, "protocol": "tcp",
             "backend": [{"address": "10.0.1.1"}, {"address": "10.0.1.2"},
                         {"address": "10.0.1.3"}]},
            {"name": "dns", "address": "10.100.0.10", "port": 53, "protocol": "udp",
             "backend": [{"address": "10.0.1.1"}, {"address": "10.0.1.2"}]},
            {"name": "anyport", "address": "10.100.0.20", "port": 0, "protocol": "tcp",
             "backend": [{"address": "10.0.1.4"}]},
            {"name": "v6-v6", "address": "2001:db8::10", "port": 80, "protocol": "tcp",
             "backend": [{"address": "2001:db8:1::1"}]},
            {"name": "v6-v4", "address": "2001:db8::10", "port": 81, "protocol": "tcp",
             "backend": [{"address": "10.0.1.5"}]},
            {"name": "v4-v6", "address": "10.100.0.30", "port": 443, "protocol": "tcp",
             "backend": [{"address": "fd00:1::5"}]},
            {"name": "empty", "address": "10.100.0.40", "port": 80, "protocol": "tcp",
             "backend": [{"address": "10.0.1.6", "state": "drained"}]},
        ],
    }


class DataplaneUnderTest:
    """A loaded (not attached) data plane driven by BPF_PROG_TEST_RUN."""

    def __init__(self, loaded: loader.Loaded, pin_root: str, run_root: str):
        self.loaded = loaded
        self.pin_root = pin_root
        self.run_root = run_root
        self.dp = Dataplane(loaded.instance, pin_root, run_root)

    def apply(self, cfg: dict[str, Any]) -> Any:
        return self.dp.apply(parse_config(cfg))

    def run(self, packet: bytes) -> tuple[int, bytes]:
        action, out, _ = bpfsys.test_run(self.loaded.prog_fd, packet)
        return action, out

    def reasons(self) -> dict[str, int]:
        r = self.dp.counters().reasons
        return {x.label: int(r[x, 0]) for x in S.Reason}

    def backend_address(self, backend_id: int) -> str:
        b = self.dp.backend_entries()[backend_id]
        return str(S.unpack_addr(b.addr, b.family))

    def conns(self) -> int:
        return len(self.dp.maps["conns"].keys())

    def flush_conns(self) -> None:
        m = self.dp.maps["conns"]
        for k in m.keys():
            m.delete(k)


@pytest.fixture(scope="session")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.fail("the data-plane tests need root (BPF, XDP, netns): run scripts/test as root")
    pin_root = f"/sys/fs/bpf/xlb-test-{os.getpid()}"
    run_root = str(tmp_path_factory.mktemp("run"))
    os.makedirs(pin_root, exist_ok=True)
    try:
        yield pin_root, run_root
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)


@pytest.fixture(scope="session")
def dut_session(roots: tuple[str, str]) -> Iterator[DataplaneUnderTest]:
    pin_root, run_root = roots
    cfg = base_config()
    loaded = loader.load("pkt", geometry_of(parse_config(cfg)), pin_root)
    d = DataplaneUnderTest(loaded, pin_root, run_root)
    try:
        yield d
    finally:
        d.dp.close()


@pytest.fixture
def dut(dut_session: DataplaneUnderTest) -> DataplaneUnderTest:
    """The session data plane reset to base_config() with an empty connection table."""
    dut_session.apply(base_config())
    dut_session.flush_conns()
    return dut_session
