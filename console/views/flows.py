"""Flows: the live flow trace, newest first, and the way into "explain this flow".

The events wait in the fleet's bounded TraceFeed (filled by the TraceLinks'
threads); this view draws at most FRAME times a second whatever the rate,
and only the lines on screen (EventList), so it never falls behind: at
thousands of events a second it shows the rate and the newest ones. Pausing
freezes the rows (the feed keeps rolling). Starting, filtering and stopping
a trace are the app's work (it owns the links); the view shows the filter
box and the agent's error in it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import var
from textual.timer import Timer
from textual.widgets import Input, Static

from console.draw import ago, endpoint
from console.messages import ExplainRequested, TraceFilterSubmitted
from console.model import Fleet
from console.tracefeed import TraceRow
from console.views.base import View, show
from console.views.eventlist import Cell, EventList
from xlb.api.protocol import TraceEvent, TraceStatus, reason_kind
from xlb.units import human

FRAME = 0.25      # seconds between two redraws of the rows, at most
# What an on-call engineer reads first comes first: who, to where, which backend, how chosen,
# what happened; where it ran (queue, CPU) and the size last, past a 120-column screen's edge.
COLUMNS = ("time (UTC)", "source", "destination", "backend", "path", "verdict", "VIP", "q/cpu",
           "bytes")
PATH_LABEL = {"none": "–", "conn": "hit", "maglev": "new", "maglev_syn": "new SYN",
              "maglev_stale": "re-pick"}
PATH_ROLE = {"conn": "foreground", "maglev": "accent", "maglev_syn": "accent",
             "maglev_stale": "warning"}
KIND_ROLE = {"drop": "error", "tx": "success", "pass": "secondary"}
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


def with_sample(text: str, n: int) -> str:
    """The filter `text` with its `sample` term set to `n` (none for 1): the filter
    language's terms are joined by `and`, `sample N` is one of them."""
    terms = [t for t in _AND.split(text.strip()) if t and t.split()[0].lower() != "sample"]
    if n > 1:
        terms.append(f"sample {n}")
    return " and ".join(terms)


