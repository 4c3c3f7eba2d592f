"""The lab for a test module: built once per module (`xlb lab up`), removed after it even
when a test fails. Modules that need a lab in a state of their own (their own faults,
maintenance) get a fresh one; they never share it with another module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from xlb.lab import run


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, Any]]:
    try:
        yield run.up()
    finally:
        run.down()
