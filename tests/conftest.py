"""Shared fixtures, and the `root` marker.

Tests never touch /sys/fs/bpf/xlb or /run/xlb: every instance lives under a
per-session pin root and run dir that are removed at the end, pass or fail.

A test marked `root` (and every test that uses the `roots` fixture) needs root,
bpffs and BCC. Where one is missing it is skipped with the reason; with
XLB_TESTS_STRICT=1 (scripts/test sets it, so CI does) it fails instead, so a
machine that cannot run them never passes for one that did.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from functools import cache

import pytest

from tests.helpers import DataplaneUnderTest, base_config, dataplane_under_test


@cache
def missing_for_root() -> str | None:
    """Why the root tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (BPF, XDP, network namespaces): run scripts/test as root"
    try:
        with open("/proc/mounts") as f:
            mounted = any(line.split()[1:3] == ["/sys/fs/bpf", "bpf"] for line in f)
    except OSError:
        mounted = False
    if not mounted:
        return "bpffs is not mounted on /sys/fs/bpf (scripts/bootstrap mounts it)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "BCC is missing (Debian's python3-bpfcc, in a --system-site-packages venv)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "roots" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.root)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is None:
        return
    why = missing_for_root()
    if why is None:
        return
    if os.environ.get("XLB_TESTS_STRICT") == "1":
        pytest.fail(f"{why} (XLB_TESTS_STRICT=1: root tests must run)", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    pin_root = f"/sys/fs/bpf/xlb-test-{os.getpid()}"
    run_root = str(tmp_path_factory.mktemp("run"))
    os.makedirs(pin_root, exist_ok=True)
    try:
        yield pin_root, run_root
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)


@pytest.fixture(scope="session")
def dut_session(roots: tuple[str, str]) -> Iterator[DataplaneUnderTest]:
    with dataplane_under_test("pkt", base_config(), roots) as d:
        yield d


@pytest.fixture
def dut(dut_session: DataplaneUnderTest) -> DataplaneUnderTest:
    """The session data plane reset to base_config() with an empty connection table."""
    dut_session.apply(base_config())
    dut_session.flush_conns()
    return dut_session
