"""Each neighbor's session as ExaBGP's messages tell it: state, reason, counters, routes.

A pure state machine fed with parsed messages (xlb.bgp.messages) and the time, so it is
tested without ExaBGP. What people need is kept in their words: a down reason with its
NOTIFICATION spelt out and, for a bad peer AS, which AS was seen against which was
configured. A peer that keeps failing the same way (unreachable, wrong ASN: ExaBGP retries
every few seconds) yields one event, not one per retry, and a bare "connection closed
before the OPEN" does not hide the more telling error that came before it. Which prefixes
a neighbor carries is taken from the UPDATEs ExaBGP reports it sent (announced minus
withdrawn), cleared when the session drops: what the router has, not what we asked for.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from xlb.addresses import parse_address
from xlb.api import protocol as P
from xlb.bgp import messages as M
from xlb.bgp.settings import BgpSettings, Neighbor

# (kind, peer, message) for the event log
Event = tuple[P.BgpEventKind, str, str]

NO_OPEN = ("connection closed before the peer's OPEN: the peer is unreachable, not "
           "listening, or not configured for this address")


def canonical(address: str) -> str:
    """An address ExaBGP reports, in the spelling the settings use (xlb.addresses); any
    other text as it is."""
    addr = parse_address(address)
    return address if addr is None else str(addr)


@dataclass
class Session:
    neighbor: Neighbor
    state: P.BgpSessionState = "idle"
    since: float = 0.0
    local: str = ""                 # the local address ExaBGP reports using
    last_error: str = ""
    sent: int = 0
    received: int = 0
    carried: set[str] = field(default_factory=set)
    open_asn: int = 0               # the AS in the peer's last OPEN (since connected)
    notified: str = ""              # the last NOTIFICATION received (since connected), words
    reported: str = ""              # the last down reason put in the event log

    def set_state(self, state: P.BgpSessionState, now: float) -> None:
        if state != self.state:
            self.state, self.since = state, now


class Neighbors:
    """Every [[bgp.neighbor]]'s session, keyed by canonical address."""

    def __init__(self, settings: BgpSettings) -> None:
        self.local_asn = settings.local_asn
        self.sessions = {nb.address: Session(nb) for nb in settings.neighbors}  # canonical

    def apply(self, msg: M.Message, now: float) -> list[Event]:
        """Fold one message in; the events it is worth (often none)."""
        if isinstance(msg, M.Ack):
            return []
        s = self.sessions.get(canonical(msg.peer)) if msg.peer else None
        if s is None:
            return []
        if isinstance(msg, M.State):
            return self._state(s, msg, now)
        if isinstance(msg, M.Notification):
            return self._notification(s, msg)
        if isinstance(msg, M.Open):
            if msg.direction == "receive":
                s.open_asn = msg.asn
            return []
        return self._update(s, msg)

    def _state(self, s: Session, msg: M.State, now: float) -> list[Event]:
        peer = canonical(msg.peer)
        if msg.local:
            s.local = canonical(msg.local)
        if msg.state == "connected":
            was_up = s.state == "established"
            s.set_state("connected", now)
            s.carried.clear()
            s.open_asn, s.notified = 0, ""
            return [("session", peer, "session lost; connecting again")] if was_up else []
        if msg.state == "up":
            s.set_state("established", now)
            s.last_error, s.reported = "", ""
            return [("session", peer, f"session established (AS {s.neighbor.asn})")]
        if msg.state != "down":
            return []
        was_up = s.state == "established"
        why = self._why(s, msg.reason)
        # a connection closed before any OPEN says less than the error before it (BIRD
        # turns connections away for a while after refusing one): keep that one
        if why != NO_OPEN or not s.last_error:
            s.last_error = why
        s.set_state("down", now)
        s.carried.clear()
        if was_up:
            s.reported = s.last_error
            return [("session", peer, f"session down: {s.last_error}")]
        if s.last_error != s.reported:
            s.reported = s.last_error
            return [("session", peer, f"no session: {s.last_error}")]
        return []

    def _why(self, s: Session, reason: str) -> str:
        if reason.startswith("notification received") and s.notified:
            return f"notification received: {s.notified}"
        words = M.reason_words(reason)
        if reason.startswith("notification sent (2,2)") and s.open_asn:
            return (f"{words}: the peer's OPEN says AS {s.open_asn}, "
                    f"the neighbor's asn is {s.neighbor.asn}")
        if reason == "closing connection" and s.state == "connected" and not s.open_asn:
            return NO_OPEN
        if reason.startswith("stop"):
            return "ExaBGP stopped the session (shutting down)"
        return words

    def _notification(self, s: Session, msg: M.Notification) -> list[Event]:
        if msg.direction != "receive":
            return []
        words = M.notification_words(msg.code, msg.subcode, msg.data)
        if (msg.code, msg.subcode) == (2, 2):  # the peer refused the AS in our OPEN
            words += f": the peer does not accept our AS {self.local_asn}"
        s.notified = words
        s.last_error = f"notification received: {words}"
        if s.last_error == s.reported:
            return []
        s.reported = s.last_error
        return [("notification", canonical(msg.peer), s.last_error)]

    def _update(self, s: Session, msg: M.Update) -> list[Event]:
        if msg.direction == "send":
            s.sent += 1
            s.carried.update(canonical_prefix(p) for p in msg.announced)
            s.carried.difference_update(canonical_prefix(p) for p in msg.withdrawn)
        elif msg.direction == "receive":
            s.received += 1
        return []

    def speaker_gone(self, why: str, now: float) -> list[Event]:
        """ExaBGP ended: every session it had is gone (the routers drop its routes)."""
        events: list[Event] = []
        for peer, s in self.sessions.items():
            s.carried.clear()
            s.open_asn, s.notified = 0, ""
            if s.state == "established":
                events.append(("session", peer, f"session down: {why}"))
            if s.state != "idle":
                s.last_error = s.reported = why
                s.set_state("down", now)
        return events

    def snapshot(self, now: float) -> list[P.BgpNeighbor]:
        return [{"peer": peer, "local_address": s.neighbor.local_address or s.local,
                 "peer_asn": s.neighbor.asn, "local_asn": self.local_asn,
                 "family": s.neighbor.family, "state": s.state, "since": s.since,
                 "uptime": max(0.0, now - s.since) if s.state == "established" else 0.0,
                 "last_error": s.last_error, "updates_sent": s.sent,
                 "updates_received": s.received}
                for peer, s in self.sessions.items()]

    def carried(self) -> dict[str, list[str]]:
        """prefix -> the established neighbors ExaBGP sent it to (and did not withdraw)."""
        out: dict[str, list[str]] = {}
        for peer, s in self.sessions.items():
            if s.state == "established":
                for prefix in s.carried:
                    out.setdefault(prefix, []).append(peer)
        return {p: sorted(peers) for p, peers in out.items()}


def canonical_prefix(prefix: str) -> str:
    try:
        return str(ipaddress.ip_network(prefix, strict=False))
    except ValueError:
        return prefix
