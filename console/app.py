"""`xlb console`: the Textual app on-call engineers run over SSH.

A client of one or more agents (AgentLink per socket, each in its own
thread). What the links hear arrives as typed messages (console.messages);
the app folds snapshots into the Fleet model and redraws the visible view
only, coalescing bursts. Views get the fleet handed down and send their
requests up as messages. Changes run in workers, so no key ever waits on the
network. Quitting leaves the load balancer exactly as it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Static, TabbedContent, TabPane

from console import themes
from console.bgpmodel import PrefixRow, alerts, speakers
from console.dialogs import BackendScreen, ConfirmScreen, ExamplesScreen, HelpScreen, WeightScreen
from console.dialogs.backend import audit_lines
from console.draw import ago, clip, one_line
from console.footer import Footer
from console.link import AgentLink
from console.messages import (
    AgentHello,
    DetailsRequested,
    EventArrived,
    ExamplesRequested,
    ExplainRequested,
    LinkLost,
    ProbeToggleRequested,
    RedrawRequested,
    SnapshotArrived,
    TraceArrived,
    TraceFilterSubmitted,
)
from console.model import BackendRow, Fleet, VipRef
from console.modes import Modes
from console.routing import Routing
from console.tracing import Tracing
from console.views.backends import Backends
from console.views.base import View, show
from console.views.bgp import Bgp
from console.views.drops import Drops
from console.views.flows import Flows
from console.views.overview import Overview
from console.views.probes import Probes
from xlb.api.protocol import MAX_WEIGHT, AuditEntry, ProbeChange
from xlb.errors import AgentUnavailable, RefusedError, XlbError

NARROW = 110             # below this many columns the layout stacks
STALE = 5.0              # seconds without a snapshot before the header says so

VIEWS: tuple[tuple[str, type[View]], ...] = (
    ("overview", Overview), ("backends", Backends), ("drops", Drops), ("bgp", Bgp),
    ("flows", Flows), ("probes", Probes))
VIP_VIEWS = (Overview, Backends)  # the views with a selected VIP (v, V; m switches its mode)
BACKENDS_ACTIONS = {"next_sort"}
FLOWS_ACTIONS = {"pause", "explain"}      # Flows, anyone
# the changes, each in the views it acts in: operators only
OPERATOR_ACTIONS: dict[str, tuple[type[View], ...]] = {
    **dict.fromkeys(("drain", "undrain", "weight"), (Backends,)),
    **dict.fromkeys(("sample", "stop_trace"), (Flows,)),
    **dict.fromkeys(("bgp_withdraw", "bgp_announce"), (Bgp,)),
    "mode": VIP_VIEWS,
    "xdp_mode": tuple(cls for _, cls in VIEWS if cls is not Flows),  # in Flows x stops the trace
}
# what a read-only console cannot do beyond its keys, in the help's words
READ_ONLY_MORE: dict[type[View], str] = {Bgp: "maintenance", Probes: "enter (attach, detach)"}
QUIT_MESSAGE = ("xlb console closed. The load balancer keeps running: nothing was changed by "
                "quitting. (In the lab, `xlb lab down` removes everything.)")


class XlbConsole(App[None]):
    TITLE = "xlb console"
    CSS_PATH = str(themes.stylesheet())
    BINDINGS = [
        *(Binding(str(i + 1), f"show_view('{name}')", cls.TITLE, show=False)
          for i, (name, cls) in enumerate(VIEWS)),
        Binding("v", "next_vip(1)", "VIP▸"),
        Binding("V", "next_vip(-1)", "◂VIP", show=False),
        Binding("s", "next_sort", "Sort", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("space", "pause", "Pause"),
        Binding("s", "sample", "Sampling"),
        Binding("e", "explain", "Explain"),
        Binding("d", "drain", "Drain"),
        Binding("u", "undrain", "Undrain"),
        Binding("w", "weight", "Weight"),
        Binding("m", "mode", "Mode"),
        Binding("x", "stop_trace", "Stop trace"),
        Binding("x", "xdp_mode", "XDP"),
        Binding("W", "bgp_withdraw", "Withdraw"),
        Binding("a", "bgp_announce", "Announce"),
        Binding("i", "next_instance", "Instance"),
        Binding("t", "next_theme", "Theme", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_console", "Quit"),
    ]
    GLOBAL_KEYS = (("1 … 6", "Overview, Backends, Drops, BGP, Flows, Probes"),
                   ("tab", "move between the tabs and the view"),
                   ("ctrl+p", "command palette: every action by name"),
                   ("x", "XDP mode native ↔ generic, asks first (Flows: stop trace)"),
                   ("t", "next theme (remembered)"),
                   ("i", "focus one instance / the whole fleet (with several agents)"),
                   ("?", "this help"),
                   ("q", "quit (the load balancer keeps running)"))

    def __init__(self, sockets: list[str], read_only: bool = False, theme: str | None = None):
        super().__init__()
        self.fleet = Fleet(sockets)
        self.read_only_flag = read_only
        self.links = {p: AgentLink(p, self.post_message, read_only) for p in sockets}
        self._themes = themes.load_themes()
        self._xlb_themes = [t.name for t in self._themes]
        self._wanted_theme = theme or themes.remembered() or themes.DEFAULT
        self._redraw_pending = False
        self.tracing = Tracing(self, self.fleet, self.links, self.schedule_redraw)
        self.routing = Routing(self, self.fleet, self.links)
        self.modes = Modes(self, self.fleet, self.links)
        self.redraws = 0  # how many times the view was redrawn (bursts coalesce)

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Notifications quote agents and addresses ([fd00::1]:80): plain text by default."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    # -- layout --------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with TabbedContent(id="views", initial="overview"):
            for i, (name, cls) in enumerate(VIEWS):
                with TabPane(f"{i + 1} {cls.TITLE}", id=name):
                    yield cls(id=f"view-{name}")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for t in self._themes:
            self.register_theme(t)
        self.theme = (self._wanted_theme if self._wanted_theme in self.available_themes
                      else themes.DEFAULT)
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        for link in self.links.values():
            link.start()
        self.set_interval(1.0, self._draw_status)
        self._draw_status()
        self._apply_width(self.size.width)

    def _theme_changed(self, theme: Any) -> None:
        themes.remember(theme.name)
        for view in self.query("#view-flows").results(Flows):  # none while shutting down
            view.restyle()

    def on_unmount(self) -> None:
        self.tracing.follow(False)
        for link in self.links.values():
            link.stop()

    def on_resize(self, event: Any) -> None:
        self._apply_width(event.size.width)

    def _apply_width(self, width: int) -> None:
        self.screen.set_class(width < NARROW, "narrow")
        # at 80 columns the keys need the whole footer: ctrl+p stays, listed by ?
        for footer in self.query(Footer).results(Footer):
            footer.show_command_palette = width >= NARROW

    # -- data in (from the links' threads) ---------------------------------------------------
    def on_agent_hello(self, msg: AgentHello) -> None:
        self.fleet.hello(msg.path, msg.status)
        self._link_changed()
        self.schedule_redraw()

    def on_snapshot_arrived(self, msg: SnapshotArrived) -> None:
        self.fleet.snapshot(msg.path, msg.snapshot)
        self.schedule_redraw()  # only new figures redraw the view

    def on_link_lost(self, msg: LinkLost) -> None:
        self.fleet.lost(msg.path, msg.error)
        self._link_changed()

    def _link_changed(self) -> None:
        self.refresh_bindings()  # read-only or not may have changed
        self._draw_status()

    def on_event_arrived(self, msg: EventArrived) -> None:
        name = self.fleet.by_path.get(msg.path, msg.path)
        event = msg.event
        if event["kind"] == "health":
            state = "back up" if event["healthy"] else f"DOWN ({event['reason']})"
            self.notify(f"{name}: backend {event['address']} {state}",
                        severity="information" if event["healthy"] else "warning")
        elif event["kind"] == "error":
            self.notify(f"{name}: {event['message']}", severity="error")
        elif event["kind"] == "alarm":
            self.notify(f"{name}: {event['message']}", title="ALARM",
                        severity="warning" if event["cleared"] else "error", timeout=30)
        elif event["kind"] == "panic":  # a VIP failing open: loud until it ends
            self.notify(f"{name}: {event['message']}",
                        severity="error" if event["panic"] else "information",
                        timeout=3600 if event["panic"] else 10)

    def on_trace_arrived(self, msg: TraceArrived) -> None:
        view = self.current_view()
        if isinstance(view, Flows):
            view.events_arrived(self.fleet)  # at most a few redraws a second, however many

    def on_redraw_requested(self, msg: RedrawRequested) -> None:
        if msg.view is self.current_view():  # a hidden view is redrawn when shown
            self.schedule_redraw()

    def schedule_redraw(self) -> None:
        """Many messages in a burst make one redraw, after the burst is handled."""
        if not self._redraw_pending:
            self._redraw_pending = True
            self.call_later(self._redraw)

    def _redraw(self) -> None:
        self._redraw_pending = False
        self.redraws += 1
        self._draw_status()
        view = self.current_view()
        if isinstance(view, Flows):
            view.read_only = self.read_only()
        elif isinstance(view, Overview):
            ref = self.backends_view().selected_vip(self.fleet)
            view.selected = ref.key if ref else None
        if view is not None and view.is_attached:
            try:
                view.redraw(self.fleet)
            except NoMatches:  # a message that arrives while the app shuts down
                pass

    # -- header ---------------------------------------------------------------------------------
    def read_only(self) -> bool:
        return self.read_only_flag or not self.fleet.operator()

    def _draw_status(self) -> None:
        now = time.time()
        parts = ["[b]xlb[/b]"]
        for path, link in self.fleet.links.items():
            inst = self.fleet.instances.get(self.fleet.by_path.get(path, ""))
            name = escape(self.fleet.by_path.get(path, path))
            age = now - inst.snap["time"] if inst else None
            if link.connected and age is not None and age > STALE:
                parts.append(f"[$warning]{name} ◌ no data for {ago(age)}[/]")
            elif link.connected:
                parts.append(f"[$success]{name} ● live[/]")
            else:
                parts.append(f"[$error]{name} ✗ disconnected {ago(now - link.since)} "
                             f"(reconnecting): {escape(clip(link.error, 40))}[/]")
            for text, role in alerts(inst.snap["bgp"]) if inst else ():
                parts.append(f"[reverse ${role}] {name} {text} [/]")
            for alarm in inst.snap["alarms"] if inst else ():
                if alarm["active"]:
                    parts.append(f"[reverse $error] ⚠ ALARM {name}: {alarm['what']} [/]")
                else:
                    parts.append(f"[$warning]⚠ {name}: {alarm['what']} restored "
                                 f"{ago(now - alarm['since'])} ago[/]")
        if len(self.fleet.instances) > 1:
            parts.append(f"focus: {escape(self.fleet.focus or 'whole fleet')}")
        connected = any(link.connected for link in self.fleet.links.values())
        if self.read_only_flag or (connected and not self.fleet.operator()):
            why = "--read-only" if self.read_only_flag else "read-only credentials"
            parts.append(f"[reverse $warning] READ-ONLY ({why}) [/]")
        for status in self.query("#status").results(Static):  # none while shutting down
            show(status, "  │  ".join(parts))

    # -- views -----------------------------------------------------------------------------------
    def current_view(self) -> View | None:
        try:  # None during start-up and shut-down, when the panes do not exist
            active = self.query_one("#views", TabbedContent).active
            return self.query_one(f"#view-{active}", View)
        except NoMatches:
            return None

    def backends_view(self) -> Backends:
        return self.query_one("#view-backends", Backends)

    def action_show_view(self, name: str) -> None:
        self.query_one("#views", TabbedContent).active = name
        self._focus_view(name)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self.tracing.follow(isinstance(self.current_view(), Flows))
        self.refresh_bindings()
        self.schedule_redraw()

    def _focus_view(self, name: str) -> None:
        view = self.query_one(f"#view-{name}", View)
        tables = view.query(view.FOCUS)
        if tables:
            tables.first().focus()
        elif self.focused is not None and any(isinstance(a, View) for a in
                                              self.focused.ancestors):
            # a table of the old view keeps the focus when hidden, and Textual would move it
            # to that view's next table, switching the tab back
            self.screen.set_focus(None)
        self.schedule_redraw()

    def action_next_instance(self) -> None:
        if len(self.fleet.instances) < 2:
            self.notify("only one instance: nothing to switch", severity="information")
            return
        focus = self.fleet.cycle_focus()
        self.notify(f"showing {focus or 'the whole fleet'}")
        self.schedule_redraw()

    def action_next_theme(self) -> None:
        names = self._xlb_themes
        i = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(i + 1) % len(names)]
        self.notify(f"theme {self.theme}")

    def action_help(self) -> None:
        view = self.current_view()
        title = view.TITLE if view else "xlb"
        keys = list(view.KEYS) if view else []
        if isinstance(view, Flows):
            view.read_only = self.read_only()  # its note says what a read-only user may do
        note = view.help_note(self.fleet) if view else ""
        if isinstance(view, Backends) and not self.read_only():
            note = ("d asks before draining; a change the agent refuses (e.g. the last healthy "
                    "backend) is shown, and you may then force it.")
        if view is not None and not isinstance(view, Flows) and self.read_only():
            # every view but Flows has x (the XDP mode): the list is never empty
            off = [b.key for b in self.BINDINGS if isinstance(b, Binding)
                   and b.action in OPERATOR_ACTIONS
                   and isinstance(view, OPERATOR_ACTIONS[b.action])]
            off += [READ_ONLY_MORE[type(view)]] if type(view) in READ_ONLY_MORE else []
            listed = ", ".join(off[:-1]) + f" and {off[-1]}" if len(off) > 1 else off[0]
            note += f"\n\nRead-only: {listed} {'are' if len(off) > 1 else 'is'} disabled."
        self.push_screen(HelpScreen(title, keys, list(self.GLOBAL_KEYS), note.strip()))

    def action_quit_console(self) -> None:
        self.exit(message=QUIT_MESSAGE)

    def action_next_vip(self, step: int) -> None:
        self.backends_view().next_vip(self.fleet, step)
        self.schedule_redraw()  # the Overview marks the selected VIP too

    def action_next_sort(self) -> None:
        self.backends_view().action_next_sort()

    def action_filter(self) -> None:
        view = self.current_view()
        if isinstance(view, Flows):
            self.tracing.open_filter(view)
        else:
            self.backends_view().action_filter()

    def flows_view(self) -> Flows:
        return self.query_one("#view-flows", Flows)

    def action_pause(self) -> None:
        view = self.flows_view()
        view.paused = not view.paused

    def action_sample(self) -> None:
        self.tracing.sample(self.flows_view())

    def action_stop_trace(self) -> None:
        self.tracing.stop()

    def action_explain(self) -> None:
        self.tracing.explain()

    def on_trace_filter_submitted(self, msg: TraceFilterSubmitted) -> None:
        self.tracing.start(self.flows_view(), msg.text)

    def on_explain_requested(self, msg: ExplainRequested) -> None:
        self.tracing.explain(msg.path, msg.event)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        view = self.current_view()
        if action == "filter":
            if isinstance(view, Flows):
                return None if self.read_only() else True
            return isinstance(view, Backends)
        if action in FLOWS_ACTIONS:
            return isinstance(view, Flows)
        if action in OPERATOR_ACTIONS:  # its view only; shown greyed out when read-only
            if not isinstance(view, OPERATOR_ACTIONS[action]):
                return False
            return None if self.read_only() else True
        if action in BACKENDS_ACTIONS:
            return isinstance(view, Backends)
        if action == "next_vip":
            return isinstance(view, VIP_VIEWS)
        if action == "next_instance":
            return len(self.fleet.instances) > 1
        return True

    # -- changes ---------------------------------------------------------------------------------
    def _selection(self) -> tuple[VipRef, BackendRow] | None:
        view = self.backends_view()
        ref, row = view.selected_vip(self.fleet), view.selected_backend(self.fleet)
        if ref is None or row is None:
            self.notify("select a backend in the Backends view first (2, then ↑ ↓)",
                        severity="warning")
            return None
        return ref, row

    def _refuse_read_only(self) -> bool:
        if self.read_only():
            self.notify("read-only: this console cannot change the load balancer",
                        severity="error")
            return True
        return False

    def action_drain(self) -> None:
        sel = None if self._refuse_read_only() else self._selection()
        if sel is None:
            return
        ref, row = sel
        body = (f"Drain backend {row.address} in VIP {ref.name} ({ref.label}) on {ref.instance}?"
                f"\n\nIt gets no new connections. Its {row.active_connections} active "
                "connection(s) stay on it until they close; the other backends take the new "
                "ones.")
        self.push_screen(ConfirmScreen("Drain backend", body, yes="Drain"),
                         lambda yes: self._change(ref, "drain", {"address": row.address})
                         if yes else self.notify("drain cancelled: nothing changed"))

    def action_undrain(self) -> None:
        sel = None if self._refuse_read_only() else self._selection()
        if sel is not None:
            ref, row = sel
            self._change(ref, "undrain", {"address": row.address})

    def action_weight(self) -> None:
        sel = None if self._refuse_read_only() else self._selection()
        if sel is None:
            return
        ref, row = sel

        def chosen(weight: int | None) -> None:
            if weight is None:
                self.notify("weight unchanged")
            elif weight == 0:
                body = (f"Weight 0 for {row.address} in VIP {ref.name} on {ref.instance} takes "
                        "it out of the Maglev table: no new connections; established ones "
                        "stay until they close.")
                self.push_screen(ConfirmScreen("Weight 0", body, yes="Set weight 0"),
                                 lambda yes: self._change(ref, "weight", {
                                     "address": row.address, "weight": 0}) if yes else None)
            else:
                self._change(ref, "weight", {"address": row.address, "weight": weight})

        self.push_screen(WeightScreen(row.address, ref.name, row.weight), chosen)

    def action_details(self) -> None:
        """Details of the selected backend (command palette; Enter comes as a message)."""
        sel = self._selection()
        if sel is not None:
            self._show_details(*sel)

    def on_details_requested(self, msg: DetailsRequested) -> None:
        self._show_details(msg.ref, msg.row)

    def _show_details(self, ref: VipRef, row: BackendRow) -> None:
        """Everything about a backend at once, then who changed it when."""
        inst = self.fleet.instances.get(ref.instance)
        screen = BackendScreen(ref, row, inst.snap if inst else None)
        self.push_screen(screen)
        self.run_worker(self._load_audit(ref, row.address, screen), group="audit")

    def _link(self, instance: str) -> AgentLink | None:
        """The link to the agent that owns `instance`, once it has said who it is."""
        return self.links.get(self.fleet.path_of(instance) or "")

    async def _load_audit(self, ref: VipRef, address: str, screen: BackendScreen) -> None:
        link = self._link(ref.instance)
        if link is None:
            screen.show_audit([f"not connected to {ref.instance}"])
            return
        try:
            entries: list[AuditEntry] = await asyncio.to_thread(link.call, "audit", n=500)
        except XlbError as e:
            screen.show_audit([f"the audit log could not be read: {e}"])
            return
        screen.show_audit(audit_lines(entries, address))

    def _change(self, ref: VipRef, method: str, params: dict[str, Any]) -> None:
        self.run_worker(self._send(ref, method, {**params, "vip": ref.name}), group="changes")

    async def _send(self, ref: VipRef, method: str, params: dict[str, Any]) -> None:
        link = self._link(ref.instance)
        what = f"{method} {params.get('address')} in {ref.name}"
        if link is None:
            self.notify(f"{what}: not connected to {ref.instance}", severity="error")
            return
        try:
            await asyncio.to_thread(link.call, method, **params)
        except AgentUnavailable as e:
            self.notify(f"{what}: {ref.instance} unreachable: {e}", severity="error", timeout=8)
            return
        except RefusedError as e:
            if "force" in str(e) and not params.get("force"):
                body = f"The agent refused: {e}\n\nDo it anyway?"
                self.push_screen(ConfirmScreen("Refused by the agent", body, yes="Force"),
                                 lambda yes: self._change(ref, method, {**params, "force": True})
                                 if yes else self.notify("nothing changed"))
            else:
                self.notify(f"{what}: {e}", title="refused", severity="error", timeout=8)
            return
        except XlbError as e:
            self.notify(f"{what}: {e}", title="refused", severity="error", timeout=8)
            return
        self.notify(f"{what}: done on {ref.instance}", title="applied")

    # -- modes: a VIP's forwarding mode, the XDP mode (console/modes.py) -----------------------
    def action_mode(self) -> None:
        """m: the selected VIP's forwarding mode, DSR <-> SNAT (asks first)."""
        if self._refuse_read_only():
            return
        ref = self.backends_view().selected_vip(self.fleet)
        if ref is None:
            self.notify("no VIP yet: waiting for the agent's first snapshot", severity="warning")
            return
        self.modes.vip(ref)

    def action_xdp_mode(self) -> None:
        """x (outside Flows): the XDP mode of the instance shown, native <-> generic."""
        if not self._refuse_read_only():
            self.modes.xdp()

    # -- BGP: withdraw, announce, maintenance (console/routing.py) -----------------------------
    def bgp_view(self) -> Bgp:
        return self.query_one("#view-bgp", Bgp)

    def action_bgp_withdraw(self) -> None:
        row = None if self._refuse_read_only() else self._prefix()
        if row is not None:
            self.routing.withdraw(row)

    def action_bgp_announce(self) -> None:
        row = None if self._refuse_read_only() else self._prefix()
        if row is not None:
            self.routing.announce(row)

    def _prefix(self) -> PrefixRow | None:
        row = self.bgp_view().selected()
        if row is None:
            self.notify("select a prefix in the BGP view first (4, then ↑ ↓)",
                        severity="warning")
        return row

    def _maintenance(self, instance: str, begin: bool) -> None:
        if not self._refuse_read_only():
            self.routing.maintenance(instance, begin)

    # -- probes and kernel drops ---------------------------------------------------------------
    def on_probe_toggle_requested(self, msg: ProbeToggleRequested) -> None:
        """Enter on a probe: attach it at once, detach it only after a yes."""
        if self._refuse_read_only():
            return
        name, inst = msg.probe["name"], msg.instance
        if msg.probe["state"] != "attached":
            self.run_worker(self._probe(inst, "probe_attach", name), group="changes")
            return
        body = (f"Detach probe {name} ({msg.probe['target']}) on {inst}?\n\nWhat it feeds "
                f"({msg.probe['doc']}) stops until it is attached again. The load balancer's "
                "traffic is not affected.")

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._probe(inst, "probe_detach", name), group="changes")
            else:
                self.notify("detach cancelled: nothing changed")

        self.push_screen(ConfirmScreen("Detach probe", body, yes="Detach"), answered)

    async def _probe(self, instance: str, method: str, name: str) -> None:
        what = f"{method.replace('_', ' ')} {name}"
        link = self._link(instance)
        if link is None:
            self.notify(f"{what}: not connected to {instance}", severity="error")
            return
        try:
            change: ProbeChange = await asyncio.to_thread(link.call, method, name=name)
        except XlbError as e:
            self.notify(f"{what}: {one_line(str(e))}", title="refused", severity="error",
                        timeout=8)
            return
        p = change["probe"]
        state = p["state"] + (f": {one_line(p['reason'])}" if p["reason"] else "")
        self.notify(f"{what} on {instance}: {state}", title="applied" if change["changed"]
                    else "unchanged", severity="warning" if p["state"] == "unavailable"
                    else "information")

    def on_examples_requested(self, msg: ExamplesRequested) -> None:
        self.push_screen(ExamplesScreen(msg.row))

    # -- command palette -------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for name, cls in VIEWS:
            yield SystemCommand(f"Show {cls.TITLE}", f"switch to the {cls.TITLE} view",
                                lambda n=name: self.action_show_view(n))
        if not self.read_only():
            yield SystemCommand("Drain selected backend", "no new flows; established stay",
                                self.action_drain)
            yield SystemCommand("Undrain selected backend", "new flows again",
                                self.action_undrain)
            yield SystemCommand("Set weight of selected backend", f"0..{MAX_WEIGHT}",
                                self.action_weight)
        yield SystemCommand("Details of selected backend", "figures and audit trail",
                            self.action_details)
        if not self.read_only():
            for ref in self.fleet.vips():
                other = "SNAT" if ref.mode == "dsr" else "DSR"
                yield SystemCommand(f"Forwarding mode of VIP {ref.key}: {other}",
                                    f"now {ref.mode.upper()}; established flows keep theirs "
                                    "(asks first)", lambda r=ref: self.modes.vip(r))
            for inst in self.fleet.shown():
                if inst.snap["xdp_mode"] is not None:
                    other = "generic" if inst.snap["xdp_mode"] == "native" else "native"
                    yield SystemCommand(f"XDP mode of {inst.name}: {other}",
                                        f"now {inst.snap['xdp_mode']}; re-attach (asks first)",
                                        lambda i=inst.name: self._xdp_of(i))
        if not self.read_only():
            yield SystemCommand("Withdraw selected prefix", "BGP: the routers stop sending "
                                "it to this LB", self.action_bgp_withdraw)
            yield SystemCommand("Announce selected prefix", "BGP: the routers send it to this "
                                "LB again", self.action_bgp_announce)
            for name, bgp in speakers(self.fleet, every=True):  # the one that applies
                if not bgp["maintenance"]:
                    yield SystemCommand(f"Maintenance: withdraw every VIP of {name}",
                                        "the routers move its traffic to the other LBs",
                                        lambda n=name: self._maintenance(n, True))
                if bgp["maintenance"] or any(p["cause"] == "operator" for p in bgp["prefixes"]):
                    yield SystemCommand(f"End maintenance of {name}", "announce its serving "
                                        "VIPs again, every operator withdrawal ends",
                                        lambda n=name: self._maintenance(n, False))
        for ref in self.fleet.vips():
            yield SystemCommand(f"Backends of VIP {ref.key}", ref.label,
                                lambda k=ref.key: self._show_vip(k))
        yield SystemCommand("Sort backends by next column", "address, weight, state, shares…",
                            self.backends_view().action_next_sort)
        yield SystemCommand("Filter backends", "by address, state or health",
                            self._filter_backends)
        yield SystemCommand("Explain a flow", "which backend a 5-tuple goes to, and why",
                            self._explain_flow)
        if not self.read_only():
            yield SystemCommand("Trace flows", "start or change the flow trace's filter",
                                self._trace_flows)
        for t in self._xlb_themes:
            yield SystemCommand(f"Theme {t}", "remembered for next time",
                                lambda t=t: setattr(self, "theme", t))
        if len(self.fleet.instances) > 1:
            yield SystemCommand("Focus next instance", "one instance or the whole fleet",
                                self.action_next_instance)
        yield SystemCommand("Keys (help)", "every key of this view", self.action_help)

    def _xdp_of(self, instance: str) -> None:
        """The palette's XDP switch of one instance: focus it first (x acts on the one
        shown)."""
        if len(self.fleet.instances) > 1:
            self.fleet.focus = instance
            self.schedule_redraw()
        self.modes.xdp()

    def _filter_backends(self) -> None:
        self.action_show_view("backends")
        self.action_filter()

    def _explain_flow(self) -> None:
        self.action_show_view("flows")
        self.tracing.explain()

    def _trace_flows(self) -> None:
        self.action_show_view("flows")
        self.tracing.open_filter(self.flows_view())

    def _show_vip(self, key: str) -> None:
        self.action_show_view("backends")
        self.backends_view().vip_key = key

