"""The lab's router as a BGP/ECMP router: BIRD in xlb-router, one session per LB and family.

The VIPs have no static route: they reach an LB only while that LB's agent announces them
(route health injection), exactly as in production. BIRD (xlb/lab/bird.py) is passive, takes
every route its peers offer and installs one ECMP route per VIP with every announcing LB as
a next hop. What `xlb lab up` waits for and `xlb lab status` shows is read from BIRD itself.
"""

from __future__ import annotations

import os
import time
from typing import Any

from xlb import procs
from xlb.errors import LabError
from xlb.lab import interrupt
from xlb.lab.bird import Bird, Peer, config
from xlb.lab.topology import ROUTER, VIP, VIP6, Lab
from xlb.paths import RUN_ROOT

ROUTER_ASN = 65000
LB_ASN = 65001
ROUTER_ID = "198.18.0.1"
HOLD_TIME = 9  # seconds: a silent LB (no Cease, no FIN) is dropped after this
PREFIXES = (f"{VIP}/32", f"{VIP6}/128")


def workdir() -> str:
    """bird.conf, bird.ctl and bird.log (removed with the lab's run directory)."""
    return os.path.join(RUN_ROOT, "lab", "bird")


def peers(lab: Lab) -> list[Peer]:
    """One session per LB and family: v4 VIPs go over IPv4 sessions, v6 over IPv6."""
    return [Peer(f"{lb}_{'v6' if v6 else 'v4'}", lab.lb_address(lb, v6),
                 lab.router_address(lb, v6), LB_ASN)
            for lb in lab.lbs for v6 in (False, True)]


def bgp_table(lab: Lab, lb: str) -> str:
    """lb's [bgp] table: it announces every VIP to the router on both families."""
    lines = ["[bgp]", f"local_asn = {LB_ASN}", f'router_id = "{lab.lb_address(lb)}"', ""]
    for v6 in (False, True):
        lines += ["[[bgp.neighbor]]", f'address = "{lab.router_address(lb, v6)}"',
                  f"asn = {ROUTER_ASN}", f"hold_time = {HOLD_TIME}", ""]
    return "\n".join(lines)


def start(lab: Lab) -> int:
    """Start BIRD in the router (before the agents, so their first connect finds it); its
    PID, which the lab's state records for `down`."""
    return Bird(ROUTER, workdir()).start(config(ROUTER_ASN, ROUTER_ID, peers(lab), HOLD_TIME))


def bird() -> Bird:
    """The running lab BIRD, to ask (birdc over its control socket)."""
    return Bird(ROUTER, workdir())


def lb_of(lab: Lab) -> dict[str, str]:
    """An LB's link address -> its name (next hops as people read them)."""
    return {lab.lb_address(lb, v6): lb for lb in lab.lbs for v6 in (False, True)}


def routes(lab: Lab) -> dict[str, list[str]]:
    """Per VIP prefix, the LBs that are the router's next hops for it now (from BIRD)."""
    names = lb_of(lab)
    b = bird()
    return {p: sorted(names.get(h, h) for h in b.next_hops(p)) for p in PREFIXES}


def sessions(lab: Lab) -> dict[str, str]:
    """Each BGP session of the router (lb1_v4, lb1_v6, ...) and its state in BIRD's words."""
    state = bird().protocols()
    return {p.name: state.get(p.name, "absent") for p in peers(lab)}


def wait_routes(lab: Lab, lbs: tuple[str, ...] | None = None, timeout: float = 60.0,
                ) -> dict[str, list[str]]:
    """Until every VIP prefix has exactly `lbs` (default: every LB) as next hops; the routes
    then. LabError naming what is missing after `timeout` s (with the sessions' states)."""
    want = sorted(lab.lbs if lbs is None else lbs)
    deadline = time.monotonic() + timeout
    while True:
        got = routes(lab)
        if all(hops == want for hops in got.values()):
            return got
        if time.monotonic() > deadline:
            raise LabError(f"the router's routes did not converge within {timeout:g} s: "
                           + "; ".join(f"{p} via {', '.join(h) or 'nothing'}"
                                       for p, h in got.items())
                           + f" (want {', '.join(want)}); sessions "
                           + ", ".join(f"{n} {s}" for n, s in sessions(lab).items()))
        interrupt.check()
        time.sleep(0.1)


def status(lab: Lab, pid: int) -> dict[str, Any]:
    """What `xlb lab status` shows of the router: BIRD's PID, its sessions, per VIP prefix
    the LBs it sends to. BIRD not running: empty sessions and routes."""
    if not pid or not procs.alive(pid):
        return {"pid": 0, "sessions": {}, "routes": {}}
    try:
        return {"pid": pid, "sessions": sessions(lab), "routes": routes(lab)}
    except LabError as e:  # BIRD starting or ending: say so rather than fail the status
        return {"pid": pid, "sessions": {}, "routes": {}, "error": str(e)}
