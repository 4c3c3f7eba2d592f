"""The console driven by Textual's Pilot against AgentDouble (tests/agent_double.py).

The double speaks the agent's real protocol over a real Unix socket, so these
tests go through the same AgentClient/AgentLink path as a real agent. The
end-to-end test against the lab's real agent, in tmux, is test_console_lab.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Static, TabbedContent

from console import themes
from console.app import XlbConsole
from console.dialogs import BackendScreen, ConfirmScreen, HelpScreen, WeightScreen
from console.main import sockets
from tests.agent_double import AgentDouble
from tests.helpers import until
from xlb.errors import AgentUnavailable


def run(app: XlbConsole, scenario: Callable[[Any], Awaitable[None]],
        size: tuple[int, int] = (120, 40)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await until(lambda: app.fleet.instances, pilot)
            await scenario(pilot)

    asyncio.run(main())


def text(app: XlbConsole, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def status(app: XlbConsole) -> str:
    return text(app, "#status")


def table_keys(app: XlbConsole, selector: str) -> list[str]:
    table = app.query_one(selector, DataTable)
    return [str(r.value) for r in table.rows]


async def select_backend(app: XlbConsole, pilot: Any, address: str) -> None:
    await pilot.press("2")
    await until(lambda: address in table_keys(app, "#be-table"), pilot)
    table = app.query_one("#be-table", DataTable)
    table.move_cursor(row=table_keys(app, "#be-table").index(address))
    await pilot.pause()


def test_number_keys_switch_views(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        tabs = app.query_one("#views", TabbedContent)
        for key, name in (("2", "backends"), ("3", "drops"), ("4", "bgp"), ("5", "flows"),
                          ("6", "probes"), ("1", "overview")):
            await pilot.press(key)
            assert tabs.active == name
        await pilot.press("4")
        await until(lambda: "ExaBGP running" in text(app, "#bgp-title"), pilot)

    run(app, scenario)


def test_overview_shows_the_live_figures_and_the_hot_queue(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await until(lambda: "q3" in text(app, "#ov-queues"), pilot)
        queues = text(app, "#ov-queues")
        hot = [line for line in queues.splitlines() if "HOT" in line]
        assert len(hot) == 1 and hot[0].strip().startswith("q1")  # the double's hot queue
        assert "XDP native on veth-lb1" in text(app, "#ov-summary")
        assert "web" in text(app, "#ov-vips") and "3/3 healthy" in text(app, "#ov-vips")
        assert "cpu1" in text(app, "#ov-cpus") and "si  12%" in text(app, "#ov-cpus")
        assert "lb1 ● live" in status(app)

    run(app, scenario)


def test_drain_asks_first_and_cancel_changes_nothing(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await select_backend(app, pilot, "198.18.2.2")
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        body = str(app.screen.query_one("#dialog-body", Static).render())
        assert "198.18.2.2" in body and "web" in body and "stay" in body
        await pilot.press("n")
        await until(lambda: not isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.pause(0.3)
        assert not [c for c in double.calls if c[0] == "drain"]
        assert double.backend("web", "198.18.2.2")["state"] == "active"

    run(app, scenario)


def test_drain_confirmed_is_applied_and_shown(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await select_backend(app, pilot, "198.18.2.2")
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("y")
        await until(lambda: double.backend("web", "198.18.2.2")["state"] == "drained", pilot)
        assert ("drain", {"address": "198.18.2.2", "vip": "web"}) in double.calls
        table = app.query_one("#be-table", DataTable)
        await until(lambda: "drained" in str(table.get_cell("198.18.2.2", "state")), pilot)
        await pilot.press("u")
        await until(lambda: double.backend("web", "198.18.2.2")["state"] == "active", pilot)

    run(app, scenario)


def test_refusal_of_the_last_healthy_backend_can_be_forced(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "one.sock"), backends=1).start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await select_backend(app, pilot, "198.18.2.1")
            await pilot.press("d", "y")
            await until(lambda: isinstance(app.screen, ConfirmScreen)
                        and "Refused" in str(app.screen.query_one("#dialog-title").render()),
                        pilot)
            assert "without a healthy backend" in str(
                app.screen.query_one("#dialog-body", Static).render())
            assert d.backend("web", "198.18.2.1")["state"] == "active"
            await pilot.press("y")
            await until(lambda: d.backend("web", "198.18.2.1")["state"] == "drained", pilot)
            assert ("drain", {"address": "198.18.2.1", "vip": "web", "force": True}) in d.calls

        run(app, scenario)
    finally:
        d.stop()


def test_weight_dialog_validates_before_sending(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await select_backend(app, pilot, "198.18.2.1")
        await pilot.press("w")
        await until(lambda: isinstance(app.screen, WeightScreen), pilot)
        box = app.screen.query_one("#weight-input", Input)
        box.value = ""
        await pilot.press(*"70000")
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, WeightScreen)  # refused: still open
        assert "0..65535" in str(app.screen.query_one("#weight-error").render())
        box.value = ""
        await pilot.press("5", "enter")
        await until(lambda: double.backend("web", "198.18.2.1")["weight"] == 5, pilot)
        assert not [c for c in double.calls if c[0] == "weight" and c[1]["weight"] == 70000]
        # Esc cancels without a call
        n = len(double.calls)
        await pilot.press("w")
        await until(lambda: isinstance(app.screen, WeightScreen), pilot)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert not [c for c in double.calls[n:] if c[0] == "weight"]

    run(app, scenario)


def test_read_only_flag_shows_everything_and_changes_nothing(double: AgentDouble) -> None:
    app = XlbConsole([double.path], read_only=True)

    async def scenario(pilot: Any) -> None:
        assert "READ-ONLY (--read-only)" in status(app)
        await select_backend(app, pilot, "198.18.2.1")
        for key in ("d", "u", "w"):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert not isinstance(app.screen, ConfirmScreen | WeightScreen)
        assert not [c for c in double.calls if c[0] in ("drain", "undrain", "weight")]
        assert app.check_action("drain", ()) is None  # shown disabled, not runnable

    run(app, scenario)


def test_read_only_credentials_are_said_in_the_header(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "ro.sock"), operator=False).start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await until(lambda: "READ-ONLY (read-only credentials)" in status(app), pilot)
            await select_backend(app, pilot, "198.18.2.1")
            await pilot.press("d")
            await pilot.pause(0.2)
            assert not isinstance(app.screen, ConfirmScreen)
            assert not [c for c in d.calls if c[0] == "drain"]

        run(app, scenario)
    finally:
        d.stop()


def test_agent_going_away_shows_in_the_header_and_comes_back(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await until(lambda: "lb1 ● live" in status(app), pilot)
        double.stop()
        await until(lambda: "disconnected" in status(app), pilot)
        assert "reconnecting" in status(app)
        await pilot.press("2", "3", "1")  # still answers keys while the agent is away
        double.start()
        await until(lambda: "lb1 ● live" in status(app), pilot, timeout=10)

    run(app, scenario)


def test_theme_key_cycles_and_the_choice_is_remembered(double: AgentDouble) -> None:
    names = [t.name for t in themes.load_themes()]
    assert names[0] == themes.DEFAULT and {"xlb-light", "xlb-high-contrast"} <= set(names)
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        assert app.theme == themes.DEFAULT
        await pilot.press("t")
        assert app.theme == names[1]
        await until(lambda: themes.remembered() == names[1], pilot)

    run(app, scenario)
    again = XlbConsole([double.path])

    async def check(pilot: Any) -> None:
        assert again.theme == names[1]

    run(again, check)


def test_help_lists_the_keys_of_the_current_view(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("2", "question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), pilot)
        body = str(app.screen.query_one("#help-body", Static).render())
        for word in ("drain", "undrain", "weight", "filter", "sort", "theme", "quit",
                     "command palette"):
            assert word in body.lower(), word
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, HelpScreen), pilot)

    run(app, scenario)


def test_filter_and_sort_the_backends(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "many.sock"), backends=12).start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await select_backend(app, pilot, "198.18.2.1")
            assert len(table_keys(app, "#be-table")) == 12
            await pilot.press("slash", *"2.1")
            await until(lambda: set(table_keys(app, "#be-table")) == {
                "198.18.2.1", "198.18.2.10", "198.18.2.11", "198.18.2.12"}, pilot)
            await pilot.press("escape")
            await until(lambda: len(table_keys(app, "#be-table")) == 12, pilot)
            await pilot.press("s")  # address -> weight: the weight-2 backends first
            await until(lambda: app.backends_view().sort == "weight", pilot)
            first = table_keys(app, "#be-table")[0]
            assert d.backend("web", first)["weight"] == 2

        run(app, scenario)
    finally:
        d.stop()


def test_a_fleet_of_two_agents_and_focus(tmp_path: Path) -> None:
    a = AgentDouble(str(tmp_path / "lb1.sock"), instance="lb1").start()
    b = AgentDouble(str(tmp_path / "lb2.sock"), instance="lb2").start()
    try:
        app = XlbConsole([a.path, b.path])

        async def scenario(pilot: Any) -> None:
            await until(lambda: len(app.fleet.instances) == 2, pilot)
            await pilot.pause(0.3)
            assert "lb1 ● live" in status(app) and "lb2 ● live" in status(app)
            await until(lambda: "Fleet" in text(app, "#ov-summary"), pilot)
            assert "lb2/q1" in text(app, "#ov-queues")
            await pilot.press("i")
            await until(lambda: "focus: lb1" in status(app), pilot)
            await until(lambda: "lb2/q1" not in text(app, "#ov-queues"), pilot)
            await pilot.press("i", "i")
            await until(lambda: "focus: whole fleet" in status(app), pilot)
            # a drain goes to the agent that owns the selected VIP
            await pilot.press("2", "v", "v")  # lb1/web -> lb1/dns -> lb2/web
            await until(lambda: app.backends_view().vip_key == "lb2/web", pilot)
            table = app.query_one("#be-table", DataTable)
            table.move_cursor(row=0)
            await pilot.press("d", "y")
            await until(lambda: b.backend("web", "198.18.2.1")["state"] == "drained", pilot)
            assert a.backend("web", "198.18.2.1")["state"] == "active"

        run(app, scenario)
    finally:
        a.stop()
        b.stop()


def test_quit_leaves_the_load_balancer_alone(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("q")
        await pilot.pause(0.2)

    run(app, scenario)
    assert app.return_code == 0
    assert [c[0] for c in double.calls if c[0] not in ("status", "subscribe")] == []


def test_the_command_palette_offers_every_action(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for want in ("Show Overview", "Show Backends", "Show Drops", "Show BGP", "Show Flows",
                     "Show Probes", "Drain selected backend", "Undrain selected backend",
                     "Set weight of selected backend", "Backends of VIP lb1/dns",
                     "Filter backends", "Theme xlb-light", "Keys (help)"):
            assert want in titles, want

    run(app, scenario)


def test_socket_discovery_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(AgentUnavailable, match="no agent socket"):  # exit code 3
        sockets([str(tmp_path / "nope.sock")])
    a = tmp_path / "a.sock"
    a.touch()
    # duplicates collapse; one missing socket of several is followed (it may come up later)
    assert sockets([str(a), str(a), str(tmp_path / "later.sock")]) == [
        str(a), str(tmp_path / "later.sock")]


def test_theme_files_are_complete() -> None:
    for t in themes.load_themes():
        for role in ("primary", "success", "warning", "error", "background", "foreground"):
            assert getattr(t, role), (t.name, role)


def test_bad_theme_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text('name = "x"\nprimary = "#fff"\ncolour = "red"\n')
    with pytest.raises(themes.ThemeError, match="unknown keys"):
        themes.load_themes(tmp_path)


def test_prefs_file_is_json(double: AgentDouble) -> None:
    themes.remember("xlb-light")
    assert json.loads(themes.prefs_path().read_text()) == {"theme": "xlb-light"}


def test_web_console_serves_the_live_app(double: AgentDouble, tmp_path: Path) -> None:
    """`xlb console --web`: textual-serve runs the real console for a browser's websocket."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import aiohttp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "xlb", "console", "--web", "--port",
                             str(port), "--socket", double.path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)})

    async def browse() -> str:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(url + "/") as page:
                        assert page.status == 200 and "xlb console" in await page.text()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            seen = ""
            async with session.ws_connect(f"{url}/ws?width=100&height=30") as ws:
                loop = asyncio.get_running_loop()
                end = loop.time() + 30
                while loop.time() < end and not ("Overview" in seen and "lb1 ● live" in seen):
                    try:
                        msg = await asyncio.wait_for(ws.receive(), 1)
                    except TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        seen += msg.data.decode("utf-8", "replace")
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        seen += msg.data
                    else:
                        break
            return seen

    try:
        seen = asyncio.run(browse())
        assert "Overview" in seen and "lb1 ● live" in seen
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def test_enter_shows_the_backend_and_its_audit_trail(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await select_backend(app, pilot, "198.18.2.3")
        await pilot.press("w")
        await until(lambda: isinstance(app.screen, WeightScreen), pilot)
        app.screen.query_one("#weight-input", Input).value = ""
        await pilot.press("7", "enter")
        await until(lambda: double.backend("web", "198.18.2.3")["weight"] == 7, pilot)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, BackendScreen), pilot)
        body = str(app.screen.query_one("#dialog-body", Static).render())
        assert "198.19.0.10:80/tcp" in body and "Maglev table share" in body
        await until(lambda: "weight" in str(
            app.screen.query_one("#audit-body", Static).render()), pilot)
        audit = str(app.screen.query_one("#audit-body", Static).render())
        assert "tester (uid 1000)" in audit and "weight  web: weight 2 → 7" in audit
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, BackendScreen), pilot)

    run(app, scenario)


