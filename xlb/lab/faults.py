"""Faults the lab can inject into one LB, for failover tests and bench/failover.py.

Each is a real event the LB's agent must notice by itself, not a flag it is told:
- its ExaBGP dies (a signal to the PID the agent reports): the session drops, the agent
  restarts ExaBGP with back-off and announces again;
- it loses its own path to the backends' network (an `unreachable` route in that LB's
  namespace only): its health checks fail, every backend of the VIPs of that family is
  down *as seen from this LB*, so it withdraws them, while the other LB, whose checks still
  pass, keeps announcing. The data plane does not use routes (XDP_TX bounces frames back
  to the router), so only the checks are cut: a partial failure that only RHI can see.
"""

from __future__ import annotations

import os
import signal

from xlb.api.client import AgentClient
from xlb.errors import LabError
from xlb.lab import topology
from xlb.lab.topology import NET6, Lab
from xlb.paths import default_socket

BACKEND_NETS = {False: "198.18.2.0/24", True: f"{NET6}:2::/64"}


def exabgp_pid(lb: str) -> int:
    """The PID of lb's ExaBGP, as its agent reports it (0: none running)."""
    with AgentClient(default_socket(lb)) as agent:
        return int(agent.call("bgp")["pid"])


def kill_exabgp(lb: str, sig: int = signal.SIGKILL) -> int:
    """Send `sig` to lb's ExaBGP (the agent's child): the PID it had."""
    pid = exabgp_pid(lb)
    if not pid:
        raise LabError(f"{lb}'s agent runs no ExaBGP now")
    os.kill(pid, sig)
    return pid


def cut_backends(lb: str, v6: bool = False) -> None:
    """lb can no longer reach the backends' network of one family (its health checks fail)."""
    _route(lb, "add", v6)


def restore_backends(lb: str, v6: bool = False) -> None:
    _route(lb, "del", v6)


def _route(lb: str, action: str, v6: bool) -> None:
    if lb not in Lab().lbs:
        raise LabError(f"no LB {lb!r} in the lab")
    topology.sh(Lab().lb_ns(lb), "ip", "-6" if v6 else "-4", "route", action, "unreachable",
                BACKEND_NETS[v6])
