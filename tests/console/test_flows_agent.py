"""The Flows view against a real agent (root: its data plane on a veth in a namespace made
here): a filter typed in the console starts the agent's trace, the traffic of the filtered
client shows and no other, and enter on an event explains its flow from the pinned maps,
naming the backend the packet really went to."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from textual.widgets import Input, Static

from console.app import XlbConsole
from console.dialogs.explain import ExplainScreen
from console.views.eventlist import EventList
from tests.agent.test_agent import PROBES_OFF, AgentProc, running_agent
from tests.agent.test_trace import TRACE_SETTINGS, frames, send
from tests.console.test_console import run, text
from tests.console.test_flows_console import column, rows, type_into
from tests.helpers import until


@pytest.fixture
def agent(roots: tuple[str, str]) -> Iterator[AgentProc]:
    yield from running_agent(roots, "none", probes=PROBES_OFF + TRACE_SETTINGS)


def test_the_console_traces_one_client_and_explains_its_flow(agent: AgentProc) -> None:
    app = XlbConsole([agent.socket])

    async def scenario(pilot: Any) -> None:
        await pilot.press("5")
        await until(lambda: "no trace runs" in text(app, "#fl-title"), pilot, timeout=10)
        await pilot.press("slash")
        await type_into(pilot, "src 198.51.100.9 and dpor 80")  # a typo first
        await pilot.press("enter")
        await until(lambda: app.query_one("#fl-error").display, pilot, timeout=10)
        assert "'dpor'" in text(app, "#fl-error")
        assert "no trace runs" in text(app, "#fl-title")
        app.query_one("#fl-filter", Input).value = "src 198.51.100.9 and dport 80"
        await pilot.press("enter")
        await until(lambda: "● src 198.51.100.9 and dport 80" in text(app, "#fl-title"),
                    pilot, timeout=10)
        assert "by root" in text(app, "#fl-title")
        await asyncio.to_thread(  # pyroute2 runs an event loop of its own: not in this one
            lambda: send(frames("198.51.100.9", 4) + frames("198.51.100.8", 4)))
        await until(lambda: len(rows(app)) == 4, pilot, timeout=15)
        await pilot.pause(0.5)
        assert len(rows(app)) == 4  # the other client's packets never came
        assert {s.split(":")[0] for s in column(app, "source")} == {"198.51.100.9"}
        assert set(column(app, "path")) == {"new SYN"}
        assert set(column(app, "verdict")) == {"tx_encap"}
        table = app.query_one("#fl-list", EventList)
        table.focus()
        await pilot.press("down")
        backend = column(app, "backend")[1]
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, ExplainScreen), pilot)
        body = app.screen.query_one("#explain-body", Static)
        await until(lambda: "⇒" in str(body.render()), pilot, timeout=10)
        assert f"backend {backend}" in str(body.render()), str(body.render())
        await pilot.press("escape")
        await pilot.press("x")
        await until(lambda: "no trace runs" in text(app, "#fl-title"), pilot, timeout=10)

    run(app, scenario)
