"""BGP as the console derives it from the agents' Bgp documents (snapshot["bgp"]).

Pure Python with no Textual, tested directly: the BGP view, the header, the
Overview and the confirmation dialogs all read these, so a session "down" or an
LB "carrying" a VIP means the same thing everywhere. An LB carries a prefix when
it announces it and at least one established peer has it (BgpPrefix.peers).
"""

from __future__ import annotations

from dataclasses import dataclass

from console.model import Fleet
from xlb.api.protocol import Bgp, BgpEvent, BgpPrefix

# a session's state in words and a symbol (BGP's own names), and its colour role
SESSION_MARK = {"established": "● Established", "connected": "◐ Connected", "idle": "○ Idle",
                "down": "✗ Down"}
SESSION_ROLE = {"established": "success", "connected": "warning", "idle": "warning",
                "down": "error"}
CAUSE_ROLE = {"serving": "success", "no_backend": "error", "operator": "warning",
              "maintenance": "warning", "not_announced": "secondary"}


@dataclass(frozen=True)
class PrefixRow:
    """One prefix of one instance: what `W` and `a` act on."""

    instance: str
    doc: BgpPrefix

    @property
    def key(self) -> str:
        return f"{self.instance}/{self.doc['prefix']}"

    @property
    def address(self) -> str:
        return self.doc["prefix"].split("/")[0]

    @property
    def label(self) -> str:
        """"198.19.0.10/32 (web)": what the dialogs and notifications name."""
        return f"{self.doc['prefix']} ({', '.join(self.doc['vips'])})"


def speakers(fleet: Fleet, every: bool = False) -> list[tuple[str, Bgp]]:
    """(instance, Bgp) of the shown instances (`every`: all of them) that run BGP."""
    insts = [fleet.instances[n] for n in fleet.names()] if every else fleet.shown()
    return [(i.name, i.snap["bgp"]) for i in insts if i.snap.get("bgp", {}).get("enabled")]


def prefix_rows(fleet: Fleet) -> list[PrefixRow]:
    return [PrefixRow(name, p) for name, bgp in speakers(fleet) for p in bgp["prefixes"]]


def events(fleet: Fleet) -> list[tuple[str, BgpEvent]]:
    """Every shown instance's events, newest first."""
    out = [(name, e) for name, bgp in speakers(fleet) for e in bgp["events"]]
    order = sorted(range(len(out)), key=lambda i: (-out[i][1]["time"], -i))  # ties: log order
    return [out[i] for i in order]


def alerts(bgp: Bgp) -> list[tuple[str, str]]:
    """What the header and the Overview mark about one LB: (text, colour role). Empty when
    its BGP is off or all is well (every session established, not in maintenance)."""
    if not bgp.get("enabled"):
        return []
    out = []
    if bgp["maintenance"]:
        out.append(("⇣ MAINTENANCE: every VIP withdrawn", "warning"))
    down = [n for n in bgp["neighbors"] if n["state"] != "established"]
    if down:
        out.append((f"BGP ✗ {len(down)} of {len(bgp['neighbors'])} session"
                    f"{'s' if len(bgp['neighbors']) > 1 else ''} down", "error"))
    if bgp["speaker"] in ("restarting", "failed"):
        out.append((f"ExaBGP {bgp['speaker']}", "error"))
    return out


def carried(p: BgpPrefix) -> bool:
    return p["announced"] and bool(p["peers"])


def carriers(fleet: Fleet) -> dict[str, list[tuple[str, BgpPrefix]]]:
    """Prefix -> (instance, its BgpPrefix there) for every instance with BGP, in name
    order: the fleet's answer to "which LBs carry this VIP"."""
    out: dict[str, list[tuple[str, BgpPrefix]]] = {}
    for name, bgp in speakers(fleet, every=True):
        for p in bgp["prefixes"]:
            out.setdefault(p["prefix"], []).append((name, p))
    return out


def others_carrying(fleet: Fleet, row: PrefixRow) -> list[str]:
    """The other instances (of those this console follows) that carry row's prefix."""
    return [name for name, p in carriers(fleet).get(row.doc["prefix"], [])
            if name != row.instance and carried(p)]


def vip_prefix(bgp: Bgp, vip: str) -> BgpPrefix | None:
    """The prefix that carries VIP `vip` (by name) on this LB; None without BGP."""
    if not bgp.get("enabled"):
        return None
    return next((p for p in bgp["prefixes"] if vip in p["vips"]), None)
