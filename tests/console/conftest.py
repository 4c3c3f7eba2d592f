"""What the console tests share: a private preferences file (the remembered theme) and
an agent test double on a private socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_double import AgentDouble


@pytest.fixture(autouse=True)
def private_prefs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def double(tmp_path: Path) -> Iterator[AgentDouble]:
    d = AgentDouble(str(tmp_path / "lb1.sock")).start()
    yield d
    d.stop()