def test_keys_work_during_a_snapshot_burst(tmp_path: Path) -> None:
    """200 snapshots/s: redraws coalesce (fewer redraws than snapshots) and keys still act."""
    d = AgentDouble(str(tmp_path / "burst.sock"), backends=50, tick=0.005).start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await until(lambda: len(app.fleet.instances["lb1"].pps) > 100, pilot, timeout=20)
            got = d.n
            assert app.redraws < got
            await pilot.press("2")
            assert app.query_one("#views", TabbedContent).active == "backends"
            await select_backend(app, pilot, "198.18.2.7")
            await pilot.press("d")
            await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
            await pilot.press("y")
            await until(lambda: d.backend("web", "198.18.2.7")["state"] == "drained", pilot)

        run(app, scenario)
    finally:
        d.stop()


def test_rows_off_screen_catch_up_when_scrolled_into_view(tmp_path: Path) -> None:
    """Large tables update only the rows on screen; the others are current once shown."""
    d = AgentDouble(str(tmp_path / "big.sock"), backends=300, tick=0.2).start()
    try:
        app = XlbConsole([d.path])
        far = "198.18.3.40"  # backend 290: far below the first screen

        async def scenario(pilot: Any) -> None:
            await select_backend(app, pilot, "198.18.2.1")
            with d.lock:
                next(b for b in d.vips[0]["backends"] if b["address"] == far)["state"] = "drained"
            await until(lambda: any(r.address == far and r.state == "drained"
                                    for r in app.fleet.backend_rows(app.fleet.vips()[0])), pilot)
            d.stop()  # no more snapshots: only the scroll can bring the row up to date
            await pilot.pause(0.3)
            table = app.query_one("#be-table", DataTable)
            assert "drained" not in str(table.get_cell(far, "state"))  # off screen: not drawn
            table.move_cursor(row=table_keys(app, "#be-table").index(far), animate=False)
            await until(lambda: "drained" in str(table.get_cell(far, "state")), pilot)

        run(app, scenario)
    finally:
        d.stop()


