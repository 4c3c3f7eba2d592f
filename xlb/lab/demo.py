"""`xlb demo` (the README's main command): the lab with traffic, then the console.

Brings the lab up (xlb/lab: two LBs behind a BGP/ECMP router), starts real TCP/UDP
traffic from the client namespace, and opens the console on both agents (the fleet).
Quitting the console stops the traffic and prints its summary; the lab keeps running
(`xlb lab down` removes it). Without a terminal (or with --no-console) it prints each
LB's figures every second instead, from the agents' snapshots: per-RX-queue pps, and per
backend new connections/s and packets/s against its Maglev share (the router spreads
flows over both LBs, so each carries about half).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import cast

from xlb.api.client import AgentClient
from xlb.api.protocol import Snapshot
from xlb.dataplane import lifecycle
from xlb.errors import AgentUnavailable, Interrupted
from xlb.lab import interrupt, run
from xlb.lab.traffic import summary_text

STOP_TIMEOUT = 10.0  # seconds the traffic generator gets to stop and print its summary


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
    so the lab never imports the console itself. Ctrl-C or SIGTERM while the lab is
    built stops the build, removes what it made and starts no traffic (Interrupted);
    once the traffic runs, the first one stops it and prints its summary."""
    lifecycle.require_root("xlb demo")
    if console is None:
        console = sys.stdin.isatty() and sys.stdout.isatty()
    if open_console is None:
        console = False
    with interrupt.stopping():
        print("building the lab (client, router with BIRD, lb1, lb2, be1..be3) ...",
              flush=True)
        doc = run.up()
        socks = [lb["socket"] for lb in doc["lbs"]]
        lbs = " and ".join(f"{lb['instance']} ({lb['mode']} XDP)" for lb in doc["lbs"])
        print(f"lab up in {doc['seconds']} s; VIPs {doc['vip']} and {doc['vip6']}, :80/tcp and "
              f":53/udp, on {lbs}, announced by BGP: the router spreads flows over both "
              f"(ECMP). Traffic: {rate:.0f} new TCP connections/s (every 4th over IPv6) plus "
              "UDP.", flush=True)
        gen: subprocess.Popen[bytes] | None = None
        code = 0
        try:
            with interrupt.held():  # the traffic starts and is known, or it does not start
                gen = run.traffic(["--rate", str(rate), "--json"]
                                  + (["--duration", str(duration)] if duration > 0 else []),
                                  quiet=True)
            if console and open_console is not None:
                print("opening the console (q quits it; the load balancer keeps running) ...",
                      flush=True)
                with interrupt.held():  # the console owns the terminal until it quits
                    open_console(socks, theme)
            else:
                print("no terminal: printing the LBs' figures instead of the console. Ctrl-C "
                      "stops the traffic; the lab keeps running.\n", flush=True)
                _print_figures(socks, duration)
        except Interrupted:
            pass  # what Ctrl-C is for here: stop the traffic, print its summary
        except AgentUnavailable as e:
            print(f"xlb: an LB's agent: {e}; stopping the traffic", file=sys.stderr,
                  flush=True)
            code = 1
        finally:
            if gen is not None:
                with interrupt.held(drop=True):  # a second Ctrl-C does not lose the summary
                    print(traffic_summary(_stop(gen)), flush=True)
    print("the lab is still running (`xlb console` opens the console again, `xlb lab down` "
          "removes the lab)", flush=True)
    return code


def _stop(gen: subprocess.Popen[bytes]) -> bytes:
    """End the traffic generator (it prints its summary on SIGTERM) and return its output."""
    if gen.poll() is None:
        gen.send_signal(signal.SIGTERM)
    try:
        out, _ = gen.communicate(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        gen.kill()
        out, _ = gen.communicate()
    return out or b""


def _print_figures(socks: list[str], duration: float) -> None:
    """Every second, each LB's last snapshot (`status`): both carry traffic."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        agents = [stack.enter_context(AgentClient(s)) for s in socks]
        while duration <= 0 or time.monotonic() - started < duration:
            for agent in agents:
                print(report(cast(Snapshot, agent.call("status"))), flush=True)
            interrupt.check()
            time.sleep(1.0)


def traffic_summary(out: bytes) -> str:
    try:
        return "\n" + summary_text(json.loads(out.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError, KeyError, TypeError):
        return "\ntraffic generator gave no summary"
