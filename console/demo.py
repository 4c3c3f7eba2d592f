"""`xlb demo` (the README's main command): the lab with traffic and live figures.

Brings the lab up (console/lab), starts real TCP/UDP traffic from the client
namespace, and prints lb1's figures every second, from the agent's snapshots
(its API, as the console will): per-RX-queue pps, and per backend new
connections/s and packets/s against its Maglev share. Ctrl-C (or
--duration) stops the traffic and prints its summary; the lab keeps running
(`xlb lab down` removes it). The console replaces the printed figures when
it lands.
"""

from __future__ import annotations

import json
import signal
import time
from types import FrameType
from typing import Any

from console.agent.client import AgentClient
from console.dataplane import lifecycle
from console.lab import run


def report(snap: dict[str, Any]) -> str:
    """One block of figures from an agent snapshot."""
    q = snap["queues"]
    lines = [time.strftime("%H:%M:%S") + f"  {snap['instance']} {snap['totals']['pps']:7.0f} pps"
             "   " + "  ".join(f"q{i} {x:6.0f}" for i, x in enumerate(q))]
    for vip in snap["vips"][:1]:
        new_total = max(sum(b["new_conns_per_s"] for b in vip["backends"]), 1e-9)
        for b in vip["backends"]:
            lines.append(f"    {b['address']:<12} {b['new_conns_per_s']:6.0f} new conn/s "
                         f"({b['new_conns_per_s'] / new_total:6.1%} of new, Maglev share "
                         f"{b['ring_share']:6.1%})  {b['pps']:7.0f} pps  {b['state']}")
    busy = {k: v for k, v in snap["reasons"].items() if v}
    lines.append("    verdicts/s: " + (", ".join(f"{k} {v:.0f}" for k, v in busy.items())
                                      or "none"))
    return "\n".join(lines)


def run_demo(duration: float = 0.0, rate: float = 100.0) -> int:
    lifecycle.require_root("xlb demo")
    stop = {"now": False}

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("building the lab (client, router, lb1, be1..be3) ...", flush=True)
    doc = run.up()
    print(f"lab up in {doc['seconds']} s; VIP {doc['vip']}:80/tcp and :53/udp on lb1 "
          f"({doc['lbs'][0]['mode']} XDP). Traffic: {rate:.0f} new TCP connections/s "
          "plus UDP. Ctrl-C stops the traffic; the lab keeps running.\n", flush=True)
    gen = run.traffic(["--rate", str(rate), "--json"], quiet=True)
    next_print = 0.0
    try:
        started = time.monotonic()
        with AgentClient(doc["lbs"][0]["socket"]) as agent:
            for kind, snap in agent.subscribe():
                if stop["now"] or (duration > 0 and time.monotonic() - started >= duration):
                    break
                if kind == "snapshot" and time.monotonic() >= next_print:
                    print(report(snap), flush=True)
                    next_print = time.monotonic() + 0.9
    finally:
        if gen.poll() is None:
            gen.send_signal(signal.SIGTERM)
        out, _ = gen.communicate(timeout=30)
    try:
        summary = json.loads(out.decode().strip().splitlines()[-1])
        print(f"\ntraffic: {summary['tcp_ok']} TCP connections ok, {summary['tcp_failed']} "
              f"failed ({summary['connections_per_second']}/s); UDP {summary['udp_ok']} ok, "
              f"{summary['udp_failed']} failed; latency {summary['latency_ms']}; "
              f"per backend {summary['backends']}")
    except (ValueError, IndexError, KeyError):
        print("\ntraffic generator gave no summary")
    print("the lab is still running: `xlb lab down` removes it", flush=True)
    return 0
