"""BGP: are this LB's sessions to the routers up, what does it announce and why.

Per instance: the ExaBGP process and maintenance, the neighbors (state in words
and a symbol, for how long, updates, the peer's last error), every VIP address
as a prefix (announced or withdrawn, to which peers, why), and the event log,
newest first. With several instances, which LBs carry each VIP. All of it is
the agents' snapshot["bgp"]; `W` and `a` act on the selected prefix through
the app (which asks first and refuses on a read-only console).
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from console.bgpmodel import (
    CAUSE_ROLE,
    SESSION_MARK,
    SESSION_ROLE,
    PrefixRow,
    alerts,
    carried,
    carriers,
    events,
    prefix_rows,
    speakers,
)
from console.draw import ago, clip
from console.livetable import LiveTable
from console.model import Fleet
from console.views.base import View, cell_key, num, show, sync_table

NEIGHBOR_COLUMNS = ("neighbor", "AS", "family", "state", "since", "up", "sent", "recv",
                    "last error")
PREFIX_COLUMNS = ("prefix", "VIPs", "state", "since", "to peers", "why")
EVENT_COLUMNS = ("time", "kind", "peer", "event")
ERROR_WIDTH = 48   # DataTable columns never narrow again: long texts are clipped
WHY_WIDTH = 60
SHOWN_EVENTS = 100


def clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


class Bgp(View):
    TITLE = "BGP"
    FOCUS = "#bgp-prefixes"   # what W and a act on
    KEYS = (("↑ ↓", "move through the prefixes (tab: neighbors, events)"),
            ("W", "withdraw the selected prefix from the routers (asks first)"),
            ("a", "announce the selected prefix again (asks first)"),
            ("ctrl+p", "Maintenance of an LB: withdraw all its VIPs / end it"))

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self._nrows: dict[str, tuple[Any, ...]] = {}
        self._prows: dict[str, tuple[Any, ...]] = {}
        self._erows: dict[str, tuple[Any, ...]] = {}
        self._prefixes: dict[str, PrefixRow] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="bgp-title")
        yield _table("bgp-neighbors", NEIGHBOR_COLUMNS, {"last error": ERROR_WIDTH})
        yield Static(id="bgp-prefixes-title")
        with Horizontal(id="bgp-middle"):
            with Vertical(id="bgp-prefixes-box"):
                yield _table("bgp-prefixes", PREFIX_COLUMNS, {"why": WHY_WIDTH})
                yield Static(id="bgp-detail")
            yield Static(id="bgp-fleet")
        yield Static(id="bgp-events-title")
        yield _table("bgp-events", EVENT_COLUMNS, {})

    def selected(self) -> PrefixRow | None:
        """The prefix under the cursor of the prefixes table."""
        return self._prefixes.get(cell_key(self.query_one("#bgp-prefixes", DataTable)) or "")

    def redraw(self, fleet: Fleet) -> None:
        shown = speakers(fleet)
        several = len(shown) > 1
        show(self.query_one("#bgp-title", Static), self._title(fleet, shown))
        self._neighbors(shown, several)
        rows = prefix_rows(fleet)
        self._prefixes = {r.key: r for r in rows}
        up = sum(1 for r in rows if r.doc["announced"])
        head = Text("VIP prefixes", style="bold")
        head.append(f"   {up} of {len(rows)} announced" if rows else "   none")
        show(self.query_one("#bgp-prefixes-title", Static), head)

        def cells(key: str) -> tuple[Any, ...]:
            r = self._prefixes[key]
            p = r.doc
            state = "▲ announced" if p["announced"] else "▽ withdrawn"
            return ((f"{r.instance}/" if several else "") + p["prefix"], ", ".join(p["vips"]),
                    self.marked(state, CAUSE_ROLE.get(p["cause"], "foreground"),
                                bold=not p["announced"]),
                    clock(p["since"]) if p["since"] else "–",
                    ", ".join(p["peers"]) or "–", clip(p["reason"], WHY_WIDTH))

        sync_table(self.query_one("#bgp-prefixes", LiveTable), list(self._prefixes), cells,
                   self._prows)
        self._detail()
        fleet_box = self.query_one("#bgp-fleet", Static)
        fleet_box.display = len(speakers(fleet, every=True)) > 1
        show(fleet_box, self._fleet(fleet))
        self._events(fleet, several)

    # -- parts -----------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#bgp-prefixes")
    def _detail(self) -> None:
        """The selected prefix's why and peers in full (the table's column is clipped)."""
        row = self.selected()
        out = Text()
        if row is not None:
            p = row.doc
            out.append(f"{row.key}: ", style="bold")
            out.append(p["reason"], style=self.role(CAUSE_ROLE.get(p["cause"], "foreground")))
            out.append(f"  ·  to {', '.join(p['peers'])}" if p["peers"] else
                       "  ·  no established peer has it" if p["announced"] else "")
        show(self.query_one("#bgp-detail", Static), out)

    def _title(self, fleet: Fleet, shown: list[tuple[str, Any]]) -> Text:
        out = Text()
        if not shown:
            out.append("BGP is off", style="bold")
            out.append("   no agent this console follows has a [bgp] table: its VIPs reach "
                       "the routers by static routes, and there is nothing to show here"
                       if fleet.instances else "   waiting for the agents …")
            return out
        for i, (name, bgp) in enumerate(shown):
            if i:
                out.append("\n")
            out.append(name, style=f"bold {self.role('accent')}")
            role = "success" if bgp["speaker"] == "running" else "error"
            out.append("  ExaBGP ")
            out.append(bgp["speaker"], style=self.role(role))
            if bgp["pid"]:
                out.append(f" (pid {bgp['pid']})")
            if bgp["restarts"]:
                out.append(f", restarted {bgp['restarts']}x", style=self.role("warning"))
            out.append(f"  ·  AS {bgp['local_asn']}  ·  router id {bgp['router_id']}")
            for text, r in alerts(bgp):
                out.append(f"  {text}", style=f"bold {self.role(r)}")
            if bgp["maintenance"]:
                out.append(f" ({bgp['maintenance_by']})", style=self.role("warning"))
            if bgp["last_error"]:
                out.append(f"\n  ExaBGP: {bgp['last_error']}", style=self.role("error"))
        return out

    def _neighbors(self, shown: list[tuple[str, Any]], several: bool) -> None:
        peers = {f"{name}/{n['peer']}": (name, n) for name, bgp in shown
                 for n in bgp["neighbors"]}

        def cells(key: str) -> tuple[Any, ...]:
            name, n = peers[key]
            up = n["uptime"] if n["state"] == "established" else 0
            return ((f"{name}/" if several else "") + n["peer"], str(n["peer_asn"]),
                    n["family"].split()[0],
                    self.marked(SESSION_MARK.get(n["state"], n["state"]),
                                SESSION_ROLE.get(n["state"], "warning"),
                                bold=n["state"] != "established"),
                    clock(n["since"]) if n["since"] else "–", num(ago(up) if up else "–", 5),
                    num(str(n["updates_sent"]), 5),
                    num(str(n["updates_received"]), 5),
                    self.marked(clip(n["last_error"], ERROR_WIDTH), "error")
                    if n["last_error"] else "")

        sync_table(self.query_one("#bgp-neighbors", LiveTable), list(peers), cells,
                   self._nrows)

    def _fleet(self, fleet: Fleet) -> Text:
        """Which LBs carry each VIP prefix (with several instances)."""
        out = Text("Carried by\n", style="bold")
        for prefix, where in carriers(fleet).items():
            n = sum(1 for _, p in where if carried(p))
            out.append(f"{prefix:<20}", style=self.role("error") if n == 0 else "")
            for name, p in where:
                if carried(p):
                    out.append(f" ● {name}", style=self.role("success"))
                else:
                    out.append(f" ○ {name}", style=self.role(CAUSE_ROLE.get(p["cause"],
                                                                            "warning")))
            out.append("\n")
        return out

    def _events(self, fleet: Fleet, several: bool) -> None:
        evs = events(fleet)[:SHOWN_EVENTS]
        head = Text("Events", style="bold")
        head.append(f"   newest first, {len(evs)} shown" if evs else "   none yet")
        show(self.query_one("#bgp-events-title", Static), head)
        rows = {f"{name}/{e['time']!r}/{i}": (name, e) for i, (name, e) in
                enumerate(reversed(evs))}
        keys = list(rows)[::-1]
        role = {"notification": "error", "withdraw": "warning", "announce": "success",
                "operator": "accent"}

        def cells(key: str) -> tuple[Any, ...]:
            name, e = rows[key]
            return (clock(e["time"]), self.marked(e["kind"], role.get(e["kind"], "foreground")),
                    e["peer"], (f"{name}: " if several else "") + e["message"])

        sync_table(self.query_one("#bgp-events", LiveTable), keys, cells, self._erows)

    def help_note(self, fleet: Fleet) -> str:
        return ("A prefix is one VIP address (/32, /128) and carries every VIP at it. It is "
                "announced only while one of those VIPs has a healthy, undrained backend and "
                "no operator withdrew it; [b]why[/b] says which. Sessions: ● Established "
                "(routes flow), ◐ Connected (opening), ○ Idle (not connected yet), ✗ Down "
                "(lost; last error is the peer's reason, ExaBGP tries again). [b]Carried by[/b] "
                "(several LBs): ● announced to an established peer, ○ not.\n"
                "W and a ask first and say what the routers will do; read-only consoles "
                "cannot use them.")


def _table(id_: str, columns: tuple[str, ...], widths: dict[str, int]) -> LiveTable:
    table: LiveTable = LiveTable(id=id_, cursor_type="row")
    for name in columns:
        table.add_column(name, key=name, width=widths.get(name))
    return table
