"""Drops: why packets got their verdict, with the biggest drop reason standing out."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from console.draw import spark
from console.model import Fleet
from console.views.base import View, num, sync_table
from xlb.api.protocol import reason_kind, reason_order
from xlb.units import human

COLUMNS = ("verdict reason", "kind", "rate/s", "total", "last 2 min")
SPARK_WIDTH = 30


class Drops(View):
    TITLE = "Drops"
    KEYS = (("↑ ↓", "move through the reasons"),)

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self._rows: dict[str, tuple[Any, ...]] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="dr-title")
        table: DataTable[Any] = DataTable(id="dr-table", cursor_type="row")
        for name in COLUMNS:
            table.add_column(name, key=name)
        yield table
        yield Static("Kernel drop reasons (skb:kfree_skb) and XDP exceptions come from the "
                     "probes, which are not attached yet: this table is the data plane's own "
                     "accounting, where every packet is counted under exactly one reason.",
                     id="dr-note")

    def redraw(self, fleet: Fleet) -> None:
        reasons = fleet.reasons()
        drops = [r for r in reasons if reason_kind(r[0]) == "drop"]
        worst = max(drops, key=lambda r: (r[1], r[2]), default=None)
        worst_name = worst[0] if worst and (worst[1] > 0 or worst[2] > 0) else None
        title = Text()
        title.append("Verdicts of the data plane", style="bold")
        if worst_name and worst is not None:
            title.append("   biggest drop reason: ")
            title.append(f"{worst_name} ({human(worst[1])}/s, {human(worst[2])} total)",
                         style=f"bold {self.role('error')}")
        else:
            title.append("   no drops", style=self.role("success"))
        self.query_one("#dr-title", Static).update(title)
        order = sorted(reasons, key=lambda r: (reason_order(r[0])[0],
                                               -r[1], -r[2], r[0]))
        rows = {}
        for name, rate, total, hist in order:
            kind = reason_kind(name)
            role = "error" if kind == "drop" and (rate or total) else "foreground"
            label = ("▲ " if name == worst_name else "  ") + name
            rows[name] = (self.marked(label, role, bold=name == worst_name), kind,
                          num(human(rate)), num(human(total)),
                          self.marked(spark(hist, SPARK_WIDTH), role))
        sync_table(self.query_one("#dr-table", DataTable), list(rows), rows.__getitem__,
                   self._rows)
