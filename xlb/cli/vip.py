"""Add a VIP, or remove one (through the agent, audited).

A new VIP is balanced at once over the backends given. Removing one asks first:
its packets then pass to this host's own network stack.

examples:
  xlb vip add api 198.19.0.20 443 tcp --backend 198.18.2.11 --backend 198.18.2.12:2
  xlb vip add api6 fd00:5f1b:19::20 443 tcp --backend [fd00:5f1b:18:2::11]:3
  xlb vip remove api --yes
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from xlb.cli import common, completion
from xlb.cli.backend import backend_arg, vip_rows

if TYPE_CHECKING:
    from xlb.api.client import AgentClient


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = common.actions(p)
    c = common.action(sub, add)
    c.add_argument("name", metavar="NAME", help="unique VIP name")
    c.add_argument("address", metavar="ADDRESS", type=common.address,
                   help="VIP address (IPv4 or IPv6)")
    c.add_argument("port", metavar="PORT", type=int, help="0..65535 (0 = any port)")
    c.add_argument("protocol", metavar="PROTO", help="tcp | udp")
    c.add_argument("--backend", action="append", metavar="ADDR[:WEIGHT]",
                   help="a backend (repeat for more; IPv6 with a weight: [ADDR]:WEIGHT)")
    common.add_client(c)
    c = common.action(sub, remove)
    completion.attach(c.add_argument("name", metavar="NAME", help="the VIP (by name)"),
                      completion.vip_names)
    common.add_yes(c)
    common.add_client(c)


def add(args: argparse.Namespace) -> int:
    """Add a VIP, balanced at once.

    examples:
      xlb vip add api 198.19.0.20 443 tcp --backend 198.18.2.11 --backend 198.18.2.12:2
    """
    backends = [backend_arg(b) for b in args.backend or []]
    with common.client(args) as c:
        doc = c.call("add_vip", name=args.name, address=args.address, port=args.port,
                     protocol=args.protocol, backends=backends)
    common.output(doc, args, lambda d: f"added {_where(d['after'][args.name])} with "
                  f"{len(d['after'][args.name]['backend'])} backend(s)")
    return 0


def remove(args: argparse.Namespace) -> int:
    """Remove a VIP: its packets pass to the host from then on (asks first).

    examples:
      xlb vip remove api
    """
    with common.client(args) as c:
        if not common.confirm(args, f"remove VIP {args.name}", lambda: _removal(c, args.name)):
            return 1
        doc = c.call("remove_vip", name=args.name)
    common.output(doc, args, lambda d: f"removed {_where(d['before'][args.name])}: its packets "
                  "now pass to the host")
    return 0


def _where(v: dict[str, Any]) -> str:
    host = f"[{v['address']}]" if ":" in v["address"] else v["address"]
    return f"VIP {v['name']} ({host}:{v['port']}/{v['protocol']})"


def _removal(c: AgentClient, name: str) -> str:
    label = vip_rows(c, name)[0]["vip"]
    return (f"Its traffic will no longer be balanced: packets to {label} pass to this host's "
            "own network stack (XDP_PASS), so new connections are not balanced and "
            "established ones no longer reach their backends.")
