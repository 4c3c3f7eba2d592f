"""Fixtures of the unit tests that talk to the agent test double."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_double import AgentDouble


@pytest.fixture
def double(tmp_path: Path) -> Iterator[AgentDouble]:
    """A protocol-speaking agent double on a socket of its own."""
    d = AgentDouble(str(tmp_path / "lb1.sock")).start()
    yield d
    d.stop()
