"""The console's messages: one dataclass per thing that happens, each with typed fields.

Two directions, one rule: data goes down as attributes, news comes up as messages.

- Up from an AgentLink's thread to the app (posted with the thread-safe
  post_message): AgentHello, SnapshotArrived, EventArrived, LinkLost, and from a
  TraceLink TraceArrived (the events themselves wait in the bounded feed). The link
  builds them, so the app's handlers get a Snapshot, a Status or an Event,
  never a bare dict with a kind string to dispatch on.
- Up from a view to the app: DetailsRequested, ProbeToggleRequested, ExamplesRequested,
  TraceFilterSubmitted, ExplainRequested, RedrawRequested. A view says
  what it wants; the app, which owns the links, the dialogs and the redraw
  schedule, decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message
from textual.widget import Widget

from console.model import BackendRow, KernelDropRow, VipRef
from xlb.api.protocol import Event, Probe, Snapshot, Status, TraceEvent


# -- from a link (one per agent socket) ------------------------------------------------
@dataclass
class AgentHello(Message):
    """Connected: the agent's status, which says who we are to it (operator or not)."""

    path: str
    status: Status


@dataclass
class SnapshotArrived(Message):
    """One tick of figures from the agent on `path`."""

    path: str
    snapshot: Snapshot


@dataclass
class EventArrived(Message):
    """A change, a health flip or an error the agent on `path` reports."""

    path: str
    event: Event


@dataclass
class TraceArrived(Message):
    """The trace feed (Fleet.trace) has news from `path`: events, a status or an error. One
    message however many batches came since the feed was last read."""

    path: str


@dataclass
class LinkLost(Message):
    """The connection to `path` failed or ended; the link keeps reconnecting."""

    path: str
    error: str


# -- from a view ----------------------------------------------------------------------
@dataclass
class DetailsRequested(Message):
    """Enter on a backend: the app shows it in full (it fetches the audit trail)."""

    ref: VipRef
    row: BackendRow


@dataclass
class RedrawRequested(Message):
    """A view's size changed and it draws to its width; the app coalesces the redraw."""

    view: Widget

    @property
    def control(self) -> Widget:
        return self.view


@dataclass
class ProbeToggleRequested(Message):
    """Enter on a probe: the app attaches it, or detaches it after asking."""

    instance: str
    probe: Probe


@dataclass
class ExamplesRequested(Message):
    """Enter on a kernel drop reason: the app shows its recent example packets."""

    row: KernelDropRow


@dataclass
class TraceFilterSubmitted(Message):
    """Enter in the Flows view's filter box: the app (re)starts the trace with `text`."""

    text: str


@dataclass
class ExplainRequested(Message):
    """Enter on a trace event: the app asks the agent on `path` to explain its flow."""

    path: str
    event: TraceEvent
