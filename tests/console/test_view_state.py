"""Views: state as reactive attributes, data handed down, requests posted up.

A view redraws itself when its state (VIP, sort, filter) changes, whoever
changes it; it learns the fleet only through redraw(fleet), and asks the app
for details or a redraw with a message. It never imports or reaches into the
app: the Backends view works mounted in a bare App.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.message import Message
from textual.widgets import DataTable, Static

from console.app import XlbConsole
from console.dialogs import BackendScreen
from console.messages import DetailsRequested, RedrawRequested, SnapshotArrived
from console.model import Fleet
from console.views.backends import Backends
from tests.console.bare import PATH, run_bare, snapshot
from tests.helpers import REPO, until


def keys(table: DataTable[Any]) -> list[str]:
    return [str(r.value) for r in table.rows]


def title(view: Backends) -> str:
    return str(view.query_one("#be-title", Static).render())


async def on_backends(app: XlbConsole, pilot: Any, backends: int = 12) -> Backends:
    """One snapshot (and no more), the Backends view shown with all its rows."""
    app.post_message(SnapshotArrived(PATH, snapshot(backends=backends)))
    await until(lambda: app.fleet.instances, pilot)
    await pilot.press("2")
    view = app.backends_view()
    await until(lambda: len(keys(view.query_one("#be-table", DataTable))) == backends, pilot)
    return view


def test_setting_sort_filter_or_vip_redraws_the_view_at_once() -> None:
    async def scenario(app: XlbConsole, pilot: Any) -> None:
        view = await on_backends(app, pilot)
        table = view.query_one("#be-table", DataTable)
        redraws = app.redraws
        # no await between setting and looking: the view's watchers redrew it, not the app
        view.sort = "weight"
        first = next(r for r in app.fleet.backend_rows(app.fleet.vips()[0])
                     if r.address == keys(table)[0])
        assert first.weight == 2 and "sort: weight" in title(view)
        view.filter_text = "2.1"
        assert set(keys(table)) == {"198.18.2.1", "198.18.2.10", "198.18.2.11",
                                    "198.18.2.12"}
        assert "filter: '2.1' (4 of 12)" in title(view)
        view.vip_key = "lb1/dns"
        assert "VIP dns" in title(view)
        view.filter_text = ""
        assert len(keys(table)) == 12
        assert app.redraws == redraws

    run_bare(scenario)


def test_keys_set_the_view_state() -> None:
    async def scenario(app: XlbConsole, pilot: Any) -> None:
        view = await on_backends(app, pilot)
        await pilot.press("v")
        assert view.vip_key == "lb1/dns" and "VIP dns" in title(view)
        await pilot.press("V", "s")
        assert view.vip_key == "lb1/web" and view.sort == "weight"
        await pilot.press("slash", *"2.1")
        await until(lambda: view.filter_text == "2.1", pilot)  # @on(Input.Changed)
        await pilot.press("escape")
        await until(lambda: view.filter_text == "", pilot)
        assert len(keys(view.query_one("#be-table", DataTable))) == 12

    run_bare(scenario)


class Recording(XlbConsole):
    """The console, noting the details requests it handles (its own handler runs too)."""

    def __init__(self) -> None:
        super().__init__([])
        self.details: list[DetailsRequested] = []

    def on_details_requested(self, msg: DetailsRequested) -> None:
        self.details.append(msg)


def test_enter_on_a_backend_posts_details_requested_and_the_app_opens_the_dialog() -> None:
    app = Recording()

    async def scenario(app: XlbConsole, pilot: Any) -> None:
        assert isinstance(app, Recording)
        view = await on_backends(app, pilot, backends=3)
        view.query_one("#be-table", DataTable).move_cursor(row=1)
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, BackendScreen), pilot)
        (msg,) = app.details
        assert msg.ref.key == "lb1/web" and msg.row.address == "198.18.2.2"
        assert "Backend 198.18.2.2" in str(app.screen.query_one("#dialog-title").render())
        # no agent to ask: the dialog says so instead of an audit trail
        await until(lambda: "not connected to lb1" in str(
            app.screen.query_one("#audit-body", Static).render()), pilot)

    run_bare(scenario, app)


class Bare(App[None]):
    """Any app at all: the Backends view needs none of the console's."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[Message] = []

    def compose(self) -> ComposeResult:
        yield Backends(id="view")

    def on_details_requested(self, msg: DetailsRequested) -> None:
        self.heard.append(msg)

    def on_redraw_requested(self, msg: RedrawRequested) -> None:
        self.heard.append(msg)


def test_the_backends_view_stands_alone() -> None:
    fleet = Fleet([PATH])
    fleet.snapshot(PATH, snapshot(backends=3))
    app = Bare()

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            view = app.query_one(Backends)
            await until(lambda: any(isinstance(m, RedrawRequested) for m in app.heard), pilot)
            view.redraw(fleet)  # the data, handed down
            table = view.query_one("#be-table", DataTable)
            assert keys(table) == ["198.18.2.1", "198.18.2.2", "198.18.2.3"]
            table.focus()
            table.move_cursor(row=2)
            await pilot.press("enter")
            await until(lambda: any(isinstance(m, DetailsRequested) for m in app.heard), pilot)
            msg = next(m for m in app.heard if isinstance(m, DetailsRequested))
            assert msg.row.address == "198.18.2.3" and msg.ref.name == "web"
            view.sort = "weight"  # and its own state redraws it from that same fleet
            assert keys(table)[0] == "198.18.2.3"

    asyncio.run(main())


def test_views_do_not_reach_into_the_app() -> None:
    """No import of console.app, no `self.console`, and of `self.app` only Textual's own
    current_theme: the app hands data down, views send messages up."""
    for path in sorted((REPO / "console" / "views").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ImportFrom):
                assert node.module != "console.app", where
                assert not (node.module == "console" and any(
                    a.name == "app" for a in node.names)), where
            elif isinstance(node, ast.Import):
                assert all(a.name != "console.app" for a in node.names), where
            elif isinstance(node, ast.Attribute) and _is_self(node.value):
                assert node.attr != "console", where
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                  and node.value.attr == "app" and _is_self(node.value.value)):
                assert node.attr in {"current_theme"}, f"{where}: self.app.{node.attr}"


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def test_only_main_imports_the_app() -> None:
    """The app sits on top: nothing in the console imports it but `xlb console`'s runner."""
    importers = []
    for path in sorted((REPO / "console").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "console.app":
                importers.append(str(Path(path).relative_to(REPO)))
    assert importers == ["console/main.py"]
