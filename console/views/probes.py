"""Probes: what the agent's probes watch in the kernel, whether they run, and their cost.

The rows and each probe's one-line description come from the snapshot (the
agent's probe manager), so the console repeats no probe knowledge of its own.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import DataTable, Static

from console.draw import clip
from console.livetable import LiveTable
from console.messages import ProbeToggleRequested
from console.model import Fleet
from console.views.base import View, cell_key, num, show, sync_table
from xlb.api.protocol import Probe
from xlb.units import human

COLUMNS = ("probe", "state", "kind", "target", "events/s", "ns/run", "CPU %")
# A DataTable column widens to its longest cell and never narrows again: a long target seen
# once (while probes attach) would push the columns after it off a narrow screen for good.
TARGET_WIDTH = 36
STATE_ROLE = {"attached": "success", "unavailable": "warning", "off": "secondary"}


class Probes(View):
    TITLE = "Probes"
    KEYS = (("↑ ↓", "move through the probes"),
            ("enter", "attach the selected probe, or detach it (asks first)"))

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._probes: dict[str, tuple[str, Probe]] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="pr-title")
        table: LiveTable = LiveTable(id="pr-table", cursor_type="row")
        for name in COLUMNS:
            table.add_column(name, key=name, width=TARGET_WIDTH if name == "target" else None)
        yield table
        yield Static(id="pr-notes")

    def redraw(self, fleet: Fleet) -> None:
        probes = fleet.probes()
        several = len({i for i, _ in probes}) > 1
        self._probes = {f"{i}/{p['name']}": (i, p) for i, p in probes}
        attached = sum(1 for _, p in probes if p["state"] == "attached")
        title = Text()
        title.append("Probes of the agent", style="bold")
        title.append(f"   {attached} of {len(probes)} attached" if probes else
                     "   the agent reports no probes")
        show(self.query_one("#pr-title", Static), title)

        def cells(key: str) -> tuple[Any, ...]:
            inst, p = self._probes[key]
            state = p["state"] + (" (fallback)" if p["state"] == "attached" and p["reason"]
                                  else "")
            cost = p["ns_per_run"], p["cpu_percent"]
            return ((f"{inst}/" if several else "") + p["name"],
                    self.marked(state, STATE_ROLE.get(p["state"], "foreground")),
                    p["kind"], clip(p["target"], TARGET_WIDTH),
                    num(human(p["events_per_s"]) if p["state"] == "attached" else "–"),
                    num("–" if cost[0] is None else f"{cost[0]:.0f}"),
                    num("–" if cost[1] is None else f"{cost[1]:.2f}"))

        sync_table(self.query_one("#pr-table", LiveTable), list(self._probes), cells, self._rows)
        show(self.query_one("#pr-notes", Static), self._notes(probes, several))

    def _notes(self, probes: list[tuple[str, Probe]], several: bool) -> Text:
        """Why a probe is not attached, and what replaces it (the manager's own words)."""
        out = Text()
        for inst, p in probes:
            if not p["reason"] and p["state"] != "off":
                continue
            role = "warning" if p["state"] == "unavailable" else "secondary"
            name = (f"{inst}/" if several else "") + p["name"]
            out.append(f"{name}: ", style=f"bold {self.role(role)}")
            out.append((p["reason"] or "off: enter attaches it") + "\n")
        if not out:
            out.append("Every probe is attached as intended.", style=self.role("success"))
        return out

    def help_note(self, fleet: Fleet) -> str:
        """One line per probe, in the agent's words."""
        seen: dict[str, Probe] = {}
        for _, p in fleet.probes():
            seen.setdefault(p["name"], p)
        lines = [f"  {n:<10} {escape(p['doc'])} ({p['kind']} {escape(p['target'])})"
                 for n, p in seen.items()]
        return "[b]The probes[/b]\n" + ("\n".join(lines) or "  (no agent reports any)")

    @on(DataTable.RowSelected, "#pr-table")
    def _toggle(self) -> None:
        key = cell_key(self.query_one("#pr-table", DataTable))
        if key in self._probes:
            inst, probe = self._probes[key]
            self.post_message(ProbeToggleRequested(inst, probe))
