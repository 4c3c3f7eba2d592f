"""The BGP speaker of AgentDouble (tests/agent_double.py): a TEST DOUBLE.

A model of the agent's route health injection over the double's VIPs, in the
protocol's shapes (Bgp, BgpChange; tests check they conform): two neighbors
(one per family, established), one prefix per VIP address, announced while a
VIP at the address has a serving backend and no operator withdrew it or put the
LB in maintenance; operator withdraw/announce/maintenance with the agent's
refusals; an event log. The console and `xlb bgp` are tested against it, so
they are written against the protocol, not against the real agent's internals.
Not thread-safe by itself: AgentDouble calls it under its lock. Only tests and
bench/ use it.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from typing import Any

from xlb.api import protocol as P
from xlb.errors import InvalidParams, RefusedError

LOCAL_ASN, PEER_ASN = 65001, 65000
PID = 4242
FROZEN_AGE = 3600.0   # a frozen double's "now" is this long after its start: fixed pictures


def prefix_of(vip: str) -> str:
    """"198.19.0.10:80/tcp" or "[fd00::10]:80/tcp" -> "198.19.0.10/32", "fd00::10/128"."""
    addr = vip.rsplit("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return f"{addr}/{32 if ipaddress.ip_address(addr).version == 4 else 128}"


def _family(prefix: str) -> str:
    return "ipv6 unicast" if ":" in prefix else "ipv4 unicast"


def _serving(b: dict[str, Any]) -> bool:
    return b["state"] == "active" and b["weight"] > 0 and b["health"] == "up"


class BgpDouble:
    """Route health injection over `vips` (the double's own list, changed in place)."""

    def __init__(self, vips: list[dict[str, Any]], instance: str, frozen: bool, started: float,
                 enabled: bool = True, router: tuple[str, str] = ("198.18.1.1",
                                                                  "fd00:5f1b:18:1::1")):
        self.vips, self.instance, self.frozen, self.enabled = vips, instance, frozen, enabled
        self.base = started if frozen else time.time() - 600  # up for 10 minutes
        self.maintenance_by = ""
        self.withdrawn: dict[str, str] = {}          # prefix -> "who at when" (operator)
        self.events: deque[P.BgpEvent] = deque(maxlen=P.MAX_BGP_EVENTS)
        self._announced: dict[str, bool] = {}
        self._since: dict[str, float] = {}
        self.neighbors: dict[str, P.BgpNeighbor] = {}
        for peer in router if enabled else ():
            self.neighbors[peer] = {
                "peer": peer, "local_address": "", "peer_asn": PEER_ASN, "local_asn": LOCAL_ASN,
                "family": _family(peer), "state": "established", "since": self.base + 1,
                "uptime": 0.0, "last_error": "", "updates_sent": 0, "updates_received": 0}
            self._event("session", peer, f"session established (AS {PEER_ASN})", self.base + 1)

    def clock(self) -> float:
        return self.base + FROZEN_AGE if self.frozen else time.time()

    def _event(self, kind: P.BgpEventKind, peer: str, message: str,
               when: float | None = None) -> None:
        self.events.append({"time": self.clock() if when is None else when, "kind": kind,
                            "peer": peer, "message": message})

    # -- what tests do to it -------------------------------------------------------------
    def session(self, peer: str, state: P.BgpSessionState, error: str = "") -> None:
        """A session changes state (the peer went away, sent a NOTIFICATION, came back)."""
        n = self.neighbors[peer]
        n["state"], n["since"] = state, self.clock()
        if error:
            n["last_error"] = error
        self._event("notification" if error else "session", peer,
                    f"session {state}" + (f": {error}" if error else ""))

    # -- the protocol ---------------------------------------------------------------------
    def status(self) -> P.Bgp:
        """The Bgp document; events for prefixes that changed since the last one."""
        if not self.enabled:
            return P.empty_bgp()
        now = self.clock()
        prefixes = self._prefixes(now)
        for n in self.neighbors.values():
            n["uptime"] = now - n["since"] if n["state"] == "established" else 0.0
        return {"enabled": True, "speaker": "running", "pid": PID, "restarts": 0,
                "last_error": "", "local_asn": LOCAL_ASN, "router_id": "198.18.1.2",
                "maintenance": bool(self.maintenance_by), "maintenance_by": self.maintenance_by,
                "neighbors": [dict(n) for n in self.neighbors.values()],  # type: ignore[misc]
                "prefixes": prefixes, "events": list(self.events)}

    def _prefixes(self, now: float) -> list[P.BgpPrefix]:
        by_prefix: dict[str, list[dict[str, Any]]] = {}
        for v in self.vips:
            by_prefix.setdefault(prefix_of(v["vip"]), []).append(v)
        out: list[P.BgpPrefix] = []
        for prefix, vips in by_prefix.items():
            cause, reason = self._why(prefix, vips)
            announced = cause == "serving"
            if self._announced.get(prefix) != announced:
                first = prefix not in self._announced
                self._announced[prefix] = announced
                self._since[prefix] = self.base + 2 if first else now
                self._event("announce" if announced else "withdraw", "",
                            f"{prefix} {'announced' if announced else 'withdrawn'}: {reason}",
                            self._since[prefix])
                for n in self.neighbors.values():
                    if n["state"] == "established" and n["family"] == _family(prefix):
                        n["updates_sent"] += 1
            peers = [n["peer"] for n in self.neighbors.values() if announced
                     and n["state"] == "established" and n["family"] == _family(prefix)]
            out.append({"prefix": prefix, "vips": [v["name"] for v in vips],
                        "announced": announced, "cause": cause, "reason": reason,
                        "since": self._since[prefix], "peers": peers})
        return out

    def _why(self, prefix: str, vips: list[dict[str, Any]]) -> tuple[P.BgpCause, str]:
        if self.maintenance_by:
            return "maintenance", f"withdrawn by {self.maintenance_by}: maintenance"
        if prefix in self.withdrawn:
            return "operator", f"withdrawn by {self.withdrawn[prefix]}"
        health = "; ".join(f"{v['name']}: {sum(map(_serving, v['backends']))} of "
                           f"{len(v['backends'])} backends healthy and undrained" for v in vips)
        if any(_serving(b) for v in vips for b in v["backends"]):
            return "serving", health
        return "no_backend", health

    def change(self, user: str, action: str, vip: str | None, every: bool) -> P.BgpChange:
        """bgp_withdraw / bgp_announce, with the agent's rules and refusals."""
        if not self.enabled:
            raise RefusedError(f"bgp_{action}: instance {self.instance} has no [bgp] table")
        if (vip is None) == (not every):
            raise InvalidParams("give exactly one of 'vip' and 'all'")
        who = f"{user} at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.clock()))}"
        names = {prefix_of(v["vip"]) for v in self.vips}
        if every:
            targets = sorted(names)
            if action == "withdraw":
                changed = not self.maintenance_by
                self.maintenance_by = self.maintenance_by or who
            else:
                changed = bool(self.maintenance_by or self.withdrawn)
                self.maintenance_by = ""
                self.withdrawn.clear()
            if changed:
                what = "begun" if action == "withdraw" else "ended"
                self._event("operator", "", f"maintenance {what} by {user}")
        else:
            prefix = self._resolve(vip or "")
            targets = [prefix]
            if action == "announce" and self.maintenance_by:
                raise RefusedError(f"{self.instance} is in maintenance (since "
                                   f"{self.maintenance_by}): `xlb bgp announce --all` ends it")
            changed = (prefix in self.withdrawn) != (action == "withdraw")
            if action == "withdraw":
                self.withdrawn.setdefault(prefix, who)
            else:
                self.withdrawn.pop(prefix, None)
            if changed:
                self._event("operator", "", f"bgp {action} {prefix} by {user}")
        docs = [p for p in self._prefixes(self.clock()) if p["prefix"] in targets]
        return {"changed": changed, "maintenance": bool(self.maintenance_by), "prefixes": docs}

    def _resolve(self, vip: str) -> str:
        """A VIP name or address (any spelling, or its prefix) -> its prefix."""
        for v in self.vips:
            if vip == v["name"]:
                return prefix_of(v["vip"])
        try:
            addr = ipaddress.ip_address(vip.split("/")[0].strip("[]"))
        except ValueError:
            addr = None
        for v in self.vips:
            p = prefix_of(v["vip"])
            if addr is not None and ipaddress.ip_address(p.split("/")[0]) == addr:
                return p
        raise RefusedError(f"no VIP {vip!r} on {self.instance}")
