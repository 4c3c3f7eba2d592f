"""Switch a VIP's forwarding mode: dsr (IP-in-IP, backends answer clients directly) or
snat (addresses rewritten, replies come back through the load balancer).

New flows take the new mode at once; established flows keep the mode they started in,
so no connection is reset or moved. SNAT needs the instance's SNAT pool of the VIP's
family (snat_pool_v4, snat_pool_v6): without it the switch is refused and nothing
changes. Asks first on a terminal (--yes for scripts); operators only, audited.

examples:
  xlb mode web snat
  xlb mode web dsr --yes --json
"""

from __future__ import annotations

import argparse
from typing import Any

from xlb.api.protocol import MODES, change_text
from xlb.cli import common, completion

AFTER = {"dsr": "new flows go IP-in-IP to the backends, which answer the clients directly",
         "snat": "new flows reach the backends from the load balancer's SNAT addresses, "
                 "and their replies come back through it"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    completion.attach(p.add_argument("vip", metavar="VIP", help="the VIP's name"),
                      completion.vip_names)
    completion.attach(p.add_argument("mode", choices=tuple(MODES), help="dsr | snat"),
                      completion.modes)
    common.add_yes(p)
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    if not common.confirm(args, f"switch VIP {args.vip} to {args.mode}", lambda: (
            f"{AFTER[args.mode][0].upper()}{AFTER[args.mode][1:]}; established flows keep "
            "the mode they started in.")):
        return 1
    with common.client(args) as c:
        doc = c.call("mode", vip=args.vip, mode=args.mode)
    common.output(doc, args, lambda d: text(args, d))
    return 0


def text(args: argparse.Namespace, doc: dict[str, Any]) -> str:
    before = (doc["before"].get(args.vip) or {}).get("mode")
    if before == args.mode:
        return f"mode {args.vip}: already {args.mode}; nothing changed"
    return (f"mode {args.vip}: done; {change_text(doc['before'], doc['after'])}\n"
            f"{AFTER[args.mode][0].upper()}{AFTER[args.mode][1:]}; established flows keep "
            "the mode they started in.")
