"""The BGP view (key 4) driven by Pilot against the agent double's BGP model
(tests/bgp_double.py): sessions, prefixes and why, the event log; W and a on the
selected prefix and maintenance from the palette, each confirmed in a dialog that says
what the routers will do and refused on a read-only console; the fleet's "carried by";
the header and the Overview marking an LB in maintenance or with a session down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from console.app import XlbConsole
from console.bgpmodel import alerts
from console.dialogs import ConfirmScreen, HelpScreen
from tests.agent_double import AgentDouble
from tests.console.test_console import run, status, table_keys, text
from tests.helpers import until
from xlb.api import protocol as P

WEB, DNS = "198.19.0.10/32", "198.19.0.11/32"
BAD_AS = "OPEN message error: bad peer AS (expected 65000, got 65002)"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[AgentDouble, AgentDouble]]:
    """Two LBs with the same VIPs (a fleet)."""
    ds = (AgentDouble(str(tmp_path / "lb1.sock"), "lb1").start(),
          AgentDouble(str(tmp_path / "lb2.sock"), "lb2").start())
    yield ds
    for d in ds:
        d.stop()


def prefix(d: AgentDouble, name: str) -> P.BgpPrefix:
    with d.lock:
        return next(p for p in d.bgp.status()["prefixes"] if p["prefix"] == name)


def cell(app: XlbConsole, table: str, row: str, column: str) -> str:
    return str(app.query_one(table, DataTable).get_cell(row, column))


async def select_prefix(app: XlbConsole, pilot: Any, key: str) -> None:
    await pilot.press("4")
    await until(lambda: key in table_keys(app, "#bgp-prefixes"), pilot)
    table = app.query_one("#bgp-prefixes", DataTable)
    table.focus()
    table.move_cursor(row=table_keys(app, "#bgp-prefixes").index(key))
    await pilot.pause()


def dialog_body(app: XlbConsole) -> str:
    return str(app.screen.query_one("#dialog-body", Static).render())


async def palette(app: XlbConsole, pilot: Any, title: str) -> None:
    """Run the command palette's command called `title` (as picking it would)."""
    commands = {c.title: c for c in app.get_system_commands(app.screen)}
    assert title in commands, sorted(commands)
    commands[title].callback()
    await pilot.pause()


def test_the_view_shows_sessions_prefixes_why_and_events(double: AgentDouble) -> None:
    for b in double.vips[1]["backends"]:
        b["health"] = "down"
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("4")
        await until(lambda: DNS in table_keys(app, "#bgp-prefixes") or
                    f"lb1/{DNS}" in table_keys(app, "#bgp-prefixes"), pilot)
        assert "ExaBGP running (pid 4242)" in text(app, "#bgp-title")
        assert "AS 65001" in text(app, "#bgp-title")
        assert table_keys(app, "#bgp-neighbors") == ["lb1/198.18.1.1", "lb1/fd00:5f1b:18:1::1"]
        assert "● Established" in cell(app, "#bgp-neighbors", "lb1/198.18.1.1", "state")
        assert cell(app, "#bgp-prefixes", f"lb1/{WEB}", "prefix") == WEB  # one instance
        assert "▲ announced" in cell(app, "#bgp-prefixes", f"lb1/{WEB}", "state")
        assert cell(app, "#bgp-prefixes", f"lb1/{WEB}", "to peers") == "198.18.1.1"
        assert "▽ withdrawn" in cell(app, "#bgp-prefixes", f"lb1/{DNS}", "state")
        assert cell(app, "#bgp-prefixes", f"lb1/{DNS}", "why") == (
            "dns: 0 of 3 backends healthy and undrained")
        assert "1 of 2 announced" in text(app, "#bgp-prefixes-title")
        events = app.query_one("#bgp-events", DataTable)
        newest = [str(events.get_cell_at(Coordinate(0, c))) for c in range(4)]
        assert "withdraw" in newest[1] and f"{DNS} withdrawn" in newest[3]
        oldest = [str(events.get_cell_at(Coordinate(events.row_count - 1, c)))
                  for c in range(4)]
        assert oldest[2:] == ["198.18.1.1", "session established (AS 65000)"]
        # the selected prefix's why in full under the table
        assert text(app, "#bgp-detail") == (
            f"lb1/{WEB}: web: 3 of 3 backends healthy and undrained  ·  to 198.18.1.1")
        assert not app.query_one("#bgp-fleet", Static).display  # one LB: no fleet column

    run(app, scenario)


