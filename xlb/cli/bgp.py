"""BGP: the sessions to the routers, which VIP prefixes this LB announces and why, and
taking a VIP (or the whole LB) out of the routers' rotation.

`xlb bgp` lists each neighbor (state, uptime, updates, last error), each VIP address
as a prefix (announced or withdrawn, to which peers, and why: serving, no healthy
backend, withdrawn by an operator, maintenance) and the last events. A prefix is
announced only while a VIP at that address has a healthy, undrained backend.
`withdraw` and `announce` are for operators and audited; `--all` is maintenance:
every prefix is withdrawn, the routers send the VIPs to the other LBs, established
flows keep their backend there. They print what changed (nothing is asked first).

examples:
  xlb bgp
  xlb bgp --json
  xlb bgp withdraw web
  xlb bgp withdraw --all
  xlb bgp announce 198.19.0.10
  xlb bgp announce --all
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from xlb.cli import common, completion
from xlb.units import ago

EVENTS = 10   # the last events `xlb bgp` prints
MARK = {"established": "●", "connected": "◐", "idle": "○", "down": "✗"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_client(p)
    sub = p.add_subparsers(dest="action", metavar="ACTION",
                           help="none to show the sessions and prefixes, or one of these "
                                "(`ACTION -h` for its options):")
    for fn in (withdraw, announce):
        c = common.action(sub, fn)
        which = c.add_mutually_exclusive_group(required=True)
        completion.attach(which.add_argument(
            "vip", metavar="VIP", nargs="?", help="a VIP name or address: its prefix (every "
            "VIP at that address)"), completion.vip_names)
        which.add_argument("--all", action="store_true",
                           help="every prefix of this LB: maintenance" if fn is withdraw else
                           "end maintenance and every withdrawal")
        common.add_client(c)


def run(args: argparse.Namespace) -> int:
    with common.client(args) as c:
        doc = c.call("bgp")
    common.output(doc, args, text)
    return 0


def withdraw(args: argparse.Namespace) -> int:
    """Withdraw a VIP's prefix from the routers, or every prefix (--all: maintenance).

    The routers stop sending that address to this LB and send it to the other LBs
    that announce it; established flows keep their backend there (every LB picks the
    same one). It stays withdrawn, across agent restarts, until `xlb bgp announce`.

    examples:
      xlb bgp withdraw web
      xlb bgp withdraw 198.19.0.10
      xlb bgp withdraw --all --socket /run/xlb/lb1.sock
    """
    return _change(args, "withdraw")


def announce(args: argparse.Namespace) -> int:
    """Announce a VIP's prefix again, or end maintenance (--all: every prefix again).

    A prefix is announced only while a VIP at the address has a healthy, undrained
    backend. During maintenance only `--all` is accepted.

    examples:
      xlb bgp announce web
      xlb bgp announce --all
    """
    return _change(args, "announce")


def _change(args: argparse.Namespace, action: str) -> int:
    params: dict[str, Any] = {"all": True} if args.all else {"vip": args.vip}
    with common.client(args) as c:
        doc = c.call(f"bgp_{action}", **params)
    common.output(doc, args, lambda d: change_text(d, action, args.all))
    return 0


def change_text(d: dict[str, Any], action: str, every: bool) -> str:
    """What a withdraw/announce did, then each prefix it named as it is now."""
    if every and action == "withdraw":
        head = ("maintenance: every prefix withdrawn; the routers send the VIPs to the "
                "other LBs, established flows keep their backend" if d["changed"] else
                "maintenance already")
    elif every:
        head = ("maintenance ended: every prefix that serves is announced again"
                if d["changed"] else "nothing to end: not in maintenance, nothing withdrawn")
    else:
        name = d["prefixes"][0]["prefix"] if d["prefixes"] else "?"
        head = (f"{name}: {action} done" if d["changed"] else
                f"{name}: {action} changed nothing (it was so already)")
    return "\n".join([head, *(prefix_line(p) for p in d["prefixes"])])


def text(doc: dict[str, Any]) -> str:
    """The sessions, the prefixes and the last events, for people."""
    if not doc["enabled"]:
        return "BGP off: this instance has no [bgp] table"
    now = time.time()
    out = [f"ExaBGP {doc['speaker']}" + (f" (pid {doc['pid']})" if doc["pid"] else "")
           + (f", restarted {doc['restarts']}x" if doc["restarts"] else "")
           + f"  AS {doc['local_asn']}  router id {doc['router_id']}"]
    if doc["last_error"]:
        out.append(f"ExaBGP last error: {doc['last_error']}")
    if doc["maintenance"]:
        out.append(f"MAINTENANCE: every prefix withdrawn ({doc['maintenance_by']}); "
                   "`xlb bgp announce --all` ends it")
    out += ["", f"{'neighbor':<26} {'AS':>10}  {'family':<6} {'state':<13} {'for':>5} "
            f"{'sent':>6} {'recv':>6}  last error"]
    for n in doc["neighbors"]:
        age = ago(now - n["since"]) if n["since"] else "-"
        out.append(f"{n['peer']:<26} {n['peer_asn']:>10}  {n['family'].split()[0]:<6} "
                   f"{MARK.get(n['state'], '?')} {n['state']:<11} {age:>5} "
                   f"{n['updates_sent']:>6} {n['updates_received']:>6}  {n['last_error']}"
                   .rstrip())
    out += ["", f"{'prefix':<26} {'state':<11} {'VIPs':<16} why (to peers)"]
    out += [prefix_line(p) for p in doc["prefixes"]] or ["no VIPs"]
    if doc["events"]:
        out += ["", "last events:"]
        out += [f"{time.strftime('%H:%M:%S', time.localtime(e['time']))}  {e['kind']:<12} "
                + (f"{e['peer']}: " if e["peer"] else "") + e["message"]
                for e in doc["events"][-EVENTS:]]
    return "\n".join(out)


def prefix_line(p: dict[str, Any]) -> str:
    state = "▲ announced" if p["announced"] else "▽ withdrawn"
    peers = f" (to {', '.join(p['peers'])})" if p["peers"] else (
        " (no established peer has it yet)" if p["announced"] else "")
    return f"{p['prefix']:<26} {state:<11} {','.join(p['vips']):<16} {p['reason']}{peers}"
