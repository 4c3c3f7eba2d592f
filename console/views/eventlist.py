"""EventList: a table of many fast-changing rows that costs only the lines on screen.

A DataTable measures every cell of every new row and renders each cell through
Rich: about a quarter of a millisecond per row plus tens of milliseconds per
screen of new rows, too slow for a trace replacing its rows several times a
second. This widget (the Line API) keeps the rows' keys, asks for a row's
cells only when it is drawn (once per key: they are cached), and builds each
screen line from a few styled segments. Header fixed on top, a row cursor,
`enter` posts Selected. Columns grow to fit what was drawn and never shrink
until cleared, so the layout does not jump as rows scroll by.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = tuple[str, Style | None]   # text, and its style over the widget's (None: plain)
GAP = 2                           # spaces between columns
MAX_WIDTH = 40                    # a column never gets wider (longer text ends in …)


class EventList(ScrollView, can_focus=True):
    """Rows by integer key (set_rows), drawn lazily from `cells(key)`."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"eventlist--header", "eventlist--cursor"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "Newest", show=False),
        Binding("end", "jump(-1)", "Oldest", show=False),
        Binding("enter", "select", "Select", show=False),
    ]
    cursor: reactive[int] = reactive(0, always_update=True)

    @dataclass
    class Selected(Message):
        """Enter on a row."""

        event_list: EventList
        key: int

        @property
        def control(self) -> EventList:
            return self.event_list

    def __init__(self, columns: Sequence[str], **kw: Any):
        super().__init__(**kw)
        self.columns = list(columns)
        self.keys: list[int] = []
        self._cells: Callable[[int], Sequence[Cell]] = lambda key: ()
        self._cache: dict[int, Sequence[Cell]] = {}
        self._widths = [cell_len(c) for c in self.columns]
        self._index: dict[int, int] = {}

    # -- rows ------------------------------------------------------------------------------
    def set_rows(self, keys: list[int], cells: Callable[[int], Sequence[Cell]],
                 follow: bool = True) -> None:
        """Show `keys` in order. The cursor stays on its row's key; on the first row with
        `follow`, it stays first (the newest, when the newest come first)."""
        old = self.selected_key()
        stay_first = follow and self.cursor == 0
        self.keys, self._cells = keys, cells
        self._index = {k: i for i, k in enumerate(keys)}
        if len(self._cache) > 2 * len(keys) + 64:  # forget rows that left
            self._cache = {k: v for k, v in self._cache.items() if k in self._index}
        if stay_first or old is None or old not in self._index:
            self.cursor = 0 if stay_first or not keys else min(self.cursor, len(keys) - 1)
        else:
            self.cursor = self._index[old]
        self._resize()
        self.refresh()

    def clear(self) -> None:
        self._cache.clear()
        self._widths = [cell_len(c) for c in self.columns]
        self.set_rows([], self._cells)

    def restyle(self) -> None:
        """The theme changed: the cached cells carry its colours."""
        self._cache.clear()
        self.refresh()

    def selected_key(self) -> int | None:
        return self.keys[self.cursor] if 0 <= self.cursor < len(self.keys) else None

    def row_cells(self, key: int) -> Sequence[Cell]:
        cells = self._cache.get(key)
        if cells is None:
            cells = self._cache[key] = self._cells(key)
            widths = self._widths
            for i, (text, _) in enumerate(cells[: len(widths)]):
                n = min(cell_len(text), MAX_WIDTH)
                if n > widths[i]:
                    widths[i] = n
                    self.call_later(self._resize)
        return cells

    def _resize(self) -> None:
        self.virtual_size = Size(sum(self._widths) + GAP * len(self._widths),
                                 len(self.keys) + 1)

    # -- drawing ---------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        width = self.size.width
        scroll_x, scroll_y = self.scroll_offset
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("eventlist--header")
            line = self._line([(c, None) for c in self.columns], style)
        else:
            i = scroll_y + y - 1
            if i >= len(self.keys):
                return Strip.blank(width, base)
            style, cursor = base, i == self.cursor and self.has_focus
            if cursor:
                style = base + self.get_component_rich_style("eventlist--cursor")
            line = self._line(self.row_cells(self.keys[i]), style, cursor)
        return line.crop_extend(scroll_x, scroll_x + width, style)

    def _line(self, cells: Sequence[Cell], style: Style, cursor: bool = False) -> Strip:
        segments = []
        for (text, cell_style), w in zip(cells, self._widths, strict=False):
            n = cell_len(text)
            if n > w:
                text, n = text[: w - 1] + "…", w
            own = style if cursor or cell_style is None else style + cell_style
            segments.append(Segment(text + " " * (w - n + GAP), own))
        return Strip(segments)

    # -- keys and mouse ----------------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        if self.keys and self.is_mounted:
            top, height = int(self.scroll_y), max(self.size.height - 1, 1)
            if new < top:
                self.scroll_to(y=new, animate=False, immediate=True)
            elif new >= top + height:
                self.scroll_to(y=new - height + 1, animate=False, immediate=True)
        self.refresh()

    def action_move(self, step: int) -> None:
        if self.keys:
            self.cursor = min(max(self.cursor + step, 0), len(self.keys) - 1)

    def action_page(self, step: int) -> None:
        self.action_move(step * max(self.size.height - 2, 1))

    def action_jump(self, where: int) -> None:
        if self.keys:
            self.cursor = where % len(self.keys)

    def action_select(self) -> None:
        key = self.selected_key()
        if key is not None:
            self.post_message(self.Selected(self, key))

    def on_click(self, event: events.Click) -> None:
        i = int(self.scroll_y) + event.y - 1
        if event.y >= 1 and 0 <= i < len(self.keys):
            self.cursor = i
            if event.chain > 1:
                self.action_select()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
