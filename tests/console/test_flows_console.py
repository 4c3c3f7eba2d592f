"""The Flows view (key 5) driven by Pilot against AgentDouble, whose trace (tests/
trace_double.py) makes synthetic events at a chosen rate and checks filters with the real
filter language."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual.widgets import Input, Static

from console.app import XlbConsole
from console.dialogs.explain import ExplainScreen
from console.dialogs.help import HelpScreen
from console.dialogs.sample import SampleScreen
from console.tracefeed import BUFFER
from console.views.eventlist import EventList
from console.views.flows import FRAME, Flows
from tests.agent_double import AgentDouble
from tests.console.test_console import run, text
from tests.helpers import until


def rows(app: XlbConsole) -> list[dict[str, str]]:
    """The Flows table's rows as shown (column -> cell text), top first."""
    table = app.query_one("#fl-list", EventList)
    return [{name: c[0] for name, c in zip(table.columns, table.row_cells(k), strict=True)}
            for k in table.keys]


def column(app: XlbConsole, name: str) -> list[str]:
    return [r[name] for r in rows(app)]


async def type_into(pilot: Any, text_: str) -> None:
    for ch in text_:
        await pilot.press({" ": "space", "/": "slash", ":": "colon", ".": "full_stop"}.get(
            ch, ch))


async def flows(app: XlbConsole, pilot: Any, n: int = 1) -> None:
    await pilot.press("5")
    await until(lambda: len(app.query_one("#fl-list", EventList).keys) >= n, pilot)


def test_the_live_trace_is_shown_newest_first_with_its_figures(double: AgentDouble) -> None:
    double.tracer.start("", 300, "alice")
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await flows(app, pilot, 20)
        keys = app.query_one("#fl-list", EventList).keys
        assert keys == sorted(keys, reverse=True)
        times = column(app, "time (UTC)")
        assert times == sorted(times, reverse=True)
        assert "● every packet" in text(app, "#fl-title") and "by alice" in text(
            app, "#fl-title")
        assert "stops in 4m" in text(app, "#fl-title")
        await until(lambda: "0/s shown here" not in text(app, "#fl-figures"), pilot)
        assert "events/s traced" in text(app, "#fl-figures")
        # what a row says, in the double's words
        first = rows(app)[-1]
        assert first["destination"].endswith(":80/tcp") and first["source"].startswith("198.18.0.")
        assert {"hit", "new SYN"} <= set(column(app, "path"))
        assert "kernel NO_SOCKET" in column(app, "verdict") or len(keys) < 97

    run(app, scenario)


