"""Redraws at 1000 backends stay cheap: tables re-render only the cells that changed, and
still show exactly what a freshly built table shows (console/livetable.py); panels are
updated only when their text changed, and lay the screen out again only when their shape
changed (console/views/base.py, show)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Static
from textual.widgets._footer import FooterKey

from console.app import XlbConsole
from console.livetable import LiveTable
from tests.agent_double import AgentDouble
from tests.helpers import until

COLUMNS = ("name", "rate", "total")


def rows(n: int, bump: int = 0) -> dict[str, tuple[str, str, str]]:
    return {f"r{i}": (f"r{i}", f"[b]{i * 3 + bump}[/]", str(i * 100 + bump)) for i in range(n)}


class Pair(App[None]):
    """A LiveTable changed in place next to a DataTable rebuilt with the same values."""

    def compose(self) -> ComposeResult:
        tables: tuple[DataTable[Any], ...] = (LiveTable(id="live", cursor_type="row"),
                                              DataTable(id="plain", cursor_type="row"))
        for table in tables:
            for name in COLUMNS:
                table.add_column(name, key=name)
            for key, cells in rows(60).items():
                table.add_row(*cells, key=key)
            yield table


def screen_of(table: DataTable[Any]) -> list[str]:
    """What the table draws, line by line, with the styles (the cursor row's too)."""
    return [repr(list(table.render_line(y))) for y in range(table.size.height)]


def test_update_cells_draws_what_a_rebuilt_table_draws() -> None:
    async def main() -> None:
        app = Pair()
        async with app.run_test(size=(60, 40)) as pilot:
            live, plain = app.query_one("#live", LiveTable), app.query_one("#plain", DataTable)
            for table in (live, plain):
                table.styles.height = 15
                table.move_cursor(row=3, animate=False)
            app.set_focus(None)
            await pilot.pause()
            assert screen_of(live) == screen_of(plain)
            current = rows(60)
            for bump, widen in ((1, False), (2, False), (70000, True)):
                # every second row changes (the cursor's too); the last time a wider value
                changed = {k: v for i, (k, v) in enumerate(rows(60, bump).items()) if i % 2}
                live.update_cells([(key, col, value, widen and key == "r5")
                                   for key, cells in changed.items()
                                   for col, value in zip(COLUMNS[1:], cells[1:], strict=True)])
                current.update(changed)
                plain.clear()
                for key, cells in current.items():
                    plain.add_row(*cells, key=key)
                plain.move_cursor(row=3, animate=False)
                await pilot.pause()
                assert screen_of(live) == screen_of(plain), f"after change {bump}"
            for table in (live, plain):  # rows changed while off screen
                table.scroll_end(animate=False)
            await pilot.pause()
            assert screen_of(live) == screen_of(plain)

    asyncio.run(main())


class Recording:
    """A table's cell render cache that notes which cells were rendered (stored after a
    miss); everything else goes to the cache itself."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache
        self.rendered: list[tuple[str, str]] = []

    def __setitem__(self, key: Any, value: Any) -> None:
        self.rendered.append((str(key[0].value), str(key[1].value)))
        self.cache[key] = value

    def __getitem__(self, key: Any) -> Any:
        return self.cache[key]

    def __contains__(self, key: Any) -> bool:
        return key in self.cache

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cache, name)


def test_backends_renders_only_the_figures_that_changed(tmp_path: Path) -> None:
    """At 300 backends, a snapshot re-renders the cells of the figures that move (shares,
    rates), not the addresses, weights, states and health that stay the same."""
    d = AgentDouble(str(tmp_path / "lb1.sock"), backends=300, tick=0.3).start()

    async def main() -> None:
        app = XlbConsole([d.path])
        async with app.run_test(size=(160, 48)) as pilot:
            await until(lambda: app.fleet.instances, pilot)
            await pilot.press("2")
            table = app.query_one("#be-table", DataTable)
            await until(lambda: table.row_count == 300, pilot)
            seen = app.redraws
            await until(lambda: app.redraws >= seen + 2, pilot)
            await pilot.pause()
            cache = Recording(table._cell_render_cache)
            table._cell_render_cache = cache  # type: ignore[assignment]
            seen = app.redraws
            await until(lambda: app.redraws >= seen + 2 and cache.rendered, pilot)
            await pilot.pause()
            columns = {column for _, column in cache.rendered}
            assert columns, "nothing was drawn again although the figures changed"
            assert columns <= {"conns", "pkts", "new/s", "active", "changed"}, columns

    try:
        asyncio.run(main())
    finally:
        d.stop()


def test_panels_update_only_what_changed(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes' panels say the same every second: not updated again. The RX queues panel
    changes its figures, not its shape: updated without a layout of the screen."""
    updates: list[tuple[str, bool]] = []
    original = Static.update

    def update(self: Static, content: Any = "", *, layout: bool = True) -> None:
        updates.append((self.id or "", layout))
        original(self, content, layout=layout)

    monkeypatch.setattr(Static, "update", update)
    d = AgentDouble(str(tmp_path / "lb1.sock"), backends=300, queues=16, tick=0.3).start()

    async def main() -> None:
        app = XlbConsole([d.path])
        async with app.run_test(size=(160, 48)) as pilot:
            await until(lambda: app.fleet.instances, pilot)
            seen = app.redraws
            await until(lambda: app.redraws >= seen + 2, pilot)  # laid out, sizes known
            await pilot.pause()
            updates.clear()
            seen = app.redraws
            await until(lambda: app.redraws >= seen + 3, pilot)
            queues = [layout for name, layout in updates if name == "ov-queues"]
            assert queues and not any(queues), updates
            await pilot.press("6")
            seen = app.redraws
            await until(lambda: app.redraws >= seen + 2, pilot)
            updates.clear()
            seen = app.redraws
            await until(lambda: app.redraws >= seen + 3, pilot)
            assert not [u for u in updates if u[0] in ("pr-title", "pr-notes")], updates

    try:
        asyncio.run(main())
    finally:
        d.stop()


def test_view_switches_leave_no_footer_keys_behind(double: AgentDouble) -> None:
    """The footer's keys change with every view: the old ones must be freed (RSS stays
    flat however long the console runs and however often the view changes)."""
    def removed_keys() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, FooterKey) and not o.is_attached)

    async def main() -> None:
        app = XlbConsole([double.path])
        async with app.run_test(size=(160, 48)) as pilot:
            await until(lambda: app.fleet.instances, pilot)
            before = removed_keys()
            for key in "2346123461":
                await pilot.press(key)
                await pilot.pause()
            await pilot.pause()
            assert removed_keys() <= before

    asyncio.run(main())
