"""Overview: is traffic flowing, which queue/CPU is hot, is every VIP healthy."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from console.bgpmodel import alerts, carried, vip_prefix
from console.draw import ago, bar, spark
from console.model import (
    EXHAUSTED_MARK,
    LOST_STATE_SECONDS,
    Fleet,
    Instance,
    napi_exhaustion,
    softirq_percent,
)
from console.views.base import View, show
from xlb.units import human

SPARK_WIDTH = 24


class Overview(View):
    TITLE = "Overview"
    KEYS = (("v / V", "select the next / previous VIP (▸ in the VIPs list)"),
            ("m", "switch the selected VIP's mode, DSR ↔ SNAT (asks first)"),
            ("i", "focus one instance / the whole fleet"))

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self.selected: str | None = None  # the app says which VIP is selected (its key)

    def compose(self) -> ComposeResult:
        yield Static(id="ov-summary")
        with Horizontal(id="ov-middle"):
            with VerticalScroll(id="ov-queues-box"):
                yield Static(id="ov-queues")
            with Vertical(id="ov-side"):
                with VerticalScroll(id="ov-cpus-box"):
                    yield Static(id="ov-cpus")
                with VerticalScroll(id="ov-vips-box"):
                    yield Static(id="ov-vips")

    def help_note(self, fleet: Fleet) -> str:
        return ("RX queues: a queue is ▲ HOT above 1.5x the mean. With the napi probe "
                "attached, ◆ NAPI n% marks a queue whose NAPI polls used their whole budget "
                f"in n% of polls (shown from {EXHAUSTED_MARK:.0%}): the kernel reports NAPI "
                "per device, NAPI id and CPU, so the LB interface's NAPI ids in id order are "
                "its queues 0, 1, ... (worst CPU per id).\n"
                "CPUs: busy % (psutil) and si %: with the softirq probe attached, the CPU's time "
                "in NET_RX softirq ('si: NET_RX, probe'); otherwise psutil's figure for all "
                "softirqs ('si: all softirqs, psutil').\n"
                "VIPs: DSR or SNAT, how each forwards its new flows (established flows keep "
                "the mode they started in: after a switch, Modes shows traffic in both); ▲ BGP "
                "its address is announced to an established router, ▽ BGP it is not (the "
                "BGP view, 4, says why).\n"
                "XDP: the mode the program runs in; 'driver has no native XDP' when the "
                "interface's driver cannot run it natively (x then offers no switch).")

    def redraw(self, fleet: Fleet) -> None:
        show(self.query_one("#ov-summary", Static), self._summary(fleet))
        show(self.query_one("#ov-queues", Static), self._queues(fleet))
        show(self.query_one("#ov-cpus", Static), self._cpus(fleet))
        show(self.query_one("#ov-vips", Static), self._vips(fleet))

    # -- parts ---------------------------------------------------------------------------
    def _summary(self, fleet: Fleet) -> Text:
        out = Text()
        shown = fleet.shown()
        if not shown:
            out.append("Waiting for the first snapshot from ", style=self.role("warning"))
            out.append(", ".join(fleet.links) or "no agent", style="bold")
            out.append(" …")
            return out
        for inst in shown:
            out.append_text(self._identity(inst))
            out.append("\n")
            for alarm in inst.snap["alarms"]:  # in full here; the header only names them
                role = "error" if alarm["active"] else "warning"
                out.append("⚠ ALARM " if alarm["active"] else "⚠ restored ",
                           style=f"bold {self.role(role)}")
                out.append(f"{alarm['message']}\n", style=self.role(role))
        t = fleet.totals()
        width = max(8, min(SPARK_WIDTH, (self.size.width - 60) // 3 or SPARK_WIDTH))
        drop_role = "error" if t["drop_pps"] > 0 else "success"
        out.append("Traffic ", style="bold")
        out.append(f"{human(t['pps']):>7} pps ")
        out.append(spark(fleet.history("pps"), width), style=self.role("primary"))
        out.append(f"  {human(t['bps']):>7}bit/s ")
        out.append(spark(fleet.history("bps"), width), style=self.role("primary"))
        out.append(f"  drops {human(t['drop_pps']):>6}/s ", style=self.role(drop_role))
        out.append(spark(fleet.history("drops"), width), style=self.role(drop_role))
        out.append("\n")
        out.append_text(self._misses(fleet, width))
        out.append("\nModes   ", style="bold")
        out.append_text(self.mode_figures(fleet.modes()))
        if len(shown) > 1:
            out.append("\nFleet   ", style="bold")
            out.append("   ".join(
                f"{i.name} {human(i.snap['totals']['pps'])} pps"
                for i in shown))
        return out

    def _misses(self, fleet: Fleet, width: int) -> Text:
        """Connection-table misses: SYN ones are new connections; non-SYN ones are flows
        whose state was lost (a restart with new maps, evictions, another LB that carried
        them), highlighted once they last LOST_STATE_SECONDS."""
        syn, non_syn, lasting = fleet.misses()
        lost = lasting >= LOST_STATE_SECONDS
        role = self.role("warning") if lost else ""
        out = Text()
        out.append("Misses  ", style="bold")
        out.append(f"SYN {human(syn):>6}/s   ")
        out.append(f"non-SYN {human(non_syn):>6}/s ", style=f"bold {role}" if lost else "")
        out.append(spark(fleet.history("non_syn"), width),
                   style=role or self.role("primary"))
        if lost:
            out.append(f" ▲ flows without state for {ago(lasting)}", style=f"bold {role}")
        return out

    def _identity(self, inst: Instance) -> Text:
        s = inst.snap
        mode = s["xdp_mode"] or "?"
        t = Text()
        t.append(s["instance"], style=f"bold {self.role('accent')}")
        t.append(f" on {s['host']}  ·  LB mode {s['lb_mode'].upper()}  ·  XDP ")
        t.append(mode, style=self.role("success" if mode == "native" else "warning"))
        t.append(f" on {s['interface'] or '?'}")
        if s.get("xdp_native") is False:  # None: unknown, or an agent from before the modes
            t.append(" (driver has no native XDP)", style=self.role("warning"))
        t.append(f"  ·  up {ago(s['uptime'])}")
        for text, role in alerts(s["bgp"]):  # only what is wrong: details in BGP (4)
            t.append(f"  {text}", style=f"bold {self.role(role)}")
        return t

    def _queues(self, fleet: Fleet) -> Text:
        rows = fleet.queue_rows()
        out = Text()
        several = len({r.instance for r in rows}) > 1
        out.append(f"RX queues  ({len(rows)})\n", style="bold")
        if not rows:
            out.append("no queue has carried traffic yet")
            return out
        top = max((r.pps for r in rows), default=0.0) or 1.0
        width = self.query_one("#ov-queues").size.width or 60
        bar_w = max(6, min(30, width - 40))
        exhausted = {i.name: napi_exhaustion(i.snap) for i in fleet.shown()}
        mark_w = 11 if any(exhausted.values()) else 0  # room for " ◆ NAPI 60%"
        spark_w = max(0, min(40, width - bar_w - 30 - mark_w))
        for r in rows:
            name = f"{r.instance}/q{r.queue}" if several else f"q{r.queue}"
            role = "error" if r.hot else "primary"
            out.append(f"{name:>8} ")
            out.append(bar(r.pps / top, bar_w), style=self.role(role))
            out.append(f" {human(r.pps):>6} pps ")
            if spark_w:
                out.append(spark(r.history, spark_w), style=self.role(role))
            if r.hot:
                out.append(" ▲ HOT", style=f"bold {self.role('error')}")
            shares = exhausted.get(r.instance, [])
            if r.queue < len(shares) and shares[r.queue] >= EXHAUSTED_MARK:
                out.append(f" ◆ NAPI {shares[r.queue]:.0%}", style=f"bold {self.role('warning')}")
            out.append("\n")
        return out

    def _cpus(self, fleet: Fleet) -> Text:
        out = Text()
        for inst in fleet.shown()[:1]:  # the instances share this host's CPUs in the lab
            cpus = inst.snap["cpus"]
            softirq, source = softirq_percent(inst.snap)
            label = "si: NET_RX, probe" if source == "NET_RX" else "si: all softirqs, psutil"
            out.append(f"CPU  busy ({label})  {inst.name}\n", style="bold")
            if not cpus:
                out.append("the agent sends no CPU figures")
            width = max(6, min(20, (self.query_one("#ov-cpus").size.width or 40) - 24))
            for i, c in enumerate(cpus):
                busy, si = c["busy"], softirq[i] if i < len(softirq) else 0.0
                role = "error" if busy >= 90 else "warning" if busy >= 70 else "success"
                out.append(f"cpu{i:<3}")
                out.append(bar(busy / 100, width), style=self.role(role))
                out.append(f" {busy:3.0f}% (si {si:3.0f}%)\n")
        return out

    def _vips(self, fleet: Fleet) -> Text:
        out = Text()
        vips = fleet.vips()
        out.append(f"VIPs  ({len(vips)})\n", style="bold")
        several = len({v.instance for v in vips}) > 1
        width = self.query_one("#ov-vips").size.width or 80
        wide = width >= 56  # room for the address
        name_w = max((len(f"{v.instance}/{v.name}" if several else v.name) for v in vips),
                     default=0)
        label_w = max((len(v.label) for v in vips), default=0)
        # mark, name, mode, address, "n/m healthy", rate: the word "healthy" goes first
        # when a line would wrap (IPv6 addresses in the fleet's narrower panel)
        counts_w = max((len(f"{v.healthy}/{v.total}") for v in vips), default=0)
        said = 3 + name_w + 1 + 5 + (max(label_w, 22) + 1 if wide else 0) + counts_w + 8 + 11
        healthy = " healthy" if said <= width - 2 else ""
        for v in vips:
            start = len(out)
            ok = v.healthy == v.total and v.total > 0
            role = "success" if ok else "error" if v.healthy == 0 else "warning"
            mark = "✓" if ok else "✗" if v.healthy == 0 else "!"
            name = f"{v.instance}/{v.name}" if several else v.name
            out.append("▸" if v.key == self.selected else " ", style=f"bold {self.role('accent')}")
            out.append(f"{mark} ", style=f"bold {self.role(role)}")
            out.append(f"{name:<{name_w}} ")
            out.append(f"{v.mode.upper():<4} ", style=self.role("accent" if v.mode == "snat"
                                                               else "foreground"))
            out.append(f"{v.label:<22} " if wide else "")
            out.append(f"{v.healthy}/{v.total}{healthy}", style=self.role(role))
            out.append(f" {human(v.pps):>6} pps")
            if v.panic:
                out.append(" PANIC", style=f"bold {self.role('error')}")
            inst = fleet.instances.get(v.instance)
            route = vip_prefix(inst.snap["bgp"], v.name) if inst else None
            # announced to the routers? (the BGP view says why), where the line has room
            if route is not None and len(out) - start + 6 < width - 2:
                out.append(" ▲ BGP" if carried(route) else " ▽ BGP",
                           style=self.role("success" if carried(route) else "warning"))
            out.append("\n")
        return out
