"""BGP, Flows: their tabs exist, and say plainly what will feed them.

No invented data: each shows what it will show, where it will come from,
and that it is not configured yet.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from console.model import Fleet
from console.views.base import View


class Pending(View):
    FEED = ""

    def compose(self) -> ComposeResult:
        yield Static(f"[b]{self.TITLE}: not configured yet[/b]\n\n{self.FEED}", id="pending-text",
                     markup=True)

    def redraw(self, fleet: Fleet) -> None:
        return None  # nothing live to draw until its data source exists


class Bgp(Pending):
    TITLE = "BGP"
    FEED = ("Fed by the agent's ExaBGP supervisor: neighbours (peer, ASN, state, uptime, last "
            "error), the announced VIP prefixes and the route event log, with keys to announce "
            "and withdraw. The agents this console follows run no BGP speaker yet, so there is "
            "nothing to show.")


class Flows(Pending):
    TITLE = "Flows"
    FEED = ("Fed by the data plane's flow-trace ring buffer: time, RX queue, CPU, 5-tuple, VIP, "
            "backend, verdict, new or established; sampled 1/N or filtered by 5-tuple, with "
            "pause and \"explain this 5-tuple\". The data plane does not emit flow traces yet.")

