"""The app's half of the BGP view: withdraw and announce a prefix, maintenance of an LB.

Each one asks first, in words about what the routers will do and which other
LBs (of those this console follows) carry the VIP meanwhile, because taking a
VIP off an LB is harmless only if another LB announces it. The call runs in a
worker; the agent's answer (or refusal) comes back as a notification. The app
refuses all of it on a read-only console before anything is asked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.app import App

from console.bgpmodel import PrefixRow, carried, carriers, others_carrying, speakers
from console.dialogs import ConfirmScreen
from console.link import AgentLink
from console.model import Fleet
from xlb.api.protocol import BgpChange
from xlb.errors import XlbError

FLOWS_STAY = "Established flows keep their backend: every LB picks the same one."


class Routing:
    """`app` runs the dialogs and workers; `fleet` and `links` are the app's."""

    def __init__(self, app: App[Any], fleet: Fleet, links: dict[str, AgentLink]):
        self.app, self.fleet, self.links = app, fleet, links

    def withdraw(self, row: PrefixRow) -> None:
        if not row.doc["announced"]:
            self.app.notify(f"{row.label} is not announced by {row.instance} "
                            f"({row.doc['reason']}): nothing to withdraw")
            return
        others = others_carrying(self.fleet, row)
        then = (f"{', '.join(others)} carr{'ies' if len(others) == 1 else 'y'} it. {FLOWS_STAY}"
                if others else "No other LB this console follows carries it: unless another "
                "LB announces it, clients lose this VIP.")
        body = (f"Withdraw {row.label} from the routers on {row.instance}?\n\nThe routers stop "
                f"sending {row.address} to {row.instance}; {then}\n\nIt stays withdrawn, "
                "across agent restarts, until it is announced again (a).")
        self._ask("Withdraw prefix", body, "Withdraw", True, row.instance, "bgp_withdraw",
                  {"vip": row.address}, f"withdraw {row.doc['prefix']}")

    def announce(self, row: PrefixRow) -> None:
        inst = self.fleet.instances.get(row.instance)
        if inst is not None and inst.snap["bgp"]["maintenance"]:
            self.app.notify(f"{row.instance} is in maintenance: end it first (ctrl+p, "
                            f"End maintenance of {row.instance})", severity="warning")
            return
        if row.doc["announced"]:
            self.app.notify(f"{row.label} is announced by {row.instance} already")
            return
        others = others_carrying(self.fleet, row)
        body = (f"Announce {row.label} from {row.instance} again?\n\nThe routers add "
                f"{row.instance} as a next hop for {row.address}"
                + (f" beside {', '.join(others)}" if others else "")
                + f" and spread new flows over them. {FLOWS_STAY}")
        if row.doc["cause"] == "no_backend":
            body += ("\n\nIt has no healthy, undrained backend now: it is announced once "
                     "one is.")
        self._ask("Announce prefix", body, "Announce", False, row.instance, "bgp_announce",
                  {"vip": row.address}, f"announce {row.doc['prefix']}")

    def maintenance(self, instance: str, begin: bool) -> None:
        bgp = dict(speakers(self.fleet, every=True)).get(instance)
        if bgp is None:
            self.app.notify(f"{instance} runs no BGP", severity="warning")
            return
        mine = [p["prefix"].split("/")[0] for p in bgp["prefixes"]]
        if begin:
            alone = [prefix.split("/")[0] for prefix, where in carriers(self.fleet).items()
                     if any(name == instance for name, _ in where)
                     and not any(carried(p) for name, p in where if name != instance)]
            body = (f"Put {instance} in maintenance: withdraw every VIP prefix it announces "
                    f"({len(mine)})?\n\nThe routers stop sending {', '.join(mine) or 'them'} "
                    f"to {instance} within seconds and move the traffic to the other LBs. "
                    f"{FLOWS_STAY}\n\n{instance} stays out of rotation, even across an agent "
                    "restart, until maintenance ends.")
            if alone:
                body += ("\n\nNo other LB this console follows carries "
                         f"{', '.join(alone)}: unless another LB announces it, its clients "
                         "lose it.")
            self._ask("Maintenance", body, "Withdraw all", True, instance, "bgp_withdraw",
                      {"all": True}, "maintenance")
        else:
            body = (f"End maintenance of {instance}: announce every VIP prefix that serves "
                    "again (per-prefix withdrawals end too)?\n\nThe routers add "
                    f"{instance} as a next hop for {', '.join(mine) or 'them'} and spread new "
                    f"flows over the LBs. {FLOWS_STAY}")
            self._ask("End maintenance", body, "Announce all", False, instance,
                      "bgp_announce", {"all": True}, "end maintenance")

    def _ask(self, title: str, body: str, yes: str, danger: bool, instance: str, method: str,
             params: dict[str, Any], what: str) -> None:
        def answered(ok: bool | None) -> None:
            if ok:
                self.app.run_worker(self._send(instance, method, params, what), group="changes")
            else:
                self.app.notify(f"{what} cancelled: nothing changed")

        self.app.push_screen(ConfirmScreen(title, body, yes=yes, danger=danger), answered)

    async def _send(self, instance: str, method: str, params: dict[str, Any],
                    what: str) -> None:
        link = self.links.get(self.fleet.path_of(instance) or "")
        if link is None:
            self.app.notify(f"{what}: not connected to {instance}", severity="error")
            return
        try:
            change: BgpChange = await asyncio.to_thread(link.call, method, **params)
        except XlbError as e:
            self.app.notify(f"{what} on {instance}: {e}", title="refused", severity="error",
                            timeout=8)
            return
        self.app.notify(f"{what} on {instance}: " + ("done" if change["changed"] else
                                                     "it was so already"),
                        title="applied" if change["changed"] else "unchanged")
