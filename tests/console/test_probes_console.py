"""The Probes view, the kernel half of Drops and the Overview's probe figures, driven by
Pilot against AgentDouble (which reports the probes as this lab kernel has them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import DataTable, Static

from console.app import XlbConsole
from console.dialogs import ConfirmScreen, ExamplesScreen, HelpScreen
from console.model import napi_exhaustion, softirq_percent
from tests.agent_double import AgentDouble
from tests.console.test_console import run, table_keys, text
from tests.helpers import until


def cell(app: XlbConsole, table: str, row: str, col: str) -> str:
    return str(app.query_one(table, DataTable).get_cell(row, col))


async def select_row(app: XlbConsole, pilot: Any, table: str, key: str) -> None:
    await until(lambda: key in table_keys(app, table), pilot)
    t = app.query_one(table, DataTable)
    t.focus()
    t.move_cursor(row=table_keys(app, table).index(key))
    await pilot.pause()


def test_probes_view_lists_every_probe_live_with_its_cost(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("6")
        await until(lambda: len(table_keys(app, "#pr-table")) == 6, pilot)
        assert table_keys(app, "#pr-table")[0] == "lb1/drops"
        assert cell(app, "#pr-table", "lb1/drops", "target") == "skb:kfree_skb"
        assert "attached" in cell(app, "#pr-table", "lb1/drops", "state")
        assert cell(app, "#pr-table", "lb1/drops", "ns/run").strip() == "135"
        assert "fallback" in cell(app, "#pr-table", "lb1/tcp", "state")
        # the fallback is said in the probe manager's words, with what replaces the kprobe
        notes = text(app, "#pr-notes")
        assert "no kprobes" in notes and "using tracepoint tcp:tcp_send_reset" in notes

    run(app, scenario)


def test_a_long_target_seen_once_never_pushes_the_state_off_screen(
        double: AgentDouble, monkeypatch: Any) -> None:
    """While probes attach, the agent may name a long target (xdp lists every tracepoint
    it tries); a DataTable column never narrows again, so the state must not sit after it."""
    from tests import agent_double
    long = ("tracepoint", "xdp:xdp_exception, xdp:xdp_redirect_err, xdp:xdp_redirect_map_err "
            "(xdp_redirect_map_err: not in this kernel)", "XDP errors")
    monkeypatch.setitem(agent_double.PROBE_DOCS, "xdp", long)
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("6")
        await until(lambda: len(table_keys(app, "#pr-table")) == 6, pilot)
        await until(lambda: "xdp_exception" in cell(app, "#pr-table", "lb1/xdp", "target"), pilot)
        table = app.query_one("#pr-table", DataTable)
        upto_state = 0
        for key, column in table.columns.items():
            upto_state += column.get_render_width(table)
            if key == "state":
                break
        assert upto_state <= table.size.width, (upto_state, table.size.width)

    run(app, scenario)


def test_enter_detaches_after_a_yes_and_attaches_at_once(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("6")
        await select_row(app, pilot, "#pr-table", "lb1/napi")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("n")
        await pilot.pause(0.3)
        assert double.probe_states["napi"] == "attached"
        assert not [c for c in double.calls if c[0] == "probe_detach"]
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ConfirmScreen), pilot)
        await pilot.press("y")
        await until(lambda: double.probe_states["napi"] == "off", pilot)
        assert ("probe_detach", {"name": "napi"}) in double.calls
        await until(lambda: "off" in cell(app, "#pr-table", "lb1/napi", "state"), pilot)
        assert cell(app, "#pr-table", "lb1/napi", "ns/run").strip() == "–"
        await pilot.press("enter")  # attaching asks nothing
        await until(lambda: double.probe_states["napi"] == "attached", pilot)
        assert not isinstance(app.screen, ConfirmScreen)

    run(app, scenario)


def test_read_only_console_cannot_toggle_probes(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "ro.sock"), operator=False).start()
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await until(lambda: "READ-ONLY" in text(app, "#status"), pilot)
            await pilot.press("6")
            await select_row(app, pilot, "#pr-table", "lb1/drops")
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert not isinstance(app.screen, ConfirmScreen)
            await select_row(app, pilot, "#pr-table", "lb1/drops")
            d.probe_states["softirq"] = "off"
            await select_row(app, pilot, "#pr-table", "lb1/softirq")
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert not [c for c in d.calls if c[0].startswith("probe_")]
            assert any("read-only" in n.message for n in app._notifications)

        run(app, scenario)
    finally:
        d.stop()


def test_an_agent_refusal_is_one_line(double: AgentDouble, monkeypatch: Any) -> None:
    app = XlbConsole([double.path])

    def refuse(method: str, probe: str) -> Any:
        from xlb.errors import RefusedError
        raise RefusedError("probe napi unavailable: no tracefs event napi:napi_poll\n"
                           "details follow")

    monkeypatch.setattr(double, "_probe_change", refuse)

    async def scenario(pilot: Any) -> None:
        double.probe_states["napi"] = "off"
        await pilot.press("6")
        await select_row(app, pilot, "#pr-table", "lb1/napi")
        await pilot.press("enter")
        await until(lambda: any("napi:napi_poll" in n.message for n in app._notifications),
                    pilot)
        msg = next(n.message for n in app._notifications if "napi:napi_poll" in n.message)
        assert "\n" not in msg and "details follow" not in msg

    run(app, scenario)


def test_probes_help_explains_each_probe_from_the_agent(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("6")
        await until(lambda: table_keys(app, "#pr-table"), pilot)
        double.probe_states["xdp"] = "off"  # the doc comes from the snapshot, whatever state
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), pilot)
        body = str(app.screen.query_one("#help-body", Static).render())
        for line in ("packets the kernel dropped, by its drop reason",
                     "XDP programs that aborted or failed a redirect",
                     "run time of every BPF program on the host"):
            assert line in body

    run(app, scenario)


def test_drops_view_has_kernel_reasons_and_xdp_exceptions(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("3")
        await until(lambda: table_keys(app, "#dr-kernel") == ["NO_SOCKET", "TCP_CSUM",
                                                             "IP_NOPROTO"], pilot)
        assert "▲ NO_SOCKET" in cell(app, "#dr-kernel", "NO_SOCKET", "kernel reason")
        assert "▲" not in cell(app, "#dr-kernel", "TCP_CSUM", "kernel reason")
        assert cell(app, "#dr-kernel", "TCP_CSUM", "LB share").strip() == "50 %"
        assert "top reason: NO_SOCKET" in text(app, "#dr-kernel-title")
        xdp = table_keys(app, "#dr-xdp")
        assert len(xdp) == 1 and "veth-lb1" in xdp[0] and "ABORTED" in xdp[0]
        assert "drop_no_backend" in table_keys(app, "#dr-table")  # today's verdicts stay
        double.probe_states["drops"] = "off"
        await until(lambda: "not attached" in text(app, "#dr-kernel-title"), pilot)
        assert table_keys(app, "#dr-kernel") == []

    run(app, scenario)


def test_enter_on_a_kernel_reason_shows_its_example_packets(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("3")
        await select_row(app, pilot, "#dr-kernel", "TCP_CSUM")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ExamplesScreen), pilot)
        assert "TCP_CSUM" in str(app.screen.query_one("#dialog-title").render())
        body = str(app.screen.query_one("#examples-body", Static).render())
        assert "udp" in body and "10.0.0.2:40000 → 198.19.0.11:9999" in body
        assert body.count("→") == 3
        await pilot.press("escape")
        await until(lambda: not isinstance(app.screen, ExamplesScreen), pilot)

    run(app, scenario)


def test_overview_marks_napi_budget_exhaustion_and_net_rx_softirq(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await until(lambda: "◆ NAPI" in text(app, "#ov-queues"), pilot)
        marked = [ln for ln in text(app, "#ov-queues").splitlines() if "◆ NAPI" in ln]
        assert len(marked) == 1 and marked[0].strip().startswith("q1")  # the hot queue
        assert "60%" in marked[0]
        assert "si: NET_RX, probe" in text(app, "#ov-cpus") and "si  12%" in text(app, "#ov-cpus")
        double.probe_states["napi"] = double.probe_states["softirq"] = "off"
        await until(lambda: "si: all softirqs, psutil" in text(app, "#ov-cpus"), pilot)
        assert "◆ NAPI" not in text(app, "#ov-queues")
        assert "si  17%" in text(app, "#ov-cpus")  # the double's psutil figure for cpu1

    run(app, scenario)


def test_napi_ids_of_the_lb_interface_map_to_queues_in_id_order() -> None:
    snap: Any = {"interface": "eth0", "cpus": [{"busy": 1.0, "softirq": 2.0}],
                 "kernel": {"softirq": [], "napi": [
                     {"device": "eth0", "napi_id": 9, "cpu": 1, "budget_exhausted": 0.5},
                     {"device": "eth0", "napi_id": 9, "cpu": 0, "budget_exhausted": 0.1},
                     {"device": "lo", "napi_id": 1, "cpu": 0, "budget_exhausted": 0.9},
                     {"device": "eth0", "napi_id": 3, "cpu": 0, "budget_exhausted": 0.0}]}}
    assert napi_exhaustion(snap) == [0.0, 0.5]
    assert softirq_percent(snap) == ([2.0], "psutil")
    snap["kernel"]["softirq"] = [{"cpu": 1, "percent": 30.0}]
    assert softirq_percent(snap) == ([0.0, 30.0], "NET_RX")
