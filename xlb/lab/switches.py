"""The two live switches in the lab, under traffic, measured with real TCP and UDP: what the
modes tests assert and bench/modes.py prints.

While long-lived HTTP connections keep talking (longlived.py: each checks its backend and
who the backend saw asking never change), new connections start at a steady rate
(traffic.py) and a numbered UDP stream runs (udpstream.py), `steps` are made one after the
other on every LB's agent (a VIP's forwarding mode, or the XDP attach mode), `hold`
seconds apart. Measured: long-lived connections broken, new connections failed, UDP
queries lost (and the longest outage one flow saw), each step's answers (an XDP switch
answers its gap).
"""

from __future__ import annotations

import time
from typing import Any

from xlb.lab import run
from xlb.lab.longlived import LongLived
from xlb.lab.topology import Lab
from xlb.lab.udpstream import UdpStream
from xlb.paths import default_socket

Step = tuple[str, dict[str, Any]]  # an agent method and its parameters, made on every LB


def call_lbs(method: str, params: dict[str, Any],
             lbs: tuple[str, ...] | None = None) -> dict[str, Any]:
    """One call on every LB's agent (or those named), one after the other: the answers
    by LB."""
    from xlb.api.client import AgentClient

    out = {}
    for lb in lbs or Lab().lbs:
        with AgentClient(default_socket(lb), timeout=30.0) as agent:
            out[lb] = agent.call(method, **params)
    return out


def measure(steps: list[Step], rate: float = 100.0, hold: float = 2.0, connections: int = 8,
            stream_rate: float = 1000.0) -> dict[str, Any]:
    """Run `steps` under traffic (see the module's docstring); the figures, and the
    long-lived flows as they opened (`flows`) and their summary (`long_lived`)."""
    answers: list[dict[str, Any]] = []
    with LongLived(count=connections) as long_lived, UdpStream(rate=stream_rate) as stream:
        gen = run.traffic(["--rate", str(rate), "--json"], quiet=True)
        try:
            time.sleep(1.0)
            for method, params in steps:
                t = time.monotonic()
                answers.append({"method": method, "params": params,
                                "seconds": 0.0, "lbs": call_lbs(method, params)})
                answers[-1]["seconds"] = round(time.monotonic() - t, 3)
                time.sleep(hold)
        finally:
            kept = long_lived.stop()
            udp = stream.stop()
            new = run.stop_traffic(gen)
    return {"steps": answers, "long_lived": kept, "flows": long_lived.flows,
            "broken": len(kept["broken"]), "requests": kept["requests"],
            "slowest_request_ms": kept["slowest_ms"],
            "new_ok": new.get("tcp_ok", 0), "new_failed": new.get("tcp_failed", -1),
            "udp_ok": new.get("udp_ok", 0), "udp_failed": new.get("udp_failed", -1),
            "modes": new.get("modes", {}), "latency_ms": new.get("latency_ms"),
            "stream": udp}