def clock(t: float) -> str:
    """An event's time as UTC clock time with milliseconds (agents may be elsewhere)."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def bad_word(text: str, message: str) -> tuple[int, int] | None:
    """Where in `text` the agent's error points: the word at its "(column N)", else the
    word it quotes after "got", else the first word it quotes that is in the text.
    (start, end); start == end: something is missing there. None: it does not say."""
    column = re.search(r"\(column (\d+)\)", message)
    if column:
        start = min(max(int(column.group(1)) - 1, 0), len(text))
        return start, start + len(text[start:].split(" ", 1)[0])
    quoted = re.findall(r"'([^']+)'", message)
    after = re.search(r"got '([^']+)'", message)
    for word in ([after.group(1)] if after else []) + quoted:
        m = re.search(r"(?<!\S)" + re.escape(word) + r"(?!\S)", text)
        if m:
            return m.start(), m.end()
    return None


class Flows(View):
    TITLE = "Flows"
    KEYS = (("/", "trace with a filter: src, dst, host PREFIX; sport, dport, port N; "
             "proto tcp|udp; vip NAME; backend ADDR; sample N; joined by `and` "
             "(empty: every packet)"),
            ("space", "pause / resume the table (the trace goes on)"),
            ("s", "sampling: keep 1 in N of the matching packets"),
            ("x", "stop the trace (it also stops by itself)"),
            ("e", "explain a flow: SRC[:SPORT] DST:DPORT [tcp|udp] [syn]"),
            ("enter", "explain the selected event's flow"),
            ("↑ ↓ home end", "move through the events (newest first)"))
    BINDINGS = [Binding("escape", "close_filter", "Close filter", show=False)]

    paused: var[bool] = var(False, init=False)

    def __init__(self, **kw: Any):
        super().__init__(**kw)
        self._fleet: Fleet | None = None
        self._rows: dict[int, TraceRow] = {}
        self._names: dict[str, str] = {}
        self._paused_seq = 0
        self._last = 0.0
        self._timer: Timer | None = None
        self._styles: dict[str, Style] = {}
        self.read_only = False  # the app says so: then the title says "watching"
        self.error_text = Text()  # the agent's last word on a filter, as shown

    def compose(self) -> ComposeResult:
        yield Static(id="fl-title")
        yield Static(id="fl-figures")
        yield Input(placeholder="filter, e.g. src 198.18.0.0/24 and dport 80; Enter starts, "
                                "Esc closes", id="fl-filter")
        yield Static(id="fl-error")
        yield EventList(COLUMNS, id="fl-list")

    def on_mount(self) -> None:
        self.query_one("#fl-filter").display = False
        self.query_one("#fl-error").display = False

    def restyle(self) -> None:
        """The theme changed: the cached cells carry the old one's colours."""
        self._styles.clear()
        self.query_one("#fl-list", EventList).restyle()

    # -- the filter box -------------------------------------------------------------------
    def open_filter(self, text: str) -> None:
        box = self.query_one("#fl-filter", Input)
        box.value = text
        box.display = True
        box.focus()

    def action_close_filter(self) -> None:
        self.query_one("#fl-filter").display = False
        self.query_one("#fl-error").display = False
        self.query_one("#fl-list").focus()

    def filter_failed(self, text: str, message: str) -> None:
        """The agent refused the filter: the box stays, the offending word marked."""
        self.open_filter(text)
        out = Text("✗ ", style=self.role("error"))
        out.append(message, style=self.role("error"))
        where = bad_word(text, message)
        if where is not None:
            out.append("\n  ")
            out.append(text[: where[0]])
            out.append(text[where[0]: where[1]] or " ", style=f"bold reverse {self.role('error')}")
            out.append(text[where[1]:])
        self.error_text = out
        error = self.query_one("#fl-error", Static)
        error.update(out)
        error.display = True

    def filter_accepted(self) -> None:
        self.action_close_filter()

    @on(Input.Submitted, "#fl-filter")
    def _submitted(self, event: Input.Submitted) -> None:
        self.post_message(TraceFilterSubmitted(event.value.strip()))

    @on(Input.Changed, "#fl-filter")
    def _typed(self) -> None:
        self.query_one("#fl-error").display = False

    # -- pause ------------------------------------------------------------------------------
    def watch_paused(self, paused: bool) -> None:
        if self._fleet is not None:
            self._paused_seq = self._fleet.trace.seq
            self._last = 0.0  # resuming shows the newest at once
            self.redraw(self._fleet)

    # -- selection --------------------------------------------------------------------------
    @on(EventList.Selected, "#fl-list")
    def _explain(self, message: EventList.Selected) -> None:
        row = self._rows.get(message.key)
        if row is not None:
            self.post_message(ExplainRequested(row.path, row.event))

    # -- drawing ----------------------------------------------------------------------------
    def events_arrived(self, fleet: Fleet) -> None:
        """New events in the feed: the rows are redrawn within FRAME, not once per batch."""
        self._fleet = fleet
        if self._timer is None:
            wait = max(0.01, self._last + FRAME - time.monotonic())  # 0 would upset Timer
            self._timer = self.set_timer(wait, self._frame)

    def _frame(self) -> None:
        self._timer = None
        if self._fleet is not None and self.is_attached:
            self.redraw(self._fleet)

    def redraw(self, fleet: Fleet) -> None:
        """The title and figures now; the rows too unless they were drawn less than FRAME
        ago (then within FRAME): snapshots and batches together never redraw them more
        often."""
        self._fleet = fleet
        self._names = dict(fleet.by_path)
        shown = {fleet.path_of(i.name) for i in fleet.shown()}
        statuses = {p: s for p, s in fleet.trace.status.items() if p in shown}
        show(self.query_one("#fl-title", Static), self._title(fleet, statuses))
        show(self.query_one("#fl-figures", Static), self._figures(fleet, statuses))
        if self.paused:
            return
        if time.monotonic() - self._last < FRAME:
            self.events_arrived(fleet)
            return
        self._last = time.monotonic()
        self.draw_rows(fleet, shown)

    def draw_rows(self, fleet: Fleet, shown: set[str | None]) -> None:
        rows = [r for r in fleet.trace.newest() if r.path in shown]
        self._rows = {r.seq: r for r in rows}
        several = len(fleet.instances) > 1
        self.query_one("#fl-list", EventList).set_rows(
            list(self._rows), lambda key: self._cells(self._rows[key], several))

    def _title(self, fleet: Fleet, statuses: dict[str, TraceStatus]) -> Text:
        t = Text()
        t.append("Flow trace", style="bold")
        running = {p: s for p, s in statuses.items() if s["running"]}
        now = time.time()
        if not statuses:
            why = "; ".join(sorted(set(fleet.trace.errors.values())))
            t.append("   " + (f"no trace feed: {why}" if why else "connecting …"),
                     style=self.role("warning" if why else "secondary"))
            return t
        if not running:
            t.append("   no trace runs", style=self.role("secondary"))
            t.append("   watching: only an operator starts one" if self.read_only else
                     "   / starts one (a filter, or Enter for every packet)")
            return t
        several = len(fleet.instances) > 1
        for path, s in running.items():
            t.append("   ● ", style=self.role("success"))
            if several:
                t.append(f"{self._names.get(path, path)}: ")
            t.append(s["filter"] or "every packet", style=f"bold {self.role('accent')}")
            t.append(f"  by {s['by']}, stops in {ago(s['expires'] - now)}")
        if self.read_only:
            t.append("   watching (read-only)", style=self.role("warning"))
        return t

    def _figures(self, fleet: Fleet, statuses: dict[str, TraceStatus]) -> Text:
        feed = fleet.trace
        t = Text()
        at_agent = sum(s["per_s"] for s in statuses.values())
        lost = sum(s["lost"] for s in statuses.values())
        t.append(f"{human(at_agent)} events/s traced · {human(feed.rate())}/s shown here · ")
        t.append(f"lost {human(lost)}", style=self.role("error") if lost else "")
        t.append(" (ring buffer full) · " if lost else " · ")
        t.append(f"skipped {human(feed.skipped)}", style=self.role("warning")
                 if feed.skipped else "")
        t.append(" (over the forwarding rate)" if feed.skipped else "")
        if self.paused:
            t.append("   ")
            t.append(f" PAUSED: {human(feed.seq - self._paused_seq)} new events "
                     "(space resumes) ", style=f"bold reverse {self.role('warning')}")
        return t

    def _style(self, role: str) -> Style:
        style = self._styles.get(role)
        if style is None:
            style = self._styles[role] = Style.parse(self.role(role))
        return style

    def _cells(self, row: TraceRow, several: bool) -> Sequence[Cell]:
        ev: TraceEvent = row.event
        where = f"q{ev['queue']} c{ev['cpu']}" if ev["source"] == "xdp" else "kernel"
        if several:
            where = f"{self._names.get(row.path, row.path)}/{where}"
        if ev["source"] == "kernel":
            verdict, role = f"kernel {ev['reason']}", "error"
        else:
            try:
                role = KIND_ROLE[reason_kind(ev["reason"])]
            except ValueError:
                role = "warning"
            verdict = ev["reason"]
        path = ev["path"]
        return ((clock(ev["time"]), None),
                (endpoint(ev["src"], ev["sport"]), None),
                (f"{endpoint(ev['dst'], ev['dport'])}/{ev['protocol']}", None),
                (ev["backend"] or "–", None),
                (PATH_LABEL.get(path, path), self._style(PATH_ROLE.get(path, "secondary"))),
                (verdict, self._style(role)), (ev["vip"] or "–", None), (where, None),
                (str(ev["length"]).rjust(5), None))

    def help_note(self, fleet: Fleet) -> str:
        paths = ("[b]path[/b]: hit = the connection table's recorded backend; new = Maglev "
                 "for a flow without an entry (new SYN: a TCP SYN, which always asks Maglev); "
                 "re-pick = the entry's backend was gone, Maglev chose again.")
        note = ("The agent checks a filter; a bad one is shown under the box with the word "
                "it points at, and nothing starts. A trace stops by itself after 5 minutes. "
                "lost = events the data plane could not write (its ring buffer was full); "
                "skipped = events the agent did not forward to this console (its rate "
                "limit); the table shows the newest.\n\n" + paths)
        if self.read_only:
            note += "\n\nRead-only: watching only; /, s and x are disabled."
        return note
