"""One LB failover in the lab, measured with real TCP: what bench/failover.py prints and the
e2e tests assert.

While long-lived connections keep talking (xlb/lab/longlived.py) and new connections start
at a steady rate (xlb/lab/traffic.py), an action takes one LB out of the router's ECMP
route (maintenance, its ExaBGP killed, its agent stopped, its backends unreachable) and a
restore brings it back. Measured: seconds until the router's *kernel* route (what forwards)
dropped the LB and had it again, long-lived connections broken, new connections failed.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from xlb.api.client import AgentClient
from xlb.errors import LabError
from xlb.lab import run
from xlb.lab.fabric import PREFIXES, lb_of
from xlb.lab.longlived import LongLived
from xlb.lab.topology import ROUTER, Lab
from xlb.paths import default_socket


def kernel_hops(lab: Lab, prefix: str) -> list[str]:
    """The LBs the router's kernel sends `prefix` to now (sorted; [] = no route)."""
    family = "-6" if ":" in prefix else "-4"
    out = subprocess.run(["ip", "netns", "exec", ROUTER, "ip", "-j", family, "route", "show",
                          "exact", prefix], capture_output=True, text=True, check=True).stdout
    names = lb_of(lab)
    hops: set[str] = set()
    for route in json.loads(out or "[]"):
        gateways = [h.get("gateway", "") for h in route.get("nexthops", [])] or [
            route.get("gateway", "")]
        hops.update(names.get(g, g) for g in gateways if g)
    return sorted(hops)


def wait_hops(lab: Lab, want: tuple[str, ...], prefixes: tuple[str, ...] = PREFIXES,
              timeout: float = 30.0) -> float:
    """Seconds until every prefix's kernel route goes to exactly `want` (polled every 20 ms);
    LabError after `timeout`."""
    started = time.monotonic()
    while True:
        got = {p: kernel_hops(lab, p) for p in prefixes}
        if all(h == sorted(want) for h in got.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise LabError(f"the router did not converge to {want} within {timeout:g} s: {got}")
        time.sleep(0.02)


def carriers(src: str, sport: int, vip: str, dport: int = 80) -> list[str]:
    """The LBs whose connection table holds this TCP flow: the one the router sent it to
    (an LB that never saw it has no entry; per-connection state is not shared)."""
    with ExitStack() as stack:
        clients = {lb: stack.enter_context(AgentClient(default_socket(lb)))
                   for lb in Lab().lbs}
        return [lb for lb, c in clients.items()
                if c.call("explain", src=src, sport=sport, dst=vip, dport=dport)["path"]
                == "conn"]


def measure(action: Callable[[], object], during: tuple[str, ...],
            restore: Callable[[], object], prefixes: tuple[str, ...] = PREFIXES,
            rate: float = 100.0, hold: float = 2.0, connections: int = 8,
            check: Callable[[], object] | None = None) -> dict[str, Any]:
    """Run `action` under traffic, wait until the router sends `prefixes` to `during` only,
    hold there `hold` s (then run `check`, a test's look at that state), run `restore` and
    wait until every LB is a next hop again. The figures: converged_s / back_s (from the
    action / the restore), out_for_s (how long the LB was out of the route), long-lived
    connections (carried_before: which LB carried them) and how many broke, new
    connections and how many failed (TCP and UDP)."""
    lab = Lab()
    wait_hops(lab, lab.lbs, timeout=20.0)  # from a settled fabric
    with LongLived(count=connections) as long_lived:
        gen = run.traffic(["--rate", str(rate), "--json"], quiet=True)
        try:
            time.sleep(1.0)
            spread = Counter(lb for f in long_lived.flows
                             for lb in carriers(f["src"], f["sport"], f["vip"]))
            t = time.monotonic()
            action()
            converged = time.monotonic() - t + wait_hops(lab, during, prefixes)
            out_at = time.monotonic()
            time.sleep(hold)
            if check is not None:
                check()
            t = time.monotonic()
            restore()
            back = time.monotonic() - t + wait_hops(lab, lab.lbs, prefixes)
            out_for = time.monotonic() - out_at
            time.sleep(1.0)
        finally:
            kept = long_lived.stop()
            new = run.stop_traffic(gen)
    return {"converged_s": round(converged, 2), "back_s": round(back, 2),
            "out_for_s": round(out_for, 2),
            "long_lived": kept["connections"], "carried_before": dict(spread),
            "requests": kept["requests"],
            "broken": len(kept["broken"]), "broken_flows": kept["broken"],
            "slowest_request_ms": kept["slowest_ms"],
            "new_ok": new.get("tcp_ok", 0), "new_failed": new.get("tcp_failed", -1),
            "udp_ok": new.get("udp_ok", 0), "udp_failed": new.get("udp_failed", -1),
            "flows": long_lived.flows}

