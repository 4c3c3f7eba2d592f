"""What every view shares: redraw from the Fleet, theme colours, and table syncing.

A view knows nothing of the app: the app hands it the Fleet (redraw) and
sets its state; the view posts messages (console.messages) for what only the
app can do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from rich.cells import cell_len
from rich.markup import escape
from rich.text import Text
from textual.containers import Container
from textual.content import Content
from textual.theme import Theme
from textual.widgets import DataTable, Static

from console.livetable import Change, LiveTable
from console.messages import RedrawRequested
from console.model import Fleet
from xlb.api.protocol import VipModes
from xlb.units import human

STATE_MARK = {"active": "● active", "draining": "◐ draining", "drained": "○ drained",
              "down": "✗ down"}
STATE_ROLE = {"active": "success", "draining": "warning", "drained": "secondary",
              "down": "error"}


_COLOURS: dict[tuple[str, str], str] = {}


def theme_colour(theme: Theme, role: str) -> str:
    """Looked up once per theme and role: cells ask for colours thousands of times."""
    key = (theme.name, role)
    if key not in _COLOURS:
        _COLOURS[key] = str(getattr(theme, role, None) or theme.foreground or theme.primary)
    return _COLOURS[key]


class View(Container):
    """A tab's content. The app calls redraw(fleet) when it is shown and on each snapshot."""

    TITLE = ""
    # the keys this view adds, for the help screen: (key, what it does)
    KEYS: Sequence[tuple[str, str]] = ()
    FOCUS = "DataTable, EventList"   # what gets the focus when the view is shown (the first)
    can_focus = False

    def redraw(self, fleet: Fleet) -> None:
        raise NotImplementedError

    def help_note(self, fleet: Fleet) -> str:
        """What the help screen adds under this view's keys (markup; may read the fleet)."""
        return ""

    def on_resize(self) -> None:
        """Bars and charts are drawn to the width: ask for a redraw when it changes (or is
        first known). The app redraws the view it shows, once per burst of resizes."""
        self.post_message(RedrawRequested(self))

    def role(self, role: str) -> str:
        """A colour of the current theme by role (success, warning, error, accent, ...)."""
        return theme_colour(self.app.current_theme, role)

    def styled(self, text: str, role: str, bold: bool = False) -> Text:
        return Text(text, style=f"{'bold ' if bold else ''}{self.role(role)}")

    def mode_figures(self, m: VipModes) -> Text:
        """Traffic by forwarding mode, one line (after a switch both modes carry flows: the
        established ones keep theirs); SNAT's drops for want of a port stand out."""
        t = Text(f"DSR {human(m['dsr_pps'])} pps  SNAT {human(m['snat_pps'])} pps (replies "
                 f"{human(m['reply_pps'])} pps, {human(m['translations_per_s'])} new/s, ")
        t.append(f"no port {human(m['no_port'])}",
                 style=f"bold {self.role('error')}" if m["no_port"] else "")
        t.append(")")
        return t

    def marked(self, text: str, role: str, bold: bool = False) -> str:
        """A table cell as markup: plain strings are cheap to build and compare, and the
        table turns only the visible ones into styled text when it draws them."""
        return f"[{'bold ' if bold else ''}{self.role(role)}]{escape(text)}[/]"


_SHOWN: WeakKeyDictionary[Static, tuple[str, Text | str]] = WeakKeyDictionary()


def show(static: Static, content: Text | str) -> None:
    """Static.update, only when the content changed (an update renders the widget again),
    and without a layout of the screen when its lines keep their widths and none wraps
    (a layout places every widget of the screen again): most panels change figures, not
    shape, every second."""
    key = (static.app.theme, content)  # markup's $variables follow the theme
    last = _SHOWN.get(static)
    if last == key:
        return
    _SHOWN[static] = key
    widths = _widths(content)
    same_shape = (last is not None and widths == _widths(last[1])
                  and max(widths, default=0) <= static.content_region.width)
    static.update(content, layout=not same_shape)


def _widths(content: Text | str) -> list[int]:
    plain = content.plain if isinstance(content, Text) else Content.from_markup(content).plain
    return [cell_len(line) for line in plain.split("\n")]


def num(text: str, width: int = 7) -> str:
    """A right-aligned figure for a table cell."""
    return text.rjust(width)


def sync_table(table: LiveTable, keys: list[str], cells: Callable[[str], tuple[Any, ...]],
               last: dict[str, tuple[Any, ...]], only_visible: bool = False) -> None:
    """Make `table` show one row per key, in order, with `cells(key)`; touch only what changed.

    Same keys in the same order: changed cells are updated in place (only they
    are rendered again, and the cursor stays put). With only_visible, just the rows on screen are
    brought up to date: at thousands of rows that is most of the saving, and
    the view redraws again when the table scrolls. Otherwise the rows are
    rebuilt and the cursor is put back on the same key if it is still there.
    """
    columns = list(table.columns)
    if keys == list(last):
        todo = keys
        if only_visible:
            top = int(table.scroll_offset.y)
            todo = keys[max(0, top - 2): top + table.size.height + 2]
        changes: list[Change] = []
        for key in todo:
            new, old = cells(key), last[key]
            for col, value, before in zip(columns, new, old, strict=False):
                if value != before:
                    changes.append((key, col.value or "", value,
                                    len(str(value)) > len(str(before))))
            last[key] = new
        table.update_cells(changes)
        return
    selected = cell_key(table)
    table.clear()
    last.clear()
    for key in keys:
        row = cells(key)
        table.add_row(*row, key=key)
        last[key] = row
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