def test_a_bad_filter_is_shown_inline_at_its_word_and_starts_nothing(
        double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("5")
        await until(lambda: "no trace runs" in text(app, "#fl-title"), pilot)
        await pilot.press("slash")
        box = app.query_one("#fl-filter", Input)
        await until(lambda: box.has_focus, pilot)
        await type_into(pilot, "dport 80 and src foo")
        await pilot.press("enter")
        await until(lambda: app.query_one("#fl-error").display, pilot)
        error = text(app, "#fl-error")
        assert "got 'foo'" in error and "dport 80 and src foo" in error
        assert box.display and box.value == "dport 80 and src foo"  # kept for the fix
        assert not double.tracer.status["running"]
        assert "no trace runs" in text(app, "#fl-title")
        # the word is marked where the agent points (its column), not by guesswork
        marked = app.query_one("#view-flows", Flows).error_text
        spans = [marked.plain[s.start:s.end] for s in marked.spans if "reverse" in str(s.style)]
        assert spans == ["foo"]
        await pilot.press("escape")
        assert not box.display and not app.query_one("#fl-error").display

    run(app, scenario)


def test_a_filter_starts_the_trace_and_only_its_flows_appear(double: AgentDouble) -> None:
    double.tracer.rate = 200.0
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("5")
        await pilot.press("slash")
        await type_into(pilot, "src 198.18.0.12")
        await pilot.press("enter")
        await until(lambda: double.tracer.status["running"], pilot)
        assert ("trace_start", {"filter": "src 198.18.0.12"}) in double.calls
        await until(lambda: len(rows(app)) >= 5, pilot)
        assert {r.split(":")[0] for r in column(app, "source")} == {"198.18.0.12"}
        assert not app.query_one("#fl-filter").display
        assert "src 198.18.0.12" in text(app, "#fl-title")

    run(app, scenario)


def test_space_pauses_the_table_and_resumes_it(double: AgentDouble) -> None:
    double.tracer.rate = 100.0
    double.tracer.start("", 300, "alice")
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await flows(app, pilot, 5)
        await pilot.press("space")
        frozen = list(app.query_one("#fl-list", EventList).keys)
        seq = app.fleet.trace.seq
        await until(lambda: app.fleet.trace.seq > seq + 20, pilot)
        await pilot.pause(0.5)
        assert app.query_one("#fl-list", EventList).keys == frozen
        assert "PAUSED" in text(app, "#fl-figures") and "new events" in text(
            app, "#fl-figures")
        assert double.tracer.status["running"]  # pausing the table is not stopping the trace
        await pilot.press("space")
        await until(lambda: app.query_one("#fl-list", EventList).keys[0] > frozen[0], pilot)
        assert "PAUSED" not in text(app, "#fl-figures")

    run(app, scenario)


def test_sampling_restarts_the_trace_with_the_same_filter(double: AgentDouble) -> None:
    double.tracer.start("dport 80 and sample 4", 300, "alice")
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("5")
        await until(lambda: "● dport 80" in text(app, "#fl-title"), pilot)
        await pilot.press("s")
        await until(lambda: isinstance(app.screen, SampleScreen), pilot)
        box = app.screen.query_one("#sample-input", Input)
        assert box.value == "4"
        box.value = "0"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert "1..1000000" in str(app.screen.query_one("#sample-error").render())
        assert isinstance(app.screen, SampleScreen)  # refused here, nothing sent
        box.value = "25"
        await pilot.press("enter")
        await until(lambda: double.tracer.status["sample"] == 25, pilot)
        assert double.tracer.status["filter"] == "dport 80 and sample 25"
        assert ("trace_start", {"filter": "dport 80 and sample 25"}) in double.calls

    run(app, scenario)


def test_x_stops_the_trace(double: AgentDouble) -> None:
    double.tracer.start("", 300, "alice")
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await flows(app, pilot)
        await pilot.press("x")
        await until(lambda: not double.tracer.status["running"], pilot)
        await until(lambda: "no trace runs" in text(app, "#fl-title"), pilot)
        assert len(rows(app)) > 0  # what was traced stays to be read

    run(app, scenario)


def test_e_explains_a_typed_flow_and_refuses_a_bad_one_inline(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("5")
        await pilot.press("e")
        await until(lambda: isinstance(app.screen, ExplainScreen), pilot)
        box = app.screen.query_one("#explain-input", Input)
        box.value = "foo 198.19.0.10:80"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert "'foo' is not an IP address" in str(app.screen.query_one(
            "#explain-error").render())
        assert not [c for c in double.calls if c[0] == "explain"]
        box.value = "198.18.0.12:40000 198.19.0.10:80 tcp syn"
        await pilot.press("enter")
        body = app.screen.query_one("#explain-body", Static)
        await until(lambda: "⇒ TX" in str(body.render()), pilot)
        assert ("explain", {"src": "198.18.0.12", "sport": 40000, "dst": "198.19.0.10",
                            "dport": 80, "protocol": "tcp", "syn": True}) in double.calls
        lines = str(body.render()).splitlines()
        assert lines[0] == "lb1: 198.18.0.12:40000 -> 198.19.0.10:80/tcp"
        assert [ln.split()[0] for ln in lines[1:-1]] == [
            "vip", "service", "connection", "hash", "maglev", "backend", "encap", "verdict"]
        box.value = "[fd00::12] 198.19.0.99:80 udp"
        await pilot.press("enter")
        await until(lambda: "not a VIP" in str(body.render()), pilot)

    run(app, scenario)


def test_enter_explains_the_selected_events_flow(double: AgentDouble) -> None:
    double.tracer.start("dport 80", 300, "alice")
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await flows(app, pilot, 4)
        await pilot.press("space")  # hold the rows still to pick one
        table = app.query_one("#fl-list", EventList)
        table.focus()
        await pilot.press("down", "down")
        row = rows(app)[2]
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ExplainScreen), pilot)
        dst, proto = row["destination"].split("/")
        assert app.screen.query_one("#explain-input", Input).value == (
            f"{row['source']} {dst} {proto}")
        body = app.screen.query_one("#explain-body", Static)
        await until(lambda: "⇒" in str(body.render()), pilot)
        assert f"backend {row['backend']}" in str(body.render())  # the backend the event went to

    run(app, scenario)


