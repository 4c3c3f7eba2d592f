"""Backends: per VIP, weight/state/health, Maglev share against observed traffic.

The keys that change things (d, u, w) are the app's actions; this view only
says which backend and VIP are selected, and asks for details with a message.
Its state (VIP, sort, filter) is reactive: whoever sets it, the view redraws.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.reactive import var
from textual.widgets import DataTable, Input, Static

from console.draw import ago, bar, pct
from console.livetable import LiveTable
from console.messages import DetailsRequested
from console.model import SORT_KEYS, BackendRow, Fleet, VipRef, sort_and_filter, vip_modes
from console.views.base import STATE_MARK, STATE_ROLE, View, cell_key, num, show, sync_table
from xlb.units import human

COLUMNS = ("backend", "weight", "state", "ring", "conns", "pkts", "active", "new/s", "health",
           "changed")
CHART_ROWS = 40   # the chart shows the first rows of the table; the table has them all


class Backends(View):
    TITLE = "Backends"
    KEYS = (("d", "drain the selected backend (asks first)"),
            ("u", "undrain the selected backend"),
            ("w", "set the selected backend's weight"),
            ("m", "switch the VIP's mode, DSR ↔ SNAT (asks first)"),
            ("v / V", "next / previous VIP"),
            ("s", "sort by the next column"),
            ("/", "filter by address, state or health (Esc clears)"),
            ("enter", "the selected backend in full, with its audit trail"),
            ("↑ ↓", "select a backend"))
    # v, V, s and / are the app's bindings (so a key typed right after `2` is not lost
    # while the focus moves); the app hands them to this view
    BINDINGS = [Binding("escape", "clear_filter", "Clear filter", show=False)]

    # the view's state: var, not reactive, as the view repaints nothing itself; its
    # watchers redraw the children from the fleet last handed down
    vip_key: var[str | None] = var(None, init=False)  # chosen VIP; None: the first
    sort: var[str] = var("address", init=False)
    filter_text: var[str] = var("", init=False)

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self._fleet: Fleet | None = None  # as of the last redraw(fleet)
        self._rows: dict[str, tuple[Any, ...]] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="be-title")
        table: LiveTable = LiveTable(id="be-table", cursor_type="row", zebra_stripes=True)
        for name in COLUMNS:
            table.add_column(name, key=name)
        yield table
        yield Input(placeholder="filter: address, state or health; Enter keeps, Esc clears",
                    id="be-filter")
        with VerticalScroll(id="be-chart-box"):
            yield Static(id="be-chart")

    def on_mount(self) -> None:
        self.query_one("#be-filter").display = False
        # rows off screen are brought up to date when they scroll into view
        self.watch(self.query_one("#be-table"), "scroll_y", self._scrolled, init=False)

    # -- state ---------------------------------------------------------------------------
    def watch_vip_key(self) -> None:
        self._redraw_again()

    def watch_sort(self) -> None:
        self._redraw_again()

    def watch_filter_text(self) -> None:
        self._redraw_again()

    def _scrolled(self, _old: float, _new: float) -> None:
        self._redraw_again()

    def _redraw_again(self) -> None:
        """Redraw now with the fleet last handed down (none yet: the app's first redraw
        will use the new state)."""
        if self._fleet is not None and self.is_mounted:
            self.redraw(self._fleet)

    # -- selection --------------------------------------------------------------------
    def selected_vip(self, fleet: Fleet) -> VipRef | None:
        """The chosen VIP, or the first one when it is not (or no longer) shown."""
        vips = fleet.vips()
        return next((v for v in vips if v.key == self.vip_key), vips[0] if vips else None)

    def selected_backend(self, fleet: Fleet) -> BackendRow | None:
        ref = self.selected_vip(fleet)
        key = cell_key(self.query_one("#be-table", DataTable))
        if ref is None or key is None:
            return None
        return next((row for row in fleet.backend_rows(ref) if row.address == key), None)

    def next_vip(self, fleet: Fleet, step: int) -> None:
        keys = [v.key for v in fleet.vips()]
        if keys:
            i = keys.index(self.vip_key) if self.vip_key in keys else 0
            self.vip_key = keys[(i + step) % len(keys)]

    def action_next_sort(self) -> None:
        order = list(SORT_KEYS)
        self.sort = order[(order.index(self.sort) + 1) % len(order)]

    def action_filter(self) -> None:
        box = self.query_one("#be-filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#be-filter", Input)
        box.value = ""
        box.display = False
        self.filter_text = ""
        self.query_one("#be-table").focus()

    @on(Input.Changed, "#be-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value

    @on(Input.Submitted, "#be-filter")
    def _filter_kept(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self.query_one("#be-table").focus()

    @on(DataTable.RowSelected, "#be-table")
    def _details(self) -> None:
        fleet = self._fleet
        ref = self.selected_vip(fleet) if fleet else None
        row = self.selected_backend(fleet) if fleet else None
        if ref is not None and row is not None:
            self.post_message(DetailsRequested(ref, row))

    # -- drawing ------------------------------------------------------------------------
    def redraw(self, fleet: Fleet) -> None:
        self._fleet = fleet
        ref = self.selected_vip(fleet)
        title = self.query_one("#be-title", Static)
        table = self.query_one("#be-table", LiveTable)
        if ref is None:
            show(title, "No VIP yet: waiting for the agent's first snapshot …")
            sync_table(table, [], tuple, self._rows)
            show(self.query_one("#be-chart", Static), "")
            return
        all_rows = fleet.backend_rows(ref)
        rows = sort_and_filter(all_rows, self.sort, self.filter_text)
        show(title, self._title(fleet, ref, len(rows), len(all_rows)))
        now = max((i.snap["time"] for i in fleet.shown()), default=0.0)
        by_key = {r.address: r for r in rows}
        sync_table(table, list(by_key), lambda k: self._cells(by_key[k], now), self._rows,
                   only_visible=True)
        show(self.query_one("#be-chart", Static), self._chart(rows))

    def _title(self, fleet: Fleet, ref: VipRef, shown: int, total: int) -> Text:
        ok = ref.healthy == ref.total and ref.total > 0
        t = Text()
        t.append("VIP ", style="bold")
        t.append(f"{ref.name}", style=f"bold {self.role('accent')}")
        if len(fleet.instances) > 1:
            t.append(f" on {ref.instance}")
        t.append(f"  {ref.label}  ")
        t.append(f"{ref.healthy}/{ref.total} healthy", style=self.role("success" if ok
                                                                       else "warning"))
        if ref.panic:
            t.append("  PANIC: all serving backends take flows",
                     style=f"bold {self.role('error')}")
        t.append(f"   sort: {self.sort}")
        if self.filter_text.strip():
            t.append(f"   filter: {self.filter_text.strip()!r} ({shown} of {total})",
                     style=self.role("warning"))
        n = len(fleet.vips())
        if n > 1:
            t.append(f"   (v: next of {n} VIPs)")
        doc = fleet.vip_doc(ref)
        if doc is not None:
            t.append("\nMode ", style="bold")
            t.append(ref.mode.upper(), style=f"bold {self.role('accent')}")
            t.append(" │ ")
            t.append_text(self.mode_figures(vip_modes(doc)))
        return t

    def _cells(self, r: BackendRow, now: float) -> tuple[Any, ...]:
        state = self.marked(STATE_MARK.get(r.state, r.state).ljust(10),
                            STATE_ROLE.get(r.state, "warning"))
        health = (self.marked("✓ up", "success") if r.health == "up"
                  else self.marked(f"✗ {r.health}", "error"))
        changed = ago(now - r.changed) if r.changed and now else "-"
        return (r.address, num(str(r.weight), 6), state, num(pct(r.ring_share)),
                num(pct(r.conn_share)), num(pct(r.packet_share)), num(human(r.active_connections)),
                num(human(r.new_connections_per_s)), health, num(changed))

    def _chart(self, rows: list[BackendRow]) -> Text:
        out = Text()
        out.append("Distribution  ", style="bold")
        out.append("▆ Maglev table share", style=self.role("primary"))
        out.append("   ")
        out.append("▆ observed share of new connections", style=self.role("accent"))
        out.append("\n")
        if not rows:
            return out
        shown = rows[:CHART_ROWS]
        addr_w = max(len(r.address) for r in shown)
        width = (self.query_one("#be-chart").size.width or 80) - 2  # room for a scrollbar
        bar_w = max(4, (width - addr_w - 18) // 2)
        top = max(max(r.ring_share, r.conn_share) for r in rows) or 1.0
        for r in shown:
            out.append(f"{r.address:>{addr_w}} ")
            out.append(bar(r.ring_share / top, bar_w), style=self.role("primary"))
            out.append(f" {pct(r.ring_share)} ")
            out.append(bar(r.conn_share / top, bar_w), style=self.role("accent"))
            out.append(f" {pct(r.conn_share)}\n")
        if len(rows) > CHART_ROWS:
            out.append(f"{'':>{addr_w}} … {len(rows) - CHART_ROWS} more in the table above\n")
        return out
