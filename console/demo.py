"""`xlb demo` (the README's main command): the lab with traffic and live figures.

Brings the lab up (console/lab), starts real TCP/UDP traffic from the client
namespace, and prints lb1's figures every second: per-RX-queue pps, and per
backend new connections/s and packets/s against its Maglev share. Ctrl-C (or
--duration) stops the traffic and prints its summary; the lab keeps running
(`xlb lab down` removes it). The console replaces the printed figures when
it lands.
"""

from __future__ import annotations

import json
import signal
import time
from types import FrameType

import numpy as np

from console.dataplane import lifecycle
from console.dataplane import structs as S
from console.dataplane.manager import Counters, Dataplane
from console.lab import run


def _shares(dp: Dataplane) -> dict[int, float]:
    """Each backend's share of the first VIP's Maglev ring."""
    (_, meta), *_ = sorted(dp.vip_entries().values(), key=lambda kv: kv[1].vip_id)
    ids, counts = np.unique(dp.ring(meta.ring_slot), return_counts=True)
    return {int(i): float(c) / counts.sum() for i, c in zip(ids, counts, strict=True)}


def report(prev: Counters, now: Counters, names: dict[int, str], shares: dict[int, float]) -> str:
    dt = max(now.at - prev.at, 1e-6)
    q = (now.queues[:, 0] - prev.queues[:, 0]) / dt
    b = (now.backends - prev.backends) / dt
    new_total = max(float(b[:, 2].sum()), 1e-9)
    lines = [time.strftime("%H:%M:%S") + f"  lb1 {q.sum():7.0f} pps   "
             + "  ".join(f"q{i} {q[i]:6.0f}" for i in range(4))]
    for bid, name in sorted(names.items()):
        lines.append(f"    {name:<12} {b[bid, 2]:6.0f} new conn/s ({b[bid, 2] / new_total:6.1%} of "
                     f"new, Maglev share {shares.get(bid, 0):6.1%})  {b[bid, 0]:7.0f} pps")
    r = now.reasons[:, 0] - prev.reasons[:, 0]
    lines.append("    verdicts/s: " + (", ".join(
        f"{x.label} {r[x] / dt:.0f}" for x in S.Reason if r[x]) or "none"))
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
    try:
        started = time.monotonic()
        with Dataplane("lb1") as dp:
            names = {i: str(S.unpack_addr(b.addr, b.family))
                     for i, b in dp.backend_entries().items()}
            shares = _shares(dp)
            prev = dp.counters()
            while not stop["now"] and (duration <= 0 or time.monotonic() - started < duration):
                time.sleep(1.0)
                now = dp.counters()
                print(report(prev, now, names, shares), flush=True)
                prev = now
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