def test_read_only_users_watch_but_cannot_start_or_stop(tmp_path: Path) -> None:
    d = AgentDouble(str(tmp_path / "ro.sock"), operator=False).start()
    d.tracer.start("", 300, "alice")
    try:
        app = XlbConsole([d.path])

        async def scenario(pilot: Any) -> None:
            await until(lambda: "READ-ONLY" in text(app, "#status"), pilot)
            await flows(app, pilot, 3)
            assert "watching (read-only)" in text(app, "#fl-title")
            for key in ("slash", "s", "x"):
                await pilot.press(key)
            await pilot.pause(0.3)
            assert not app.query_one("#fl-filter").display
            assert not isinstance(app.screen, SampleScreen)
            assert not [c for c in d.calls if c[0] in ("trace_start", "trace_stop")]
            assert d.tracer.status["running"]
            await pilot.press("space")  # pausing is the console's own business
            assert app.query_one("#view-flows", Flows).paused
            await pilot.press("e")  # explaining changes nothing: allowed
            await until(lambda: isinstance(app.screen, ExplainScreen), pilot)

        run(app, scenario)
    finally:
        d.stop()


def test_help_lists_the_flows_keys(double: AgentDouble) -> None:
    app = XlbConsole([double.path])

    async def scenario(pilot: Any) -> None:
        await pilot.press("5")
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), pilot)
        body = str(app.screen.query_one("#help-body", Static).render())
        for key in ("/", "space", "s", "x", "e", "enter"):
            assert any(line.split()[0] == key for line in body.splitlines()
                       if line.startswith("  ") and line.split()), key
        assert "sample N" in body and "re-pick" in body

    run(app, scenario)


def test_the_trace_is_followed_only_while_flows_is_shown(double: AgentDouble) -> None:
    double.tracer.start("", 300, "alice")
    app = XlbConsole([double.path])

    def subscriptions() -> int:
        return sum(1 for c in double.calls if c[0] == "trace_subscribe")

    async def scenario(pilot: Any) -> None:
        await pilot.pause(0.5)
        assert subscriptions() == 0 and not app.tracing.links
        await flows(app, pilot)
        assert subscriptions() == 1 and list(app.tracing.links) == [double.path]
        await pilot.press("1")
        assert not app.tracing.links
        seq = app.fleet.trace.seq
        await pilot.pause(0.5)
        assert app.fleet.trace.seq == seq  # nothing arrives while another view is shown
        await pilot.press("5")
        await until(lambda: subscriptions() == 2, pilot)

    run(app, scenario)


def test_thousands_of_events_a_second_stay_bounded_and_keys_answer(
        double: AgentDouble) -> None:
    """The double writes 4000 events/s (the Pilot test shares one process with it); the
    feed and the table stay at BUFFER rows, the rows are redrawn at most 1/FRAME times a
    second, and keys still work. bench/console.py measures 10,000/s and the times."""
    double.tracer.rate = 4000.0
    double.tracer.start("", 300, "alice")
    app = XlbConsole([double.path])
    draws = 0
    view: Flows | None = None

    async def scenario(pilot: Any) -> None:
        nonlocal draws, view
        view = app.query_one("#view-flows", Flows)
        real = view.draw_rows

        def counted(fleet: Any, shown: Any) -> None:
            nonlocal draws
            draws += 1
            real(fleet, shown)

        view.draw_rows = counted  # type: ignore[method-assign]
        await flows(app, pilot, 100)
        await until(lambda: app.fleet.trace.seq > 3 * BUFFER, pilot, timeout=30)
        t0, d0 = time.monotonic(), draws
        await pilot.pause(2.0)
        per_s = (draws - d0) / (time.monotonic() - t0)
        assert per_s <= 1 / FRAME + 0.5  # the double's snapshots come 5 times a second too
        assert len(app.query_one("#fl-list", EventList).keys) == BUFFER
        assert len(app.fleet.trace.newest()) == BUFFER
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), pilot)

    run(app, scenario)


def test_a_new_theme_recolours_the_rows_already_drawn(double: AgentDouble) -> None:
    double.tracer.start("", 300, "alice")
    app = XlbConsole([double.path])

    def verdict_colour() -> str:
        table = app.query_one("#fl-list", EventList)
        return str(table.row_cells(table.keys[-1])[list(table.columns).index("verdict")][1])

    async def scenario(pilot: Any) -> None:
        await flows(app, pilot, 3)
        await pilot.press("space")  # the same rows before and after
        before = verdict_colour()
        await pilot.press("t")
        await until(lambda: verdict_colour() != before, pilot)
        assert app.theme != "xlb-dark"

    run(app, scenario)
