"""The mode keys driven by Pilot against the agent double: `m` switches the selected
VIP's forwarding mode (Overview and Backends), `x` the XDP mode (every view but Flows,
where x stops the trace); each asks first in a dialog that says what happens; the
agent's refusals come back as notifications; a read-only console cannot; the Overview
and the Backends view show the modes and their figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import Static

from console.app import XlbConsole
from console.dialogs import HelpScreen
from console.dialogs.mode import ModeScreen
from console.views.flows import Flows
from tests.agent_double import AgentDouble
from tests.console.test_console import run, status, table_keys, text
from tests.helpers import until


def dialog_text(app: XlbConsole) -> str:
    """Everything the mode dialog says, one widget a line."""
    return "\n".join(str(w.render()) for w in app.screen.query("#dialog Label, #dialog Static"))


def notes(app: XlbConsole) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def calls(double: AgentDouble, method: str) -> list[dict[str, Any]]:
    return [p for name, p in double.calls if name == method]


def vip_mode(double: AgentDouble, name: str) -> str:
    with double.lock:
        return str(next(v for v in double.vips if v["name"] == name).get("mode", "dsr"))


# -- m: a VIP's forwarding mode ---------------------------------------------------------
def test_m_on_backends_asks_in_words_then_switches_the_vip(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("2")
        await until(lambda: "Mode DSR" in text(app, "#be-title"), pilot)
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, ModeScreen), pilot)
        said = dialog_text(app)
        assert "VIP web (198.19.0.10:80/tcp) on lb1" in said
        assert "DSR\n→\nSNAT" in said                         # from, to
        assert "keep DSR until they close: none is reset or moved" in said
        assert "198.19.1.0/28, ports 1024-65535" in said      # what the backends will see
        assert "SNAT flows die with this LB" in said           # failover
        await pilot.press("y")
        await until(lambda: vip_mode(double, "web") == "snat", pilot)
        assert calls(double, "mode") == [{"vip": "web", "mode": "snat"}]
        await until(lambda: "Mode SNAT" in text(app, "#be-title"), pilot)
        await until(lambda: any("new flows SNAT; established flows keep DSR" in n
                                for n in notes(app)), pilot)
        assert double.audit[-1]["action"] == "mode"
        # and back: the dialog now says what DSR means for the SNAT flows still open
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, ModeScreen), pilot)
        said = dialog_text(app)
        assert "SNAT\n→\nDSR" in said and "keep SNAT until they close" in said
        assert "IP-in-IP" in said
        await pilot.press("y")
        await until(lambda: vip_mode(double, "web") == "dsr", pilot)

    run(app, scenario)


def test_m_cancelled_changes_nothing(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("2", "m")
        await until(lambda: isinstance(app.screen, ModeScreen), pilot)
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, ModeScreen), pilot)
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, ModeScreen), pilot)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert calls(double, "mode") == [] and vip_mode(double, "web") == "dsr"
        assert any("cancelled: nothing changed" in n for n in notes(app))

    run(app, scenario)


def test_m_on_the_overview_acts_on_the_vip_marked_there(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await until(lambda: "▸" in text(app, "#ov-vips"), pilot)
        marked = [line for line in text(app, "#ov-vips").splitlines() if "▸" in line]
        assert len(marked) == 1 and "web" in marked[0] and "DSR" in marked[0]
        await pilot.press("v")  # the next VIP: dns, on the Overview and in Backends alike
        await until(lambda: "▸✓ dns" in text(app, "#ov-vips"), pilot)
        await pilot.press("m")
        await until(lambda: isinstance(app.screen, ModeScreen), pilot)
        assert "VIP dns (198.19.0.11:53/udp) on lb1" in dialog_text(app)
        await pilot.press("y")
        await until(lambda: vip_mode(double, "dns") == "snat", pilot)
        await until(lambda: "SNAT" in next(line for line in text(app, "#ov-vips").splitlines()
                                           if "dns" in line), pilot)
        assert vip_mode(double, "web") == "dsr"
        await until(lambda: "LB mode DSR+SNAT" in text(app, "#ov-summary"), pilot)

    run(app, scenario)


def test_a_refusal_is_a_notification_with_the_agents_words(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "lb1.sock"))
    d.snat["pool_v4"] = None
    d.start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await pilot.press("2", "m")
            await until(lambda: isinstance(app.screen, ModeScreen), pilot)
            # the dialog warns before asking; the agent still decides
            assert "lb1 has no IPv4 SNAT pool ([instance] snat_pool_v4): the agent will " \
                   "refuse" in dialog_text(app)
            await pilot.press("y")
            await until(lambda: any(n.startswith("refused: VIP web to SNAT on lb1: ")
                                    and "snat needs instance.snat_pool_v4" in n
                                    for n in notes(app)), pilot)
            assert vip_mode(d, "web") == "dsr" and app.screen is app.screen_stack[0]

        run(app, scenario)
    finally:
        d.stop()


def test_an_agent_gone_is_a_notification_not_a_traceback(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("2", "m")
        await until(lambda: isinstance(app.screen, ModeScreen), pilot)
        double.stop()
        await pilot.press("y")
        await until(lambda: any(n.startswith("refused: VIP web to SNAT on lb1:")
                                for n in notes(app)), pilot)
        assert app.is_running

    run(app, scenario)


# -- x: the XDP mode --------------------------------------------------------------------
def test_x_switches_the_xdp_mode_and_says_the_gap(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await until(lambda: "XDP native on veth-lb1" in text(app, "#ov-summary"), pilot)
        await pilot.press("x")
        await until(lambda: isinstance(app.screen, ModeScreen), pilot)
        said = dialog_text(app)
        assert "lb1 on veth-lb1\nnative\n→\ngeneric" in said
        assert "go to the kernel's own path; connections survive" in said
        assert "every map stays" in said
        await pilot.press("y")
        await until(lambda: double.xdp_mode == "generic", pilot)
        assert calls(double, "xdp_mode") == [{"mode": "generic"}]
        await until(lambda: any("XDP generic on veth-lb1 (was native); gap 4.2 ms" in n
                                for n in notes(app)), pilot)
        await until(lambda: "XDP generic on veth-lb1" in text(app, "#ov-summary"), pilot)
        # from another view, back to native
        await pilot.press("3", "x")
        await until(lambda: isinstance(app.screen, ModeScreen), pilot)
        assert "generic\n→\nnative" in dialog_text(app)
        await pilot.press("y")
        await until(lambda: double.xdp_mode == "native", pilot)

    run(app, scenario)


def test_x_does_not_offer_native_to_a_driver_without_it(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "lb1.sock"))
    d.xdp_mode, d.xdp_native = "generic", False
    d.start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await until(lambda: "XDP generic on veth-lb1 (driver has no native XDP)"
                        in text(app, "#ov-summary"), pilot)
            await pilot.press("x")
            await until(lambda: any("the driver of veth-lb1 has no native XDP" in n
                                    for n in notes(app)), pilot)
            assert not isinstance(app.screen, ModeScreen)
            assert calls(d, "xdp_mode") == []

        run(app, scenario)
    finally:
        d.stop()


def test_x_warns_when_the_kernel_does_not_say_whether_native_works(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "lb1.sock"))
    d.xdp_mode, d.xdp_native = "generic", None
    d.start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await until(lambda: "XDP generic on veth-lb1" in text(app, "#ov-summary"), pilot)
            assert "driver has no native" not in text(app, "#ov-summary")
            await pilot.press("x")
            await until(lambda: isinstance(app.screen, ModeScreen), pilot)
            assert "if the attach fails, the agent puts generic back" in dialog_text(app)

        run(app, scenario)
    finally:
        d.stop()


def test_x_in_the_flows_view_still_stops_the_trace(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("5")
        await until(lambda: isinstance(app.current_view(), Flows), pilot)
        assert app.check_action("xdp_mode", ()) is False
        assert app.check_action("stop_trace", ()) is True
        await pilot.press("x")
        await until(lambda: calls(double, "trace_stop"), pilot)
        assert not isinstance(app.screen, ModeScreen) and calls(double, "xdp_mode") == []
        await pilot.press("1")
        assert app.check_action("xdp_mode", ()) is True
        assert app.check_action("stop_trace", ()) is False

    run(app, scenario)


def test_x_with_several_instances_asks_to_focus_one(tmp_path: Path) -> None:
    ds = [AgentDouble(str(tmp_path / f"{n}.sock"), n).start() for n in ("lb1", "lb2")]
    try:
        app = XlbConsole([d.path for d in ds])

        async def scenario(pilot: Any) -> None:
            await until(lambda: len(app.fleet.instances) == 2, pilot)
            await pilot.press("x")
            await until(lambda: any("focus one first (i)" in n for n in notes(app)), pilot)
            assert not isinstance(app.screen, ModeScreen)
            await pilot.press("i", "i")  # lb2 alone
            await pilot.press("x")
            await until(lambda: isinstance(app.screen, ModeScreen), pilot)
            assert "lb2 on veth-lb1" in dialog_text(app)
            await pilot.press("y")
            await until(lambda: ds[1].xdp_mode == "generic", pilot)
            assert ds[0].xdp_mode == "native" and calls(ds[0], "xdp_mode") == []

        run(app, scenario)
    finally:
        for d in ds:
            d.stop()


# -- read-only ---------------------------------------------------------------------------
def test_read_only_consoles_cannot_switch_modes(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "ro.sock"), operator=False).start()
    try:
        for flag in (True, False):  # --read-only, and read-only credentials
            app = XlbConsole([d.path], read_only=flag)

            async def scenario(pilot: Any, app: XlbConsole = app) -> None:
                await until(lambda: "READ-ONLY" in status(app), pilot)
                for view in ("1", "2"):
                    await pilot.press(view)
                    assert app.check_action("mode", ()) is None      # greyed out
                    assert app.check_action("xdp_mode", ()) is None
                    await pilot.press("m", "x")
                    await pilot.pause(0.2)
                    assert not isinstance(app.screen, ModeScreen)
                app.modes.vip(app.fleet.vips()[0])   # as the palette would, were it offered
                await until(lambda: isinstance(app.screen, ModeScreen), pilot)
                await pilot.press("y")
                await until(lambda: any("read-only" in n for n in notes(app)), pilot)
                titles = [c.title for c in app.get_system_commands(app.screen)]
                assert not [t for t in titles if "mode of" in t.lower()]
                await pilot.press("2", "question_mark")
                await until(lambda: isinstance(app.screen, HelpScreen), pilot)
                help_text = str(app.screen.query_one("#help-body", Static).render())
                assert "Read-only: d, u, w, m and x are disabled." in help_text

            run(app, scenario)
        # the keys sent nothing; the one call made past them was refused by the agent
        assert calls(d, "mode") == [{"vip": "web", "mode": "snat"}]  # the credentials' run
        assert calls(d, "xdp_mode") == [] and vip_mode(d, "web") == "dsr"
    finally:
        d.stop()


# -- what the views show -----------------------------------------------------------------
def test_the_views_show_each_vips_mode_and_the_figures_by_mode(tmp_path: Path) -> None:
    """After a switch both modes carry traffic (established flows keep theirs)."""
    d = AgentDouble(str(tmp_path / "lb1.sock"))
    d.vips[0].update(mode="snat", snat_share=0.25, no_port=7)
    d.start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await until(lambda: "SNAT" in text(app, "#ov-vips"), pilot)
            lines = text(app, "#ov-vips").splitlines()
            assert "SNAT" in next(x for x in lines if "web" in x)
            assert "DSR" in next(x for x in lines if "dns" in x)
            summary = text(app, "#ov-summary")
            assert "LB mode DSR+SNAT" in summary
            modes = next(x for x in summary.splitlines() if x.startswith("Modes"))
            assert "SNAT " in modes and "replies" in modes and "no port 7" in modes
            web = app.fleet.vip_doc(app.fleet.vips()[0])
            assert web is not None and web["modes"]["dsr_pps"] > 0 < web["modes"]["snat_pps"]
            await pilot.press("2")
            await until(lambda: "Mode SNAT" in text(app, "#be-title"), pilot)
            title = text(app, "#be-title")
            assert "VIP web  198.19.0.10:80/tcp" in title and "\nMode SNAT │ DSR " in title
            assert "no port 7" in title and "new/s" in title
            await pilot.press("question_mark")
            await until(lambda: isinstance(app.screen, HelpScreen), pilot)
            help_text = str(app.screen.query_one("#help-body", Static).render())
            assert "switch the VIP's mode, DSR ↔ SNAT" in help_text
            assert "XDP mode native ↔ generic, asks first (Flows: stop trace)" in help_text

        run(app, scenario)
    finally:
        d.stop()


def test_the_snat_reasons_show_in_the_drops_view(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "lb1.sock")).start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await pilot.press("3")
            await until(lambda: "tx_snat" in table_keys(app, "#dr-table"), pilot)
            keys = table_keys(app, "#dr-table")
            for reason in ("tx_snat", "tx_snat_reply", "drop_snat_no_port",
                           "drop_snat_flow_limit", "drop_snat_no_entry"):
                assert reason in keys, reason

        run(app, scenario)
    finally:
        d.stop()