def test_ipv6_labels_in_brackets_are_text_not_markup(double: AgentDouble) -> None:
    with double.lock:
        double.vips[0]["vip"] = "[fd00:5f1b:19::10]:80/tcp"
        double.vips[0]["backends"][0]["address"] = "fd00:5f1b:18:2::11"
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await select_backend(app, pilot, "fd00:5f1b:18:2::11")
        assert "[fd00:5f1b:19::10]:80/tcp" in str(app.query_one("#be-title", Static).render())
        await pilot.press("d")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        body = str(app.screen.query_one("#dialog-body", Static).render())
        assert "[fd00:5f1b:19::10]:80/tcp" in body and "fd00:5f1b:18:2::11" in body
        await pilot.press("y")
        await until(lambda: double.backend("web", "fd00:5f1b:18:2::11")["state"] == "drained",
                    pilot)

    run(app, scenario)


def test_alarms_show_in_the_header_and_in_full_on_the_overview(double: AgentDouble) -> None:
    """What was taken from under the agent is impossible to miss: a red header badge while
    it lasts, the whole story on the Overview, a quieter badge once it was put right."""
    message = "xlb's XDP program was detached from l0: VIP traffic fails"
    double.alarms = [{"what": "attach", "since": time.time() - 5, "message": message,
                      "active": True}]
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await until(lambda: "ALARM lb1: attach" in status(app), pilot)
        assert message in text(app, "#ov-summary")
        double.alarms = [{**double.alarms[0], "active": False}]
        await until(lambda: "lb1: attach restored" in status(app), pilot)
        assert "ALARM" not in status(app)

    run(app, scenario)


