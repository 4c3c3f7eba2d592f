"""Backends per VIP: weight, state, Maglev share, rates, active connections, health;
each VIP's forwarding mode (and its traffic by mode once SNAT is in use).

The console's Backends view as a command (from the agent).

examples:
  xlb backends
  xlb backends --vip web --json
"""

from __future__ import annotations

import argparse

from xlb.api.protocol import Vip
from xlb.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_vip(p, "only this VIP (by name)")
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    with common.client(args) as c:
        doc = c.call("backends", vip=args.vip)
    common.output(doc, args, text)
    return 0


def text(vips: list[Vip]) -> str:
    lines = []
    for v in vips:
        lines.append(f"{v['name']} ({v['vip']}, {v['mode']}): {v['pps']:.0f} pps, "
                     f"{v['active_connections']} active, {v['healthy']}/{v['total']} healthy"
                     + (" (PANIC: all serving backends take flows)" if v["panic"] else ""))
        m = v["modes"]
        if v["mode"] == "snat" or m["snat_pps"] or m["reply_pps"] or m["no_port"]:
            lines.append(f"  by mode: dsr {m['dsr_pps']:.0f} pps, snat {m['snat_pps']:.0f} pps, "
                         f"replies {m['reply_pps']:.0f} pps, {m['translations_per_s']:.0f} "
                         f"translations/s, {m['no_port']} dropped without a free port")
        for b in v["backends"]:
            lines.append(f"  {b['address']:<28} weight {b['weight']:>5}  {b['state']:<9} "
                         f"ring {b['ring_share'] * 100:5.1f}%  {b['pps']:8.0f} pps  "
                         f"{b['new_connections_per_s']:6.0f} new/s  "
                         f"{b['active_connections']:7d} active  health {b['health']}")
    return "\n".join(lines) or "no VIPs"
