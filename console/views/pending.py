"""BGP: its tab exists, and says plainly what will feed it.

No invented data: it shows what it will show, where it will come from,
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
