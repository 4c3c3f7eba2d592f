"""ExamplesScreen: the last packets the kernel dropped with one reason."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.dialogs.base import Dialog
from console.draw import endpoint
from console.model import KernelDropRow
from xlb.units import human


class ExamplesScreen(Dialog[None]):
    """A kernel drop reason's figures and its recent example 5-tuples; Esc or q closes."""

    FRAME = "tall"
    BINDINGS = [Binding("q", "cancel", "Close")]

    def __init__(self, row: KernelDropRow):
        super().__init__(f"Kernel drops: {row.reason}")
        self.row = row

    def compose_body(self) -> ComposeResult:
        r = self.row
        head = (f"{human(r.per_s)}/s now, {human(r.total)} since the probe attached, "
                f"{human(r.lb_total)} of them from or to this load balancer's VIPs and "
                "backends.")
        lines = [f"  {_when(p['time'])}  {p['protocol']:<6} "
                 f"{endpoint(p['src'], p['sport'])} → {endpoint(p['dst'], p['dport'])}"
                 for p in r.examples]
        body = ("Recent packets (newest first):\n" + "\n".join(lines) if lines else
                "The kernel kept no example packet for this reason (yet).")
        yield Static(head, id="dialog-body", markup=False)
        with VerticalScroll():
            yield Static(body, id="examples-body", markup=False)  # addresses: [fd00::1]
        yield Static("Esc or q closes", id="dialog-hint")


def _when(t: float) -> str:
    """The agent's time of the drop, as UTC clock time (the agent may be on another host)."""
    return time.strftime("%H:%M:%S UTC", time.gmtime(t))