def test_withdraw_asks_saying_what_the_routers_do_and_cancel_changes_nothing(
        double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await select_prefix(app, pilot, f"lb1/{WEB}")
        await pilot.press("W")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        body = dialog_body(app)
        assert "Withdraw 198.19.0.10/32 (web) from the routers on lb1?" in body
        assert "The routers stop sending 198.19.0.10 to lb1" in body
        assert "No other LB this console follows carries it" in body  # only one LB here
        await pilot.press("n")
        await until(lambda: not isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.pause(0.3)
        assert not [c for c in double.calls if c[0].startswith("bgp_")]
        assert prefix(double, WEB)["announced"]

    run(app, scenario)


def test_withdraw_then_announce_confirmed_are_applied_and_shown(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await select_prefix(app, pilot, f"lb1/{WEB}")
        await pilot.press("W")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("y")
        await until(lambda: not prefix(double, WEB)["announced"], pilot)
        assert ("bgp_withdraw", {"vip": "198.19.0.10"}) in double.calls
        await until(lambda: "▽ withdrawn" in cell(app, "#bgp-prefixes", f"lb1/{WEB}", "state"),
                    pilot)
        assert "withdrawn by tester" in cell(app, "#bgp-prefixes", f"lb1/{WEB}", "why")
        assert prefix(double, DNS)["announced"]  # only the selected one
        await pilot.press("a")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        body = dialog_body(app)
        assert "Announce 198.19.0.10/32 (web) from lb1 again?" in body
        assert "The routers add lb1 as a next hop for 198.19.0.10" in body
        await pilot.press("y")
        await until(lambda: prefix(double, WEB)["announced"], pilot)
        assert [e["action"] for e in double.audit] == ["bgp_withdraw", "bgp_announce"]

    run(app, scenario)


def test_maintenance_from_the_palette_marks_the_header_and_the_overview(
        double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await select_prefix(app, pilot, f"lb1/{WEB}")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "End maintenance of lb1" not in titles  # nothing to end yet
        await palette(app, pilot, "Maintenance: withdraw every VIP of lb1")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        body = dialog_body(app)
        assert "Put lb1 in maintenance: withdraw every VIP prefix it announces (2)?" in body
        assert "The routers stop sending 198.19.0.10, 198.19.0.11 to lb1" in body
        assert "Established flows keep their backend" in body
        await pilot.press("y")
        await until(lambda: bool(double.bgp.maintenance_by), pilot)
        assert ("bgp_withdraw", {"all": True}) in double.calls
        await until(lambda: "lb1 ⇣ MAINTENANCE" in status(app), pilot)
        await pilot.press("1")
        await until(lambda: "MAINTENANCE" in text(app, "#ov-summary"), pilot)
        vips = text(app, "#ov-vips").splitlines()
        assert [line.endswith("▽ BGP") for line in vips[1:3]] == [True, True], vips
        # announcing one prefix during maintenance is not offered: maintenance ends first
        await select_prefix(app, pilot, f"lb1/{WEB}")
        await pilot.press("a")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen)
        assert not [c for c in double.calls if c[0] == "bgp_announce"]
        await palette(app, pilot, "End maintenance of lb1")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        assert "End maintenance of lb1" in dialog_body(app)
        await pilot.press("y")
        await until(lambda: not double.bgp.maintenance_by, pilot)
        await until(lambda: "MAINTENANCE" not in status(app), pilot)

    run(app, scenario)


def test_read_only_consoles_cannot_withdraw_announce_or_maintain(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "ro.sock"), operator=False).start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await until(lambda: "READ-ONLY" in status(app), pilot)
            await select_prefix(app, pilot, f"lb1/{WEB}")
            for key in ("W", "a"):
                await pilot.press(key)
                await pilot.pause(0.1)
                assert not isinstance(app.screen, ConfirmScreen)
            assert app.check_action("bgp_withdraw", ()) is None  # shown disabled
            app.action_bgp_withdraw()  # even if asked directly (the palette, a stale key)
            app._maintenance("lb1", True)
            await pilot.pause(0.2)
            assert not isinstance(app.screen, ConfirmScreen)
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert not [t for t in titles if "aintenance" in t or "prefix" in t]
            assert not [c for c in d.calls if c[0].startswith("bgp_")]

        run(app, scenario)
    finally:
        d.stop()


def test_the_fleet_shows_which_lbs_carry_each_vip(pair: tuple[AgentDouble, AgentDouble]) -> None:
    lb1, lb2 = pair
    for b in lb1.vips[1]["backends"]:  # dns has no healthy backend on lb1 only
        b["health"] = "down"
    app = XlbConsole([lb1.path, lb2.path])

    async def scenario(pilot: Any) -> None:
        await until(lambda: len(app.fleet.instances) == 2, pilot)
        await select_prefix(app, pilot, f"lb2/{WEB}")
        await until(lambda: "○ lb1 ● lb2" in text(app, "#bgp-fleet"), pilot)
        lines = text(app, "#bgp-fleet").splitlines()
        assert any(line.startswith(WEB) and "● lb1 ● lb2" in line for line in lines)
        assert any(line.startswith(DNS) and "○ lb1 ● lb2" in line for line in lines)
        assert cell(app, "#bgp-prefixes", f"lb2/{WEB}", "prefix") == f"lb2/{WEB}"
        await pilot.press("W")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        assert "The routers stop sending 198.19.0.10 to lb2; lb1 carries it." in (
            dialog_body(app))
        await pilot.press("n")
        await until(lambda: not isinstance(app.screen, ConfirmScreen), pilot)
        await palette(app, pilot, "Maintenance: withdraw every VIP of lb2")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        assert ("No other LB this console follows carries 198.19.0.11: unless another LB "
                "announces it, its clients lose it.") in dialog_body(app)

    run(app, scenario)


def test_a_session_down_is_marked_with_the_peers_reason(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await until(lambda: "lb1 ● live" in status(app), pilot)
        assert "BGP" not in status(app) and "BGP" not in text(app, "#ov-summary")
        vips = text(app, "#ov-vips").splitlines()
        assert [line.endswith("▲ BGP") for line in vips[1:3]] == [True, True], vips
        with double.lock:
            double.bgp.session("fd00:5f1b:18:1::1", "down", BAD_AS)
        await until(lambda: "lb1 BGP ✗ 1 of 2 sessions down" in status(app), pilot)
        await until(lambda: "BGP ✗ 1 of 2 sessions down" in text(app, "#ov-summary"), pilot)
        await pilot.press("4")
        row = "lb1/fd00:5f1b:18:1::1"
        await until(lambda: "✗ Down" in cell(app, "#bgp-neighbors", row, "state"), pilot)
        assert "OPEN message error: bad peer AS (expected" in cell(app, "#bgp-neighbors", row,
                                                                  "last error")  # clipped
        events = app.query_one("#bgp-events", DataTable)
        assert str(events.get_cell_at(Coordinate(0, 2))) == "fd00:5f1b:18:1::1"
        assert BAD_AS in str(events.get_cell_at(Coordinate(0, 3)))

    run(app, scenario)


def test_help_lists_the_keys_and_a_console_without_bgp_says_so(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "nobgp.sock"), bgp=False).start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await pilot.press("4")
            await until(lambda: "BGP is off" in text(app, "#bgp-title"), pilot)
            assert "no agent this console follows has a [bgp] table" in text(app, "#bgp-title")
            assert table_keys(app, "#bgp-prefixes") == []
            await pilot.press("question_mark")
            await until(lambda: isinstance(app.screen, HelpScreen), pilot)
            body = str(app.screen.query_one("#help-body", Static).render())
            assert "W            withdraw the selected prefix" in body
            assert "a            announce the selected prefix" in body
            assert "Maintenance" in body and "Established" in body

        run(app, scenario)
    finally:
        d.stop()


def test_alerts_name_maintenance_sessions_and_the_speaker() -> None:
    bgp = AgentDouble("/nonexistent").bgp.status()
    assert alerts(bgp) == [] and alerts(P.empty_bgp()) == []
    bgp["maintenance"], bgp["speaker"] = True, "restarting"
    bgp["neighbors"][1]["state"] = "idle"
    assert alerts(bgp) == [("⇣ MAINTENANCE: every VIP withdrawn", "warning"),
                           ("BGP ✗ 1 of 2 sessions down", "error"),
                           ("ExaBGP restarting", "error")]
