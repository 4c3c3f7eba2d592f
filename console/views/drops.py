"""Drops: why packets got their verdict, why the kernel dropped packets, XDP exceptions.

Three sections: the data plane's own verdicts (every packet under exactly one
reason), the kernel's drops by its own reason names (skb:kfree_skb, from the
drops probe), and XDP exceptions and redirect errors (the xdp probe). The
biggest reason of each of the first two stands out.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from console.draw import spark
from console.livetable import LiveTable
from console.messages import ExamplesRequested
from console.model import Fleet, KernelDropRow
from console.views.base import View, cell_key, num, show, sync_table
from xlb.api.protocol import reason_kind, reason_order
from xlb.units import human

COLUMNS = ("verdict reason", "kind", "rate/s", "total", "last 2 min")
KERNEL_COLUMNS = ("kernel reason", "LB share", "rate/s", "total", "last 2 min")
XDP_COLUMNS = ("XDP error", "program", "interface", "action", "rate/s", "total")
SPARK_WIDTH = 30


class Drops(View):
    TITLE = "Drops"
    KEYS = (("↑ ↓", "move through the reasons"),
            ("tab", "move between the three tables"),
            ("enter", "on a kernel reason: its recent dropped packets"))

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._krows: dict[str, tuple[Any, ...]] = {}
        self._xrows: dict[str, tuple[Any, ...]] = {}
        self._kernel: dict[str, KernelDropRow] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="dr-title")
        table: LiveTable = LiveTable(id="dr-table", cursor_type="row")
        for name in COLUMNS:
            table.add_column(name, key=name)
        yield table
        yield Static(id="dr-kernel-title")
        kernel: LiveTable = LiveTable(id="dr-kernel", cursor_type="row")
        for name in KERNEL_COLUMNS:
            kernel.add_column(name, key=name)
        yield kernel
        yield Static(id="dr-xdp-title")
        xdp: LiveTable = LiveTable(id="dr-xdp", cursor_type="row")
        for name in XDP_COLUMNS:
            xdp.add_column(name, key=name)
        yield xdp

    def redraw(self, fleet: Fleet) -> None:
        reasons = fleet.reasons()
        drops = [r for r in reasons if reason_kind(r[0]) == "drop"]
        worst = max(drops, key=lambda r: (r[1], r[2]), default=None)
        worst_name = worst[0] if worst and (worst[1] > 0 or worst[2] > 0) else None
        top = ("biggest drop reason", worst_name, worst[1], worst[2]) if (
            worst_name and worst is not None) else None
        show(self.query_one("#dr-title", Static),
            self._title("Verdicts of the data plane", None, top, "no drops"))
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
        sync_table(self.query_one("#dr-table", LiveTable), list(rows), rows.__getitem__,
                   self._rows)

        self._redraw_kernel(fleet)
        self._redraw_xdp(fleet)

    def _title(self, heading: str, detached: str | None,
               top: tuple[str, str, float, float] | None, quiet: str | None) -> Text:
        """A section's title: its heading, then the probe it needs is not attached
        (`detached`), or its top reason (`top`: what, name, per second, total), or `quiet`
        (nothing wrong)."""
        title = Text()
        title.append(heading, style="bold")
        if detached is not None:
            title.append(f"   the {detached} probe is not attached (see Probes, 6)",
                         style=self.role("warning"))
        elif top is not None:
            what, name, per_s, total = top
            title.append(f"   {what}: ")
            title.append(f"{name} ({human(per_s)}/s, {human(total)} total)",
                         style=f"bold {self.role('error')}")
        elif quiet is not None:
            title.append(f"   {quiet}", style=self.role("success"))
        return title

    def _redraw_kernel(self, fleet: Fleet) -> None:
        rows = fleet.kernel_drops()
        self._kernel = {r.reason: r for r in rows}
        top = rows[0].reason if rows and (rows[0].per_s > 0 or rows[0].total > 0) else None
        lead = None if top is None else (
            "top reason", top, self._kernel[top].per_s, self._kernel[top].total)
        show(self.query_one("#dr-kernel-title", Static), self._title(
            "Kernel drops by reason", "drops" if not fleet.probe_attached("drops") else None,
            lead, "the kernel dropped nothing"))

        def cells(reason: str) -> tuple[Any, ...]:
            r = self._kernel[reason]
            role = "error" if reason == top else "foreground"
            share = f"{100 * r.lb_total / r.total:.0f} %" if r.total else "–"
            return (self.marked(("▲ " if reason == top else "  ") + reason, role,
                                bold=reason == top),
                    num(share), num(human(r.per_s)), num(human(r.total)),
                    self.marked(spark(list(r.history), SPARK_WIDTH), role))

        sync_table(self.query_one("#dr-kernel", LiveTable), list(self._kernel), cells,
                   self._krows)

    def _redraw_xdp(self, fleet: Fleet) -> None:
        errors = fleet.xdp_errors()
        several = len({i for i, _ in errors}) > 1
        show(self.query_one("#dr-xdp-title", Static), self._title(
            "XDP exceptions and redirect errors",
            "xdp" if not fleet.probe_attached("xdp") else None, None,
            None if errors else "none"))
        rows = {f"{i}/{e['kind']}/{e['prog_id']}/{e['interface']}/{e['action']}": (i, e)
                for i, e in errors}

        def cells(key: str) -> tuple[Any, ...]:
            inst, e = rows[key]
            role = "error" if e["per_s"] > 0 else "warning"
            return (self.marked(e["kind"].replace("_", " "), role),
                    (f"{inst}/" if several else "") + (e["program"] or f"id {e['prog_id']}"),
                    e["interface"], e["action"], num(human(e["per_s"])), num(human(e["total"])))

        sync_table(self.query_one("#dr-xdp", LiveTable), list(rows), cells, self._xrows)

    def help_note(self, fleet: Fleet) -> str:
        return ("Verdicts are the data plane's own counters: every packet under exactly one "
                "reason. Kernel reasons are the running kernel's own names (skb:kfree_skb, the "
                "drops probe); LB share is the part from or to this load balancer's VIPs and "
                "backends; ▲ marks the biggest. XDP errors come from the xdp probe.")

    @on(DataTable.RowSelected, "#dr-kernel")
    def _examples(self) -> None:
        key = cell_key(self.query_one("#dr-kernel", DataTable))
        if key in self._kernel:
            self.post_message(ExamplesRequested(self._kernel[key]))
