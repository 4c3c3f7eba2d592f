"""What every view shares: redraw from the Fleet, theme colours, and table syncing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.text import Text
from textual.containers import Container
from textual.widgets import DataTable

from console.tui.model import Fleet

if TYPE_CHECKING:
    from console.tui.app import XlbConsole

STATE_MARK = {"active": "● active", "draining": "◐ draining", "drained": "○ drained",
              "down": "✗ down"}
STATE_ROLE = {"active": "success", "draining": "warning", "drained": "secondary",
              "down": "error"}


class View(Container):
    """A tab's content. The app calls redraw() when it is shown and on each snapshot."""

    TITLE = ""
    # the keys this view adds, for the help screen: (key, what it does)
    KEYS: Sequence[tuple[str, str]] = ()
    can_focus = False

    @property
    def console(self) -> XlbConsole:
        return self.app  # type: ignore[return-value]

    def redraw(self, fleet: Fleet) -> None:
        raise NotImplementedError

    def on_resize(self) -> None:
        """Bars and charts are drawn to the width: redraw when it changes (or first known)."""
        if self.console.current_view() is self:
            self.console.schedule_redraw()

    def role(self, role: str) -> str:
        """A colour of the current theme by role (success, warning, error, accent, ...)."""
        theme = self.app.current_theme
        value = getattr(theme, role, None) or theme.foreground or theme.primary
        return str(value)

    def styled(self, text: str, role: str, bold: bool = False) -> Text:
        return Text(text, style=f"{'bold ' if bold else ''}{self.role(role)}")

    def marked(self, text: str, role: str, bold: bool = False) -> str:
        """A table cell as markup: plain strings are cheap to build and compare, and the
        table turns only the visible ones into styled text when it draws them."""
        return f"[{'bold ' if bold else ''}{self.role(role)}]{escape(text)}[/]"


def num(text: str, width: int = 7) -> str:
    """A right-aligned figure for a table cell."""
    return text.rjust(width)


def sync_table(table: DataTable[Any], rows: list[tuple[str, tuple[Any, ...]]],
               last: dict[str, tuple[Any, ...]]) -> None:
    """Make `table` show `rows` ((key, cells) in order), touching only what changed.

    Same keys in the same order: changed cells are updated in place (cheap, and
    the cursor stays put). Otherwise the rows are rebuilt and the cursor is put
    back on the same key if it is still there.
    """
    keys = [k for k, _ in rows]
    columns = list(table.columns)
    if keys == list(last):
        for key, cells in rows:
            old = last[key]
            for col, value, before in zip(columns, cells, old, strict=False):
                if value != before:
                    table.update_cell(key, col, value,
                                      update_width=len(str(value)) > len(str(before)))
            last[key] = cells
        return
    selected = None
    if table.row_count and table.cursor_row >= 0:
        try:
            selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:  # noqa: BLE001 - no valid cursor cell: nothing to restore
            selected = None
    table.clear()
    last.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
        last[key] = cells
    if selected in last:
        table.move_cursor(row=keys.index(selected), animate=False)


def cell_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor, or None."""
    if not table.row_count:
        return None
    try:
        value = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except Exception:  # noqa: BLE001 - cursor outside the rows
        return None
    return str(value) if value is not None else None
