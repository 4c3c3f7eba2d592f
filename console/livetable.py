"""LiveTable: a DataTable whose cells change every second without re-rendering the rest.

DataTable.update_cell counts every change in one table-wide counter that is
part of the key of each of its render caches, so changing one cell re-renders
every visible cell of every row (and re-lists every row's offsets). At 1000
backends with a few figures changing per row every second, that was most of
the Backends view's CPU. update_cells changes the values, then forgets only
the cached renders of the changed cells and of the lines of their rows:
unchanged cells come from the cache. A cell that needs a wider column goes
the ordinary way (update_cell with update_width), which re-renders it all.

This relies on DataTable's private caches (Textual is pinned, <9): their keys
begin with the row key and the column key (rendered cells), the row key
(rendered rows), the y of the line (lines), or end with the row's index (its
formatted cells). tests/console/test_cheap_redraw.py renders a LiveTable after
update_cells against a DataTable built with the same values: any drift in
those internals shows there as a stale or different screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

Change = tuple[str, str, Any, bool]   # row key, column key, value, may widen the column


class LiveTable(DataTable[Any]):
    def update_cells(self, changes: Iterable[Change]) -> None:
        """Set each changed cell; re-render only those cells and their rows' lines."""
        cells: set[tuple[RowKey, ColumnKey]] = set()
        widened = False
        for row, column, value, widen in changes:
            if widen:  # column widths and every offset may change: the full way
                self.update_cell(row, column, value, update_width=True)
                widened = True
                continue
            key = (RowKey(row), ColumnKey(column))
            self._data[key[0]][key[1]] = value
            cells.add(key)
        if not cells:
            return
        if widened:  # update_cell forgot every cached render already
            self.refresh()
            return
        rows = {row for row, _ in cells}
        cell_cache, row_cache, line_cache = (self._cell_render_cache, self._row_render_cache,
                                             self._line_cache)
        for cell in [k for k in cell_cache.keys() if (k[0], k[1]) in cells]:
            cell_cache.discard(cell)
        for row_part in [k for k in row_cache.keys() if k[0] in rows]:
            row_cache.discard(row_part)
        indexes = {self._row_locations.get(row) for row in rows}
        formatted = self._row_renderable_cache
        for row_cells in [k for k in formatted.keys() if k[1] in indexes]:
            formatted.discard(row_cells)
        stale = []
        for line in line_cache.keys():
            try:
                if self._get_offsets(line[0])[0] in rows:
                    stale.append(line)
            except LookupError:  # a line below the last row
                stale.append(line)
        for line in stale:
            line_cache.discard(line)
        self.refresh()
