"""The app's half of the mode keys: `m` a VIP's forwarding mode, `x` the XDP mode.

Each asks first (console/dialogs/mode.py), in words about what happens to new
and established flows, what the backends will see, and what can go wrong, from
the figures the agent sends (its SNAT pools, whether the driver can do native
XDP). The agent owns the rules and the switch: the console only asks, and the
agent's answer or refusal comes back as a notification. The app refuses all of
it on a read-only console before anything is asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from textual.app import App

from console.dialogs.mode import ModeScreen
from console.draw import one_line
from console.link import AgentLink
from console.model import Fleet, Instance, VipRef
from xlb.api.protocol import ChangeResult, Mode, XdpModeChange
from xlb.errors import XlbError

FAILOVER = ("SNAT flows die with this LB (no other LB has their translations); DSR flows "
            "carry on through any LB.")


class Modes:
    """`app` runs the dialogs and workers; `fleet` and `links` are the app's."""

    def __init__(self, app: App[Any], fleet: Fleet, links: dict[str, AgentLink]):
        self.app, self.fleet, self.links = app, fleet, links

    # -- m: a VIP's forwarding mode ------------------------------------------------------
    def vip(self, ref: VipRef) -> None:
        inst = self.fleet.instances.get(ref.instance)
        if inst is None:
            self.app.notify(f"not connected to {ref.instance}", severity="error")
            return
        after: Mode = "snat" if ref.mode == "dsr" else "dsr"
        warning = ""
        if after == "snat":
            pool, warning = _pool(inst, ref.family)
            seen = (f"{pool}, never the clients' addresses: they need no decapsulation and "
                    "no VIP.")
        else:
            seen = ("the clients' own addresses, in IP-in-IP: they need the decapsulation "
                    "and the VIP on loopback.")
        points = [("New flows", NEW_FLOWS[after]),
                  ("Open flows", f"keep {ref.mode.upper()} until they close: none is reset "
                                 "or moved" + ("; their replies still cross the LB." if
                                               ref.mode == "snat" else ".")),
                  ("Backends see", seen),
                  ("Failover", FAILOVER)]
        screen = ModeScreen("Forwarding mode", f"VIP {ref.name} ({ref.label}) on {ref.instance}",
                            ref.mode.upper(), after.upper(), points, warning,
                            yes=f"Switch to {after.upper()}")

        def applied(change: ChangeResult) -> tuple[str, bool]:
            before = (change["before"].get(ref.name) or {}).get("mode", ref.mode)
            now = (change["after"].get(ref.name) or {}).get("mode", after)
            if before == now:
                return f"VIP {ref.name} forwards new flows by {now.upper()} already", False
            return (f"VIP {ref.name}: new flows {now.upper()}; established flows keep "
                    f"{before.upper()} until they close", True)

        self._ask(screen, ref.instance, "mode", {"vip": ref.name, "mode": after},
                  f"VIP {ref.name} to {after.upper()}", applied)

    # -- x: the XDP mode -----------------------------------------------------------------
    def xdp(self) -> None:
        shown = self.fleet.shown()
        if len(shown) != 1:
            self.app.notify("x switches one instance's XDP mode: focus one first (i)",
                            severity="warning")
            return
        inst = shown[0]
        snap, iface = inst.snap, inst.snap["interface"] or "its interface"
        now = snap["xdp_mode"]
        if now is None:
            self.app.notify(f"{inst.name}: no XDP program attached yet: nothing to switch",
                            severity="warning")
            return
        after = "generic" if now == "native" else "native"
        native = snap.get("xdp_native")
        if after == "native" and native is False:
            self.app.notify(f"{inst.name}: the driver of {iface} has no native XDP, so the "
                            "program stays in generic mode", title="native XDP impossible",
                            severity="warning", timeout=8)
            return
        points = [("How", f"the program is detached from {iface} and attached again in "
                          f"{after} mode: every map stays (connections, translations, "
                          "counters)."),
                  ("The gap", "packets in the gap (tens of ms) go to the kernel's own path; "
                              "connections survive."),
                  (after.capitalize(), XDP_MODES[after]),
                  ("Kept", "across agent restarts, until switched again.")]
        warning = ("The kernel does not say whether this driver can do native XDP: if the "
                   "attach fails, the agent puts generic back and says why."
                   if after == "native" and native is None else "")
        screen = ModeScreen("XDP mode", f"{inst.name} on {iface}", now, after, points, warning,
                            yes=f"Re-attach {after}", danger=True)

        def applied(change: XdpModeChange) -> tuple[str, bool]:
            if change["before"] == change["after"]:
                return f"XDP {change['after']} on {change['interface']} already", False
            return (f"XDP {change['after']} on {change['interface']} (was {change['before']}); "
                    f"gap {change['gap_seconds'] * 1000:.1f} ms, its packets went to the "
                    "kernel", True)

        self._ask(screen, inst.name, "xdp_mode", {"mode": after}, f"XDP {after}", applied)

    # -- both --------------------------------------------------------------------------
    def _ask(self, screen: ModeScreen, instance: str, method: str, params: dict[str, Any],
             what: str, applied: Callable[[Any], tuple[str, bool]]) -> None:
        def answered(ok: bool | None) -> None:
            if ok:
                self.app.run_worker(self._send(instance, method, params, what, applied),
                                    group="changes")
            else:
                self.app.notify(f"{what} cancelled: nothing changed")

        self.app.push_screen(screen, answered)

    async def _send(self, instance: str, method: str, params: dict[str, Any], what: str,
                    applied: Callable[[Any], tuple[str, bool]]) -> None:
        link = self.links.get(self.fleet.path_of(instance) or "")
        if link is None:
            self.app.notify(f"{what}: not connected to {instance}", severity="error")
            return
        try:
            change = await asyncio.to_thread(link.call, method, **params)
        except XlbError as e:
            self.app.notify(f"{what} on {instance}: {one_line(str(e))}", title="refused",
                            severity="error", timeout=10)
            return
        text, changed = applied(change)
        self.app.notify(f"{instance}: {text}", title="applied" if changed else "unchanged")


NEW_FLOWS: dict[Mode, str] = {
    "snat": "the LB rewrites them to the backend (source: a SNAT address and port of its "
            "own); the replies come back through the LB.",
    "dsr": "go IP-in-IP to the backend, which answers the client directly.",
}
XDP_MODES = {
    "native": "runs in the driver, before the kernel allocates a buffer: the fastest.",
    "generic": "runs after the kernel allocates a buffer: any driver, slower than native.",
}


def _pool(inst: Instance, family: int) -> tuple[str, str]:
    """The instance's SNAT pool for `family` as the dialog says it, and a warning when it
    has none (the agent will refuse)."""
    snat = inst.snap.get("snat")  # None from an agent older than the modes
    pool = (snat["pool_v4"] if family == 4 else snat["pool_v6"]) if snat else None
    if not pool or not snat:
        return "(none)", (f"{inst.name} has no IPv{family} SNAT pool ([instance] "
                          f"snat_pool_v{family}): the agent will refuse.")
    return f"{pool}, ports {snat['port_min']}-{snat['port_max']}", ""
