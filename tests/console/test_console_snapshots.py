"""SVG snapshots of every console view and every dialog at 80x24 and 160x48
(pytest-textual-snapshot).

The data comes from a frozen AgentDouble (fixed figures, one snapshot per
hour, so the sparklines have a known length). The dialogs are opened with
their keys on the Backends view, over its first backend. After an intended
change of the look, review and accept with `pytest
tests/console/test_console_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Static

from console.app import VIEWS, XlbConsole
from console.dialogs import (
    BackendScreen,
    ConfirmScreen,
    Dialog,
    ExamplesScreen,
    HelpScreen,
    WeightScreen,
)
from console.dialogs.explain import ExplainScreen
from console.dialogs.mode import ModeScreen
from console.dialogs.sample import SampleScreen
from console.views.eventlist import EventList
from tests.agent_double import AgentDouble
from tests.helpers import until
from tests.trace_double import FROZEN_EVENTS

SIZES = [(80, 24), (160, 48)]
DIALOGS: dict[str, tuple[str, type[Dialog[Any]]]] = {  # name: (key, screen)
    "confirm": ("d", ConfirmScreen), "weight": ("w", WeightScreen),
    "help": ("question_mark", HelpScreen), "details": ("enter", BackendScreen),
    "mode": ("m", ModeScreen), "xdp": ("x", ModeScreen)}


@pytest.fixture
def frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentDouble]:
    """Five backends, frozen figures."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    d = AgentDouble(str(tmp_path / "lb1.sock"), backends=5, frozen=True, tick=3600).start()
    yield d
    d.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("view", range(len(VIEWS)), ids=[name for name, _ in VIEWS])
def test_view(frozen: AgentDouble, snap_compare: Any, view: int, size: tuple[int, int]) -> None:
    app = XlbConsole([frozen.path])

    async def ready(pilot: Any) -> None:
        await until(lambda: "lb1" in app.fleet.instances
                    and len(app.fleet.instances["lb1"].pps) >= 2, pilot)
        await pilot.press(str(view + 1))
        if VIEWS[view][0] == "flows":  # the frozen double's canned trace
            await until(lambda: len(app.query_one("#fl-list", EventList).keys)
                        == FROZEN_EVENTS, pilot)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dialog", list(DIALOGS))
