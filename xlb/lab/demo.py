"""`xlb demo` (the README's main command): the lab with traffic, then the console.

Brings the lab up (xlb/lab), starts real TCP/UDP traffic from the client
namespace, and opens the console on lb1's agent. Quitting the console stops the traffic
and prints its summary; the lab keeps running (`xlb lab down` removes it).
Without a terminal (or with --no-console) it prints lb1's figures every
second instead, from the agent's snapshots: per-RX-queue pps, and per backend
new connections/s and packets/s against its Maglev share.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import cast

from xlb.api.client import AgentClient
from xlb.api.protocol import Snapshot
from xlb.dataplane import lifecycle
from xlb.lab import run
from xlb.lab.traffic import summary_text


def report(snap: Snapshot) -> str:
    """One block of figures from an agent snapshot."""
    q = snap["queues"]
    lines = [time.strftime("%H:%M:%S") + f"  {snap['instance']} {snap['totals']['pps']:7.0f} pps"
             "   " + "  ".join(f"q{i} {x:6.0f}" for i, x in enumerate(q))]
    for vip in snap["vips"][:1]:
        new_total = max(sum(b["new_connections_per_s"] for b in vip["backends"]), 1e-9)
        for b in vip["backends"]:
            new = b["new_connections_per_s"]
            lines.append(f"    {b['address']:<12} {new:6.0f} new conn/s "
                         f"({new / new_total:6.1%} of new, Maglev share "
                         f"{b['ring_share']:6.1%})  {b['pps']:7.0f} pps  {b['state']}")
    busy = {k: v for k, v in snap["reasons"].items() if v}
    lines.append("    verdicts/s: " + (", ".join(f"{k} {v:.0f}" for k, v in busy.items())
                                      or "none"))
    return "\n".join(lines)


def run_demo(duration: float = 0.0, rate: float = 100.0, console: bool | None = None,
             theme: str | None = None,
             open_console: Callable[[list[str], str | None], None] | None = None) -> int:
    """Lab up, traffic, then the console (or printed figures without a terminal).

    `open_console(sockets, theme)` runs the console until it quits; the CLI passes it,
    so the lab never imports the console itself."""
    lifecycle.require_root("xlb demo")
    if console is None:
        console = sys.stdin.isatty() and sys.stdout.isatty()
    if open_console is None:
        console = False
    stop = {"now": False}

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("building the lab (client, router, lb1, be1..be3) ...", flush=True)
    doc = run.up()
    sock = doc["lbs"][0]["socket"]
    print(f"lab up in {doc['seconds']} s; VIPs {doc['vip']} and {doc['vip6']}, :80/tcp and "
          f":53/udp, on lb1 ({doc['lbs'][0]['mode']} XDP). Traffic: {rate:.0f} new TCP "
          "connections/s (every 4th over IPv6) plus UDP.", flush=True)
    gen = run.traffic(["--rate", str(rate), "--json"]
                      + (["--duration", str(duration)] if duration > 0 else []), quiet=True)
    try:
        if console and open_console is not None:
            print("opening the console (q quits it; the load balancer keeps running) ...",
                  flush=True)
            open_console([sock], theme)
        else:
            print("no terminal: printing lb1's figures instead of the console. Ctrl-C stops "
                  "the traffic; the lab keeps running.\n", flush=True)
            _print_figures(sock, duration, stop)
    finally:
        if gen.poll() is None:
            gen.send_signal(signal.SIGTERM)
        out, _ = gen.communicate(timeout=30)
    print(traffic_summary(out))
    print("the lab is still running (`xlb console` opens the console again, `xlb lab down` "
          "removes the lab)", flush=True)
    return 0


def _print_figures(sock: str, duration: float, stop: dict[str, bool]) -> None:
    next_print = 0.0
    started = time.monotonic()
    with AgentClient(sock) as agent:
        for kind, snap in agent.subscribe():
            if stop["now"] or (duration > 0 and time.monotonic() - started >= duration):
                break
            if kind == "snapshot" and time.monotonic() >= next_print:
                print(report(cast(Snapshot, snap)), flush=True)
                next_print = time.monotonic() + 0.9


def traffic_summary(out: bytes) -> str:
    try:
        return "\n" + summary_text(json.loads(out.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError, KeyError, TypeError):
        return "\ntraffic generator gave no summary"
