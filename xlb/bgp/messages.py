"""ExaBGP's process API, read: one JSON line in, one typed message out.

ExaBGP 5 (encoder json) writes one JSON object per line to its processes, plus the bare
acknowledgements `done` / `error` for each command. Only what the speaker acts on is kept
(session state, notifications, OPENs, UPDATEs per direction); everything else, and anything
that is not what we expect, is None — never an exception, since the input is another
program's output. Pure functions: tested on lines recorded from a real ExaBGP 5.0.15 against
BIRD 2.0.12 (tests/bgp/exabgp_lines.txt).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ack:
    ok: bool                      # `done` (True) or `error` (False): ExaBGP's answer to a command


@dataclass(frozen=True)
class State:
    peer: str
    local: str                    # our address on the session, as ExaBGP reports it
    state: str                    # ExaBGP's word: "connected" | "up" | "down"
    reason: str                   # for "down": ExaBGP's words ("notification received (2,2)")


@dataclass(frozen=True)
class Notification:
    peer: str                     # "" for ExaBGP's own shutdown notice
    direction: str                # "receive" | "send" | "" (shutdown)
    code: int
    subcode: int
    data: str                     # hex as ExaBGP gives it ("0x0000FDEA"), "0x" = none


@dataclass(frozen=True)
class Open:
    peer: str
    direction: str
    asn: int                      # the ASN the OPEN carries (the 4-byte one when present)
    hold_time: int
    router_id: str


@dataclass(frozen=True)
class Update:
    peer: str
    direction: str                # "send" (we sent it) | "receive"
    announced: tuple[str, ...]    # prefixes
    withdrawn: tuple[str, ...]
    eor: bool                     # an End-of-RIB marker (an UPDATE message too)


Message = Ack | State | Notification | Open | Update


def parse(line: str) -> Message | None:
    """One line from ExaBGP; None for anything we do not act on or do not understand."""
    line = line.strip()
    if line in ("done", "error"):
        return Ack(line == "done")
    if not line.startswith("{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    try:
        return _typed(doc)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _typed(doc: dict[str, Any]) -> Message | None:
    kind = doc.get("type")
    nb = doc.get("neighbor")
    if kind == "notification" and not isinstance(nb, dict):
        # ExaBGP's own "shutdown" notice: {"type": "notification", "notification": "shutdown"}
        return Notification("", "", 0, 0, str(doc.get("notification", "")))
    if not isinstance(nb, dict):
        return None
    peer = str(nb["address"]["peer"])
    direction = str(nb.get("direction", ""))
    if kind == "state":
        return State(peer, str(nb["address"].get("local", "")), str(nb["state"]),
                     str(nb.get("reason", "")))
    if kind == "notification":
        n = nb["notification"]
        return Notification(peer, direction, int(n["code"]), int(n["subcode"]),
                            str(n.get("data", "")))
    if kind == "open":
        o = nb["open"]
        asn = int(o["asn"])
        for cap in o.get("capabilities", {}).values():
            if isinstance(cap, dict) and "asn4" in cap:
                asn = int(cap["asn4"])
        return Open(peer, direction, asn, int(o.get("hold_time", 0)), str(o.get("router_id", "")))
    if kind == "update":
        msg = nb["message"]
        if "eor" in msg:
            return Update(peer, direction, (), (), True)
        upd = msg["update"]
        announced = [str(route["nlri"]) for fam in upd.get("announce", {}).values()
                     for routes in fam.values() for route in routes]
        withdrawn = [str(route["nlri"]) for routes in upd.get("withdraw", {}).values()
                     for route in routes]
        return Update(peer, direction, tuple(announced), tuple(withdrawn), False)
    return None


# RFC 4271 section 4.5 and 6, RFC 4486 (Cease subcodes), RFC 7313 (route refresh)
_CODES = {1: "message header error", 2: "OPEN message error", 3: "UPDATE message error",
          4: "hold timer expired", 5: "finite state machine error", 6: "cease",
          7: "route refresh message error"}
_SUBCODES = {
    1: {1: "connection not synchronized", 2: "bad message length", 3: "bad message type"},
    2: {1: "unsupported version number", 2: "bad peer AS", 3: "bad BGP identifier",
        4: "unsupported optional parameter", 6: "unacceptable hold time",
        7: "unsupported capability", 11: "role mismatch"},
    3: {1: "malformed attribute list", 2: "unrecognized well-known attribute",
        3: "missing well-known attribute", 4: "attribute flags error",
        5: "attribute length error", 6: "invalid ORIGIN attribute", 8: "invalid NEXT_HOP",
        9: "optional attribute error", 10: "invalid network field", 11: "malformed AS_PATH"},
    6: {1: "maximum number of prefixes reached", 2: "administrative shutdown",
        3: "peer de-configured", 4: "administrative reset", 5: "connection rejected",
        6: "other configuration change", 7: "connection collision resolution",
        8: "out of resources", 9: "hard reset"},
}


def notification_words(code: int, subcode: int, data: str = "") -> str:
    """A NOTIFICATION for people: "OPEN message error: bad peer AS". A Cease's data may be
    a shutdown message (RFC 8203) in UTF-8; an OPEN error's data is not shown (BIRD's
    bad-peer-AS data is usually the AS it refused, but not always: seen 0x6B7E0234)."""
    words = _CODES.get(code, f"error code {code}")
    sub = _SUBCODES.get(code, {}).get(subcode)
    if sub:
        words += f": {sub}"
    elif subcode:
        words += f" (subcode {subcode})"
    raw = _hex(data)
    if code == 6 and subcode in (2, 4) and raw and raw[0] == len(raw) - 1:
        text = raw[1:].decode("utf-8", "replace").strip()
        if text:
            words += f': "{text}"'
    elif raw and code not in (2, 6):
        words += f" (data {raw.hex()})"
    return words


def _hex(data: str) -> bytes:
    text = data[2:] if data.lower().startswith("0x") else data
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


_NOTIFY = re.compile(r"notification (received|sent) \((\d+),(\d+)\)")


def reason_words(reason: str) -> str:
    """ExaBGP's down reason with its (code,subcode) spelt out: "notification received (2,2)"
    -> "notification received (2,2): OPEN message error: bad peer AS"."""
    m = _NOTIFY.search(reason)
    if m is None:
        return reason
    return f"{reason}: {notification_words(int(m.group(2)), int(m.group(3)))}"
