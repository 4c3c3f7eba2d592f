"""Dialogs: every one is a Dialog, and so drawn centred at any terminal size."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from textual.screen import ModalScreen

import console.dialogs
from console.app import XlbConsole
from console.dialogs import (
    BackendScreen,
    ConfirmScreen,
    Dialog,
    ExamplesScreen,
    HelpScreen,
    WeightScreen,
)
from console.model import BackendRow, KernelDropRow, VipRef
from console.views.backends import Backends
from tests.console.bare import run_bare, snapshot
from tests.helpers import until

SIZES = [(80, 24), (160, 48)]
REF = VipRef("lb1", "web", "198.19.0.10:80/tcp", 3, 3, 1500.0)
ROW = BackendRow("198.18.2.1", 1, "active", "up", 0.25, 0.3, 0.28, 30, 12.5, 400.0, 0.0)
DIALOGS: dict[str, Callable[[], Dialog[Any]]] = {
    "confirm": lambda: ConfirmScreen("Drain backend", "Drain backend 198.18.2.1 in VIP web?",
                                     yes="Drain"),
    "weight": lambda: WeightScreen("198.18.2.1", "web", 1),
    "help": lambda: HelpScreen("Backends", list(Backends.KEYS), list(XlbConsole.GLOBAL_KEYS)),
    "details": lambda: BackendScreen(REF, ROW, snapshot()),
    "examples": lambda: ExamplesScreen(KernelDropRow(
        "NO_SOCKET", 40.0, 24000, 12000, (), tuple(
            {"time": 1.7e9 - i, "protocol": "udp", "src": "fd00::2", "sport": 40000 + i,
             "dst": "198.19.0.11", "dport": 9999} for i in range(30)))),
}


def test_every_dialog_is_a_dialog() -> None:
    screens = [c for _, c in inspect.getmembers(console.dialogs, inspect.isclass)
               if issubclass(c, ModalScreen) and c is not Dialog]
    assert {c.__name__ for c in screens} == {"BackendScreen", "ConfirmScreen", "ExamplesScreen",
                                             "HelpScreen", "WeightScreen"}
    assert all(issubclass(c, Dialog) for c in screens)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(DIALOGS))
def test_the_dialog_is_centred(name: str, size: tuple[int, int]) -> None:
    async def scenario(app: XlbConsole, pilot: Any) -> None:
        app.push_screen(DIALOGS[name]())
        await until(lambda: isinstance(app.screen, Dialog), pilot)
        await pilot.pause()
        frame = app.screen.query_one("#dialog").region
        width, height = size
        left, right = frame.x, width - frame.right
        top, bottom = frame.y, height - frame.bottom
        assert frame.width < width and frame.height < height, frame
        assert min(left, right, top, bottom) > 0, frame
        assert abs(left - right) <= 1 and abs(top - bottom) <= 1, (frame, size)

    run_bare(scenario, size=size)
