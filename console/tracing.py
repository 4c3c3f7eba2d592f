"""The app's half of the Flows view: following the trace, starting, sampling, stopping it,
and explaining flows.

The app owns the links and the dialogs, so the view posts what it wants and
the app hands it here. The trace is followed (one TraceLink per agent) only
while the Flows view is shown: a console looking elsewhere costs the agents
nothing. Calls run in workers, never on the UI thread; an agent's refusal
of a filter goes back into the view's filter box.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual.app import App

from console.dialogs.explain import ExplainScreen
from console.dialogs.sample import SampleScreen
from console.draw import endpoint
from console.link import AgentLink, TraceLink
from console.model import Fleet
from console.views.flows import Flows, with_sample
from xlb.api.protocol import Explain, TraceEvent, TraceStatus
from xlb.errors import InvalidParams, XlbError


class Tracing:
    """`app` runs the workers and dialogs; `fleet`, `agents` and `redraw` are the app's
    model, links and coalesced redraw (this module does not know the app's class)."""

    def __init__(self, app: App[Any], fleet: Fleet, agents: dict[str, AgentLink],
                 redraw: Callable[[], None]):
        self.app, self.fleet, self.agents, self.redraw = app, fleet, agents, redraw
        self.links: dict[str, TraceLink] = {}

    # -- following ---------------------------------------------------------------------------
    def follow(self, on: bool) -> None:
        """Follow every agent's trace (the Flows view is shown), or stop following."""
        if on:
            for path in self.agents:
                if path not in self.links:
                    link = TraceLink(path, self.app.post_message, self.fleet.trace)
                    self.links[path] = link
                    link.start()
        else:
            for link in self.links.values():
                link.stop()
            self.links.clear()

    def _paths(self) -> list[str]:
        """The agents the Flows view shows (the focused instance, or all connected)."""
        paths = [self.fleet.path_of(i.name) for i in self.fleet.shown()]
        return [p for p in paths if p is not None and p in self.agents]

    def _status(self) -> TraceStatus | None:
        statuses = [self.fleet.trace.status.get(p) for p in self._paths()]
        running = [s for s in statuses if s is not None and s["running"]]
        return running[0] if running else None

    # -- changes -------------------------------------------------------------------------
    def open_filter(self, view: Flows) -> None:
        status = self._status()
        view.open_filter(status["filter"] if status else "")

    def start(self, view: Flows, text: str) -> None:
        self.app.run_worker(self._start(view, text), group="changes")

    async def _start(self, view: Flows, text: str) -> None:
        paths = self._paths()
        if not paths:
            view.filter_failed(text, "not connected to any agent")
            return
        results = await asyncio.gather(*(self._call(p, "trace_start", filter=text)
                                         for p in paths))
        for path, result in zip(paths, results, strict=True):
            if isinstance(result, InvalidParams):
                view.filter_failed(text, self._named(path, str(result), len(paths)))
                return
            if isinstance(result, XlbError):
                self.app.notify(self._named(path, f"trace not started: {result}", 2),
                                severity="error", timeout=8)
                return
            self.fleet.trace.set_status(path, result)
        view.filter_accepted()
        self.app.notify(f"tracing {text or 'every packet'}", title="trace started")
        self.redraw()

    def sample(self, view: Flows) -> None:
        status = self._status()
        text = status["filter"] if status else ""
        current = status["sample"] if status else 1

        def chosen(n: int | None) -> None:
            if n is None:
                self.app.notify("sampling unchanged")
            else:
                self.start(view, with_sample(text, n))

        self.app.push_screen(SampleScreen(current, with_sample(text, 1)), chosen)

    def stop(self) -> None:
        self.app.run_worker(self._stop(), group="changes")

    async def _stop(self) -> None:
        paths = self._paths()
        was = self._status() is not None
        results = await asyncio.gather(*(self._call(p, "trace_stop") for p in paths))
        for path, result in zip(paths, results, strict=True):
            if isinstance(result, XlbError):
                self.app.notify(self._named(path, f"trace not stopped: {result}", 2),
                                severity="error", timeout=8)
            else:
                self.fleet.trace.set_status(path, result)
        if paths:
            self.app.notify("trace stopped" if was else "no trace was running")
        self.redraw()

    async def _call(self, path: str, method: str, **params: Any) -> Any:
        """The answer, or the XlbError the agent (or the way to it) gave."""
        try:
            return await asyncio.to_thread(self.agents[path].call, method, **params)
        except XlbError as e:
            return e

    def _named(self, path: str, text: str, several: int) -> str:
        name = self.fleet.by_path.get(path, path)
        return f"{name}: {text}" if several > 1 else text

    # -- explain ---------------------------------------------------------------------------
    def explain(self, path: str | None = None, event: TraceEvent | None = None) -> None:
        """The explain dialog: for a typed flow on the shown agents, or for an event's flow
        on the agent that traced it."""
        paths = [path] if path else self._paths()
        flow = ""
        if event is not None:
            flow = (f"{endpoint(event['src'], event['sport'])} "
                    f"{endpoint(event['dst'], event['dport'])} {event['protocol']}")
        where = ", ".join(self.fleet.by_path.get(p, p) for p in paths)

        async def ask(params: dict[str, Any]) -> list[tuple[str, Explain | str]]:
            answers = await asyncio.gather(*(self._call(p, "explain", **params)
                                             for p in paths))
            return [(self.fleet.by_path.get(p, p),
                      (str(a).strip().splitlines() or ["failed"])[0]
                      if isinstance(a, XlbError) else a)
                     for p, a in zip(paths, answers, strict=True)]

        self.app.push_screen(ExplainScreen(ask, flow, where))