def test_non_syn_misses_show_on_the_overview_and_stand_out_when_they_last(
        double: AgentDouble) -> None:
    """TCP non-SYN misses/s (flows whose state was lost) are on the Overview beside the SYN
    ones; once they have stayed above zero for a while they are highlighted."""
    from rich.text import Text

    from console.model import LOST_STATE_SECONDS
    from console.views.base import theme_colour

    double.non_syn_misses = 25.0
    app = XlbConsole([double.path])

    def line() -> str:
        return next((x for x in text(app, "#ov-summary").splitlines() if "Misses" in x), "")

    def highlighted() -> bool:
        content = app.query_one("#ov-summary", Static).content
        assert isinstance(content, Text)
        warning = theme_colour(app.current_theme, "warning")
        start = content.plain.find("non-SYN")
        return any(s.start <= start < s.end and warning in str(s.style) for s in content.spans)

    async def scenario(pilot: Any) -> None:
        await until(lambda: "non-SYN     25/s" in line(), pilot)
        assert "SYN " in line() and "without state" not in line() and not highlighted()
        app.fleet.instances["lb1"].non_syn_since = time.time() - LOST_STATE_SECONDS - 50
        await until(lambda: "flows without state for 1m" in line(), pilot)
        assert highlighted()
        double.non_syn_misses = 0.0
        await until(lambda: "non-SYN      0/s" in line(), pilot)
        assert "without state" not in line() and not highlighted()

    run(app, scenario)


def test_non_syn_misses_count_as_lasting_only_without_a_break(tmp_path: Path) -> None:
    from console.model import Fleet

    base = AgentDouble(str(tmp_path / "x.sock")).snapshot()
    fleet = Fleet(["x"])
    for t, rate in ((100.0, 0.0), (101.0, 3.0), (105.0, 2.0), (112.0, 1.0)):
        fleet.snapshot("x", {**base, "time": t,
                             "misses": {"tcp_syn": 9.0, "tcp_non_syn": rate, "udp": 0.0}})
    assert fleet.misses() == (9.0, 1.0, 11.0)  # above zero since 101
    fleet.snapshot("x", {**base, "time": 113.0,
                         "misses": {"tcp_syn": 9.0, "tcp_non_syn": 0.0, "udp": 0.0}})
    assert fleet.misses() == (9.0, 0.0, 0.0)
    fleet.snapshot("x", {**base, "time": 114.0,
                         "misses": {"tcp_syn": 9.0, "tcp_non_syn": 4.0, "udp": 0.0}})
    assert fleet.misses() == (9.0, 4.0, 0.0)  # a new stretch starts now
