"""Why packets are dropped: the data plane's verdict reasons, the kernel's drops by its
own reason names (with the last dropped packets as examples), and XDP exceptions and
redirect errors (the console's Drops view).

The kernel's figures come from the agent's probes (see `xlb probes`); a probe that is
off or unavailable here says so instead.

examples:
  xlb drops
  xlb drops --examples
  xlb drops --json
"""

from __future__ import annotations

import argparse
from typing import Any

from xlb.addresses import host_port
from xlb.api.protocol import REASONS, reason_kind, reason_order
from xlb.cli import common
from xlb.units import human


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", action="store_true",
                   help="list each kernel reason's last dropped packets")
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    with common.client(args) as c:
        st = c.call("status")
    verdicts = [{"reason": r, "kind": reason_kind(r), "per_s": st["reasons"].get(r, 0.0),
                 "total": st["reason_totals"].get(r, 0), "meaning": REASONS[r]}
                for r in sorted(REASONS, key=reason_order)]
    verdicts.sort(key=lambda d: (reason_order(d["reason"])[0], -d["per_s"], -d["total"]))
    kernel = st.get("kernel") or {}
    probes = {p["name"]: p for p in kernel.get("probes", [])}
    doc = {"dataplane": verdicts, "kernel": kernel.get("drops", []),
           "xdp_errors": kernel.get("xdp_errors", [])}
    common.output(doc, args, lambda d: text(d, probes, args.examples))
    return 0


def text(doc: dict[str, Any], probes: dict[str, Any], examples: bool) -> str:
    out = ["data plane verdicts"]
    out += [f"  {d['reason']:<22} {d['kind']:<5} {human(d['per_s']):>7}/s  "
            f"{human(d['total']):>7} total" for d in doc["dataplane"]] or ["  none yet"]
    out.append("kernel drops by reason (the kernel's names; LB: from or to a VIP or backend)")
    out += _absent(probes.get("drops")) or [
        f"  {d['reason']:<28} {human(d['per_s']):>7}/s  {human(d['total']):>7} total  "
        f"LB {human(d['lb_total']):>5}" + "".join(f"\n      {packet(p)}" for p in (
            d["examples"] if examples else d["examples"][:1]))
        for d in doc["kernel"]] or ["  none since the probe attached"]
    out.append("XDP exceptions and redirect errors")
    out += _absent(probes.get("xdp")) or [
        f"  {e['kind']:<18} {e['action']:<8} {e['interface']:<16} prog {e['prog_id']} "
        f"({e['program'] or '?'})  {human(e['per_s']):>7}/s  {human(e['total']):>7} total"
        for e in doc["xdp_errors"]] or ["  none since the probe attached"]
    return "\n".join(out)


def _absent(probe: dict[str, Any] | None) -> list[str]:
    if probe is None:
        return ["  (this agent has no probes)"]
    if probe["state"] == "attached":
        return []
    why = f": {probe['reason']}" if probe["reason"] else ""
    return [f"  probe {probe['name']} is {probe['state']}{why}"]


def packet(p: dict[str, Any]) -> str:
    ports = p["protocol"] in ("tcp", "udp")
    src = host_port(p["src"], p["sport"] if ports else None)
    dst = host_port(p["dst"], p["dport"] if ports else None)
    return f"{p['protocol']} {src} → {dst}"
