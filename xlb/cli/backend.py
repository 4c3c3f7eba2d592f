"""Add a backend to a VIP, or remove one (through the agent, audited).

An added backend takes new flows at once; health checks follow. Removing asks
first and says what happens to the backend's established flows.

examples:
  xlb backend add 198.18.2.14 --vip web --weight 2
  xlb backend add fd00:5f1b:18:2::14 --vip web6 --drained
  xlb backend remove 198.18.2.14 --vip web --yes
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from xlb.addresses import canonical_address
from xlb.api.protocol import MAX_WEIGHT, Vip
from xlb.cli import common, completion
from xlb.errors import InvalidParams, RefusedError, UsageError

if TYPE_CHECKING:
    from xlb.api.client import AgentClient


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = common.actions(p)
    c = common.action(sub, add)
    c.add_argument("address", type=common.address, help="backend address (IPv4 or IPv6)")
    common.add_vip(c, "the VIP (by name)", required=True)
    c.add_argument("--weight", type=int, default=1, help=f"0..{MAX_WEIGHT} (default 1)")
    c.add_argument("--drained", action="store_true", help="add it drained (no new flows yet)")
    common.add_client(c)
    c = common.action(sub, remove)
    completion.attach(c.add_argument("address", type=common.address, help="backend address"),
                      completion.backend_addresses)
    common.add_vip(c, "the VIP (by name)", required=True)
    common.add_force(c, "the VIP")
    common.add_yes(c)
    common.add_client(c)


def add(args: argparse.Namespace) -> int:
    """Add a backend to a VIP: new flows at once, health checks follow.

    examples:
      xlb backend add 198.18.2.14 --vip web --weight 2
    """
    with common.client(args) as c:
        doc = c.call("add_backend", vip=args.vip, address=args.address, weight=args.weight,
                     state="drained" if args.drained else "active")
    common.output(doc, args, lambda d: (
        f"added backend {d['after'][args.vip]['address']} to VIP {args.vip}: weight "
        f"{d['after'][args.vip]['weight']}, {d['after'][args.vip]['state']} (health checks "
        "follow)"))
    return 0


def remove(args: argparse.Namespace) -> int:
    """Remove a backend from a VIP (asks first, saying what happens to its flows).

    examples:
      xlb backend remove 198.18.2.14 --vip web
      xlb backend remove 198.18.2.14 --vip web --yes --force
    """
    with common.client(args) as c:
        if not common.confirm(args, f"remove backend {args.address} from VIP {args.vip}",
                              lambda: removal(c, args.vip, args.address)):
            return 1
        doc = c.call("remove_backend", vip=args.vip, address=args.address, force=args.force)
    common.output(doc, args, lambda d: (
        f"removed backend {d['before'][args.vip]['address']} from VIP {args.vip}"))
    return 0


def vip_rows(c: AgentClient, name: str) -> tuple[Vip, list[Vip]]:
    """VIP `name` and all VIPs, as the agent shows them. A VIP that is not there is refused
    before anyone is asked to confirm removing it (the agent would refuse it the same way)."""
    vips: list[Vip] = c.call("backends")
    for v in vips:
        if v["name"] == name:
            return v, vips
    known = ", ".join(repr(v["name"]) for v in vips) or "none"
    raise RefusedError(f"no VIP named {name!r} (known: {known})")


def removal(c: AgentClient, vip: str, address: str) -> str:
    """What removing `address` from `vip` does to its flows, as the data plane does it."""
    this, vips = vip_rows(c, vip)
    if not any(b["address"] == address for b in this["backends"]):
        raise RefusedError(f"VIP {vip!r} has no backend {address!r}")
    others = [v["name"] for v in vips if v["name"] != vip
              and any(b["address"] == address for b in v["backends"])]
    if others:
        which = f"VIP {others[0]} still has" if len(others) == 1 else (
            f"VIPs {', '.join(others)} still have")
        return (f"It gets no new flows from VIP {vip}; {which} it, so its established flows "
                "stay, as if drained.")
    return ("No other VIP has it, so it is invalidated: its established flows move to the "
            "remaining backends, which do not know them (those connections break).")


def backend_arg(text: str) -> dict[str, Any]:
    """--backend ADDR[:WEIGHT]; an IPv6 address with a weight is written [ADDR]:WEIGHT."""
    weight: str | None = None
    if text.startswith("["):
        addr, bracket, rest = text[1:].partition("]")
        if rest:
            weight = rest[1:] if rest.startswith(":") else "not a number"
        if not bracket:
            weight = "not a number"
    elif text.count(":") == 1:
        addr, weight = text.split(":")
    else:
        addr = text  # IPv4 or a bare IPv6 address, without a weight
    if weight is not None and not weight.isdigit():
        raise UsageError(f"--backend {text!r}: expected ADDR[:WEIGHT] ([ADDR]:WEIGHT for IPv6)")
    try:
        addr = canonical_address(addr)
    except InvalidParams as e:
        raise UsageError(f"--backend {text!r}: {e}") from None
    return {"address": addr} if weight is None else {"address": addr, "weight": int(weight)}