def test_dialog(frozen: AgentDouble, snap_compare: Any, dialog: str,
                size: tuple[int, int]) -> None:
    app = XlbConsole([frozen.path])
    key, screen = DIALOGS[dialog]

    async def ready(pilot: Any) -> None:
        await until(lambda: "lb1" in app.fleet.instances
                    and len(app.fleet.instances["lb1"].pps) >= 2, pilot)
        await pilot.press("2")
        await until(lambda: app.query_one("#be-table", DataTable).row_count == 5, pilot)
        await pilot.press(key)
        await until(lambda: isinstance(app.screen, screen), pilot)
        for box in app.screen.query(Input):
            box.cursor_blink = False  # a blinking cursor would make two pictures
        if screen is BackendScreen:
            await until(lambda: "no changes recorded" in str(
                app.screen.query_one("#audit-body", Static).render()), pilot)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_kernel_drop_examples(frozen: AgentDouble, snap_compare: Any,
                              size: tuple[int, int]) -> None:
    """Enter on the Drops view's top kernel reason: its example packets."""
    app = XlbConsole([frozen.path])

    async def ready(pilot: Any) -> None:
        await until(lambda: "lb1" in app.fleet.instances
                    and len(app.fleet.instances["lb1"].pps) >= 2, pilot)
        await pilot.press("3")
        table = app.query_one("#dr-kernel", DataTable)
        await until(lambda: table.row_count == 3, pilot)
        table.focus()
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ExamplesScreen), pilot)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dialog", ["sample", "explain-typed", "explain-event"])
def test_flows_dialog(frozen: AgentDouble, snap_compare: Any, dialog: str,
                      size: tuple[int, int]) -> None:
    """The Flows view's dialogs: sampling, a typed flow explained, enter on an event."""
    app = XlbConsole([frozen.path])

    async def ready(pilot: Any) -> None:
        await until(lambda: "lb1" in app.fleet.instances, pilot)
        await pilot.press("5")
        table = app.query_one("#fl-list", EventList)
        await until(lambda: len(table.keys) == FROZEN_EVENTS, pilot)
        if dialog == "sample":
            await pilot.press("s")
            await until(lambda: isinstance(app.screen, SampleScreen), pilot)
        elif dialog == "explain-typed":
            await pilot.press("e")
            await until(lambda: isinstance(app.screen, ExplainScreen), pilot)
            app.screen.query_one(Input).value = "198.18.0.12:40000 198.19.0.10:80 tcp syn"
            await pilot.press("enter")
        else:
            table.focus()
            await pilot.press("down", "enter")
            await until(lambda: isinstance(app.screen, ExplainScreen), pilot)
        if isinstance(app.screen, ExplainScreen):
            await until(lambda: "⇒" in str(app.screen.query_one("#explain-body",
                                                                 Static).render()), pilot)
        for box in app.screen.query(Input):
            box.cursor_blink = False
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.fixture
def frozen_mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentDouble]:
    """web switched to SNAT a while ago (a quarter of its packets still DSR flows, ports
    ran out 7 times); the driver has no native XDP, so the program runs generic."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    d = AgentDouble(str(tmp_path / "lb1.sock"), backends=5, frozen=True, tick=3600)
    d.vips[0].update(mode="snat", snat_share=0.75, no_port=7)
    d.xdp_mode, d.xdp_native = "generic", False
    yield d.start()
    d.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("view", ["overview", "backends", "mode"])
def test_modes(frozen_mixed: AgentDouble, snap_compare: Any, view: str,
               size: tuple[int, int]) -> None:
    """A VIP in SNAT beside a DSR one: the Overview and Backends with the figures by mode,
    and the dialog of the way back to DSR."""
    app = XlbConsole([frozen_mixed.path])

    async def ready(pilot: Any) -> None:
        await until(lambda: "lb1" in app.fleet.instances
                    and len(app.fleet.instances["lb1"].pps) >= 2, pilot)
        if view != "overview":
            await pilot.press("2")
            await until(lambda: app.query_one("#be-table", DataTable).row_count == 5, pilot)
        if view == "mode":
            await pilot.press("m")
            await until(lambda: isinstance(app.screen, ModeScreen), pilot)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=ready)


@pytest.fixture
def frozen_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[AgentDouble]]:
    """Two LBs, frozen: lb1 has no healthy dns backend, lb2's IPv6 session is down."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    ds = [AgentDouble(str(tmp_path / f"{n}.sock"), n, frozen=True, tick=3600)
          for n in ("lb1", "lb2")]
    for b in ds[0].vips[1]["backends"]:
        b["health"] = "down"
    ds[1].bgp.session("fd00:5f1b:18:1::1", "down",
                      "OPEN message error: bad peer AS (expected 65000, got 65002)")
    for d in ds:
        d.start()
    yield ds
    for d in ds:
        d.stop()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("what", ["fleet", "withdraw", "maintenance"])
def test_bgp_fleet(frozen_pair: list[AgentDouble], snap_compare: Any, what: str,
                   size: tuple[int, int]) -> None:
    """The BGP view over two LBs (which LB carries each VIP, a session down in the header),
    and its two confirmations: W on lb2's web, maintenance of lb2 from the palette."""
    app = XlbConsole([d.path for d in frozen_pair])

    async def ready(pilot: Any) -> None:
        await until(lambda: len(app.fleet.instances) == 2, pilot)
        await pilot.press("4")
        table = app.query_one("#bgp-prefixes", DataTable)
        await until(lambda: table.row_count == 4, pilot)
        table.focus()
        table.move_cursor(row=2)  # lb2/198.19.0.10/32
        if what == "withdraw":
            await pilot.press("W")
        elif what == "maintenance":
            app.routing.maintenance("lb2", True)
        if what != "fleet":
            await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=ready)
