"""Trace what the data plane does to the packets a filter matches, one line per packet.

Each line: the time, the RX queue and CPU, the 5-tuple, the VIP and the backend it went
to, how that backend was chosen (conn: the connection table's entry; maglev: a new flow;
maglev_syn: a SYN; maglev_stale: the entry's backend was gone) and the verdict with its
reason. Packets of traced flows that the kernel dropped afterwards show as "kernel" lines
with the kernel's drop reason (while the drops probe is attached).

The filter is words joined by `and`: src|dst|host PREFIX, sport|dport|port N,
proto tcp|udp (or tcp, udp), vip NAME, backend ADDRESS, sample N (1 in N); none traces
every packet. A bad filter starts nothing; the error points at the word.

Starting a trace is for operators (audited); it replaces a running trace's filter, and it
stops by itself after --seconds (default: the agent's [trace] seconds, 300). Ctrl-C, or
--count events, ends the command and stops the trace it started. Anyone who may read the
agent can watch the running trace with --watch. When events come faster than the agent
forwards them ([trace] forward_rate per second) you get an even sample, and a line on
stderr says how many were skipped.

examples:
  xlb trace src 198.18.0.10
  xlb trace src 198.18.0.0/24 and dport 80 --count 20
  xlb trace vip web and sample 100 --seconds 60
  xlb trace backend 198.18.2.11 --json
  xlb trace --watch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from xlb.addresses import host_port
from xlb.cli import common
from xlb.errors import ReadOnlyError, UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("filter", nargs="*", metavar="FILTER",
                   help="what to trace, e.g. `src 198.18.0.0/24 and dport 80` (none: every "
                        "packet)")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")
    p.add_argument("--seconds", type=int, metavar="S",
                   help="the trace stops by itself after S seconds (default: the agent's "
                        "[trace] seconds)")
    p.add_argument("--watch", action="store_true",
                   help="watch the running trace (and the next ones) instead of starting one")
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    from xlb.api.client import AgentClient
    from xlb.trace.filter import FilterError, parse

    text = " ".join(args.filter)
    if args.watch and (text or args.seconds is not None):
        raise UsageError("xlb trace --watch shows the running trace as it is: it takes no "
                         "filter and no --seconds")
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    try:  # checked here first: a typo exits at once, with a caret under the word
        parse(text)
    except FilterError as e:
        raise UsageError(f"{e}\n  {e.caret().replace(chr(10), chr(10) + '  ')}") from None
    socket = getattr(args, "socket", None)
    watcher = AgentClient(socket, timeout=30)  # the agent says something every few s
    control: AgentClient | None = None
    mine = 0.0  # when the trace this command started started (0: none)
    try:
        status = watcher.call("trace_subscribe", history=0)
        if not args.watch:
            control = AgentClient(watcher.path)
            try:
                status = control.call("trace_start", filter=text, seconds=args.seconds)
            except ReadOnlyError as e:
                raise ReadOnlyError(f"{e}; `xlb trace --watch` watches the running trace"
                                    ) from None
            mine = status["started"]
        _say(_heading(status, mine))
        _follow(watcher, args, mine)
    except KeyboardInterrupt:
        pass  # the usual end of a trace: Ctrl-C
    finally:
        if mine and control is not None:
            _stop_mine(control, mine)
        for c in (control, watcher):
            if c is not None:
                c.close()
    return 0


def _follow(watcher: Any, args: argparse.Namespace, mine: float) -> int:
    """Print events as they come until --count, the end of the trace it started, or
    Ctrl-C; how many it printed."""
    shown = 0
    for method, batch in watcher.notifications():
        if method != "trace":
            continue
        status = batch["status"]
        for ev in batch["events"]:
            if mine and ev["time"] < mine:
                continue  # a previous trace's, still on its way
            print(json.dumps(ev) if args.json else line(ev), flush=True)
            shown += 1
            if args.count is not None and shown >= args.count:
                return shown
        if batch["skipped"]:
            _say(f"({batch['skipped']} events skipped: more than the agent forwards per "
                 "second)")
        if status["started"] < mine:
            continue  # sent before this command's trace started
        if mine and (not status["running"] or status["started"] != mine):
            why = ("it was stopped or its time was over" if not status["running"] else
                   f"{status['by']} started another: {status['filter'] or 'every packet'}")
            _say(f"the trace ended ({why}); {shown} events")
            return shown
    return shown


def _stop_mine(control: Any, mine: float) -> None:
    """Stop the trace this command started, unless another has replaced it since."""
    from xlb.errors import XlbError

    try:
        now = control.call("trace_status")
        if now["running"] and now["started"] == mine:
            control.call("trace_stop")
    except XlbError as e:
        _say(f"the trace could not be stopped: {e} (it stops by itself when its time is over)")


def _heading(status: dict[str, Any], mine: float) -> str:
    what = status["filter"] or "every packet"
    if not status["running"]:
        return ("no trace is running; waiting for one (an operator starts it with "
                "`xlb trace FILTER`)")
    left = max(0, round(status["expires"] - time.time()))
    who = "" if mine else f" (started by {status['by']})"
    sample = f", 1 in {status['sample']}" if status["sample"] > 1 else ""
    return f"tracing {what}{sample} for {left} s{who}; Ctrl-C ends it"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def line(ev: dict[str, Any]) -> str:
    """One event for people, hubble-like: time, where, 5-tuple, VIP → backend, how, verdict."""
    when = time.strftime("%H:%M:%S", time.localtime(ev["time"])) + f".{_ms(ev['time']):03d}"
    ports = ev["protocol"] in ("tcp", "udp")
    flow = (f"{ev['protocol']:<4} {host_port(ev['src'], ev['sport'] if ports else None)} → "
            f"{host_port(ev['dst'], ev['dport'] if ports else None)}")
    if ev["source"] == "kernel":
        return f"{when} kernel     {flow}  {ev['action']} {ev['reason']}"
    where = f"q{ev['queue']} cpu{ev['cpu']}"
    to = ""
    if ev["vip"] is not None:
        to = f"  {ev['vip']} → {ev['backend'] or 'no backend'}"
    how = f"  {ev['path']}" if ev["path"] != "none" else ""
    return f"{when} {where:<10} {flow}{to}{how}  {ev['action']} {ev['reason']}"


def _ms(t: float) -> int:
    return min(999, int((t % 1) * 1000))
