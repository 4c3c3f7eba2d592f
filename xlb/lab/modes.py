"""The lab's LBs by forwarding mode: each VIP's mode on each LB (its agent) and the packets
each LB forwarded per mode (its data plane's reason counters), read before and after some
traffic. What `xlb lab traffic` prints after its summary, and what the modes tests and
bench/modes.py compare.
"""

from __future__ import annotations

from typing import Any

from xlb.dataplane.manager import Dataplane
from xlb.dataplane.structs import Reason
from xlb.errors import XlbError
from xlb.lab.topology import Lab
from xlb.paths import default_socket

# packets by what the LB did: DSR forward (IP-in-IP, with or without an entry), SNAT forward,
# SNAT reply (a backend's answer translated back), and the SNAT drops
KINDS: dict[str, tuple[Reason, ...]] = {
    "dsr": (Reason.TX_ENCAP, Reason.TX_ENCAP_NO_ENTRY, Reason.TX_ENCAP_FLOW_LIMIT),
    "snat": (Reason.TX_SNAT,),
    "snat_reply": (Reason.TX_SNAT_REPLY,),
    "snat_dropped": (Reason.DROP_SNAT_NO_PORT, Reason.DROP_SNAT_FLOW_LIMIT,
                     Reason.DROP_SNAT_NO_ENTRY),
}


def packets(lab: Lab | None = None) -> dict[str, dict[str, int]]:
    """Each LB's cumulative packets per kind (KINDS), from its data plane's counters."""
    out = {}
    for lb in (lab or Lab()).lbs:
        with Dataplane(lb) as dp:
            reasons = dp.counters().reasons
        out[lb] = {kind: int(sum(int(reasons[r, 0]) for r in rs)) for kind, rs in KINDS.items()}
    return out


def delta(before: dict[str, dict[str, int]],
          after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {lb: {k: n - before.get(lb, {}).get(k, 0) for k, n in kinds.items()}
            for lb, kinds in after.items()}


def vip_modes(lab: Lab | None = None) -> dict[str, dict[str, str]]:
    """Each VIP's mode (how its new flows go) on each LB, from the LBs' agents; an LB
    whose agent does not answer is left out."""
    from xlb.api.client import AgentClient

    out: dict[str, dict[str, str]] = {}
    for lb in (lab or Lab()).lbs:
        try:
            with AgentClient(default_socket(lb)) as agent:
                out[lb] = {v["name"]: v.get("mode", "dsr") for v in agent.call("vips")}
        except XlbError:
            continue
    return out


def report(before: dict[str, dict[str, int]], lab: Lab | None = None) -> dict[str, Any]:
    """Since `before` (packets()): every LB's VIP modes and packets per kind."""
    lab = lab or Lab()
    modes = vip_modes(lab)
    moved = delta(before, packets(lab))
    return {lb: {"vips": modes.get(lb, {}), "packets": moved[lb]} for lb in lab.lbs}


def report_text(lbs: dict[str, Any]) -> str:
    lines = ["  the LBs by mode (packets they forwarded meanwhile):"]
    for lb, r in lbs.items():
        p = r["packets"]
        vips = ", ".join(f"{name} {mode}" for name, mode in r["vips"].items()) or "agent silent"
        lines.append(f"    {lb}: DSR {p['dsr']}, SNAT {p['snat']} (replies {p['snat_reply']}, "
                     f"dropped {p['snat_dropped']}); VIPs: {vips}")
    return "\n".join(lines)
