"""The probes the agent runs on the kernel around the load balancer: state, cost, and
why a probe is unavailable on this kernel (and what replaces it).

`xlb probes` lists them: kind (tracepoint, kprobe, ...), what each attaches to, its
state (attached, unavailable and why, off), events per second, the average ns per run
and the % of a CPU it takes (from the kernel's BPF run-time statistics, while the
runtime probe is attached). Attaching and detaching is for operators, audited.

examples:
  xlb probes
  xlb probes --json
  xlb probes attach tcp
  xlb probes detach napi
"""

from __future__ import annotations

import argparse
from typing import Any

from xlb.api.protocol import PROBES
from xlb.cli import common
from xlb.units import human


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_client(p)
    sub = p.add_subparsers(dest="action", metavar="ACTION",
                           help="none to list them, or one of these (`ACTION -h` for its "
                                "options):")
    for fn in (attach, detach):
        c = common.action(sub, fn)
        c.add_argument("name", metavar="NAME", choices=PROBES,
                       help=f"the probe: {' | '.join(PROBES)}")
        common.add_client(c)


def run(args: argparse.Namespace) -> int:
    with common.client(args) as c:
        doc = c.call("probes")
    common.output(doc, args, lambda ps: "\n".join(line(p) for p in ps))
    return 0


def attach(args: argparse.Namespace) -> int:
    """Attach a probe (operators only, audited).

    A probe this kernel cannot run is refused, with the reason.

    examples:
      xlb probes attach tcp
    """
    return _change(args, "probe_attach")


def detach(args: argparse.Namespace) -> int:
    """Detach a probe (operators only, audited).

    Its figures stop until it is attached again.

    examples:
      xlb probes detach napi
    """
    return _change(args, "probe_detach")


def _change(args: argparse.Namespace, method: str) -> int:
    with common.client(args) as c:
        doc = c.call(method, name=args.name)
    verb = "attached" if method == "probe_attach" else "detached"
    common.output(doc, args, lambda d: (f"probe {args.name}: {verb}" if d["changed"] else
                                        f"probe {args.name}: {d['probe']['state']} already")
                  + f"\n{line(d['probe'])}")
    return 0


def line(p: dict[str, Any]) -> str:
    """One probe for people: name, kind, state, figures, then target and any reason."""
    cost = ""
    if p["state"] == "attached" and p["kind"] != "bpf_stats":  # that one has no programs
        ns = p["ns_per_run"]
        cost = (f"{human(p['events_per_s']):>7}/s  "
                + ("  (no cost figures: the runtime probe is off)" if ns is None else
                   f"{ns:>8.0f} ns/run  {p['cpu_percent']:>7.3f} % CPU" if ns else
                   f"{'-':>8} ns/run  {p['cpu_percent']:>7.3f} % CPU"))
    out = f"{p['name']:<8} {p['kind']:<14} {p['state']:<11} {cost}".rstrip()
    out += f"\n{'':9}{p['target']}"
    if p["reason"]:
        out += f"\n{'':9}{p['reason']}"
    return out
