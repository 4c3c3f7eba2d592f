"""LB failover in the lab, measured (figures, not a test).

Usage: sudo flock /tmp/xlb-lab.lock .venv/bin/python bench/failover.py [--runs 2] [--json]
       [--only NAME] [--rate 100] [--connections 8]

Brings THE lab up (two LBs behind BIRD's ECMP route; its `up` time is printed), and
for each scenario, while 2 x `--connections` long-lived HTTP connections (half IPv4,
half IPv6, spread over both LBs by the router) ask every 50 ms and `--rate` new TCP
connections/s (plus UDP) start, takes lb1 out of the route and back:

* maintenance   `bgp_withdraw all` on lb1, then `bgp_announce all`
* exabgp-kill   SIGKILL to lb1's ExaBGP; its agent restarts it (back-off 1 s)
* backends-cut  lb1 alone loses its path to the backends' IPv4 network (an unreachable
                route in its namespace): its health checks fail, it withdraws the v4 VIP
* agent-term    lb1's agent SIGTERM (it stops ExaBGP: Cease), then started again
* agent-kill    lb1's agent SIGKILL (ExaBGP gets SIGTERM by PR_SET_PDEATHSIG), started again

Printed per run: long-lived connections broken (of how many, how many lb1 carried before),
seconds until the router's kernel route dropped lb1 ("out", from the action) and had it
again ("back", from the restore; exabgp-kill has none: from the moment lb1 was out), how
long lb1 was out of the route, new TCP connections failed (of how many). The lab is
removed at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlb.api.client import AgentClient  # noqa: E402
from xlb.lab import faults, run  # noqa: E402
from xlb.lab.fabric import PREFIXES  # noqa: E402
from xlb.lab.failover import measure  # noqa: E402
from xlb.paths import default_socket  # noqa: E402


def _call(method: str, **params: Any) -> Callable[[], object]:
    def go() -> object:
        with AgentClient(default_socket("lb1")) as agent:
            return agent.call(method, **params)
    return go


# name -> (action, restore, prefixes that leave lb1, seconds out before the restore)
SCENARIOS: dict[str, tuple[Callable[[], object], Callable[[], object], tuple[str, ...],
                           float]] = {
    "maintenance": (_call("bgp_withdraw", all=True), _call("bgp_announce", all=True),
                    PREFIXES, 2.0),
    # the agent restores it by itself: "back" counts from the moment lb1 was out
    "exabgp-kill": (lambda: faults.kill_exabgp("lb1"), lambda: None, PREFIXES, 0.0),
    "backends-cut": (lambda: faults.cut_backends("lb1"), lambda: faults.restore_backends("lb1"),
                     PREFIXES[:1], 2.0),
    "agent-term": (lambda: run.stop_agent("lb1", signal.SIGTERM),
                   lambda: run.start_agent("lb1", routes=False), PREFIXES, 2.0),
    "agent-kill": (lambda: run.stop_agent("lb1", signal.SIGKILL),
                   lambda: run.start_agent("lb1", routes=False), PREFIXES, 2.0),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--only", choices=list(SCENARIOS))
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--connections", type=int, default=8, help="long-lived, per family")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    results: list[dict[str, Any]] = []
    up = run.up()
    try:
        print(f"lab up in {up['seconds']} s (two LBs, BIRD, both next hops for every VIP)",
              flush=True)
        for name, (action, restore, prefixes, hold) in SCENARIOS.items():
            if a.only and name != a.only:
                continue
            for i in range(a.runs):
                r = measure(action, ("lb2",), restore, prefixes, rate=a.rate, hold=hold,
                            connections=a.connections)
                r.pop("flows")
                r.update(scenario=name, run=i + 1)
                results.append(r)
                if not a.json:
                    print(f"{name:<13} run {i + 1}: broken {r['broken']} of {r['long_lived']} "
                          f"long-lived ({r['carried_before'].get('lb1', 0)} via lb1 before); "
                          f"router out {r['converged_s']:.2f} s, back {r['back_s']:.2f} s "
                          f"(lb1 out for {r['out_for_s']:.1f} s); "
                          f"new TCP failed {r['new_failed']} of "
                          f"{r['new_ok'] + r['new_failed']}, UDP failed {r['udp_failed']}; "
                          f"slowest request {r['slowest_request_ms']:.0f} ms", flush=True)
    finally:
        run.down()
    if a.json:
        print(json.dumps({"lab_up_s": up["seconds"], "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
