"""Numbers for people: the unit is chosen after rounding (no "1000", no "1000.0k")."""

from __future__ import annotations

import pytest

from xlb.units import ago, human


@pytest.mark.parametrize("n, text", [
    (0, "0"), (12, "12"), (999.4, "999"), (999.5, "1.0k"), (999.96, "1.0k"), (1234, "1.2k"),
    (999_940, "999.9k"), (999_960, "1.0M"), (5.6e6, "5.6M"), (-1500, "-1.5k"),
    (2.5e15, "2.5P"),
])
def test_human(n: float, text: str) -> None:
    assert human(n) == text


@pytest.mark.parametrize("seconds, text", [(-3, "0s"), (42, "42s"), (300, "5m"),
                                           (3 * 3600, "3h"), (2 * 86400 + 5, "2d")])
def test_ago(seconds: float, text: str) -> None:
    assert ago(seconds) == text
