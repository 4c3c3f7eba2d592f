"""`xlb`: the command line. Each subcommand is a thin shell over a library call;
known failures print one clear line on stderr (never a traceback) and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from xlb import __version__
from xlb.units import human as _human


def _print(doc: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    print(json.dumps(doc, indent=2) if as_json else text(doc))




def _describe_text(d: dict[str, Any]) -> str:
    a = d["attach"]
    where = f"{a['interface']}" + (f" (netns {a['netns']})" if a.get("netns") else "")
    state = (f"{a['mode']} XDP, prog {a['prog_id']}" if a.get("ours")
             else f"NOT ATTACHED (interface reports {a.get('mode')}, prog {a.get('prog_id')})")
    t = d["totals"]
    rate = f", {t['pps']:.0f} pps" if "pps" in t else ""
    lines = [f"instance {d['instance']}: {where}: {state}",
             f"  packets {_human(t['packets'])}, bytes {_human(t['bytes'])}, "
             f"dropped {_human(t['dropped'])}{rate}"]
    for v in d["vips"]:
        lines.append(f"  VIP {v['name']} ({v['vip']}): {_human(v['packets'])} packets")
        for b in v["backends"]:
            lines.append(f"    {b['address']:<28} weight {b['weight']!s:>5} {b['state']:<8} "
                         f"ring {b['ring_share'] * 100:5.1f}%  packets {_human(b['packets'])}"
                         f"  new conns {_human(b['new_connections'])}"
                         f"  active {_human(b.get('active_connections', 0))}")
    if d["queues"]:
        lines.append("  RX queues: " + ", ".join(
            f"q{q['queue']} {_human(q['packets'])}" + (f" ({q['pps']:.0f} pps)" if "pps" in q
                                                       else "")
            for q in d["queues"]))
    busy = {k: v["packets"] for k, v in d["reasons"].items() if v["packets"]}
    if busy:
        lines.append("  verdicts: " + ", ".join(f"{k} {_human(v)}" for k, v in busy.items()))
    return "\n".join(lines)


def cmd_dataplane_load(args: argparse.Namespace) -> int:
    from xlb.dataplane.config import load_config
    from xlb.dataplane.lifecycle import load_instance

    cfg = load_config(args.config)
    doc = load_instance(cfg, mode=args.xdp_mode)
    _print(doc, args.json, lambda d: (
        f"{'adopted' if d['adopted'] else 'loaded'} instance {d['instance']} on "
        f"{d['interface']}: {d['mode']} XDP, prog {d['prog_id']}; VIPs added "
        f"{len(d['vips_added'])}, changed {len(d['vips_changed'])}, removed "
        f"{len(d['vips_removed'])}"))
    return 0


def cmd_dataplane_apply(args: argparse.Namespace) -> int:
    from xlb.dataplane.config import load_config
    from xlb.dataplane.lifecycle import apply_config

    doc = apply_config(load_config(args.config))
    _print(doc, args.json, lambda d: (
        f"applied to {d['instance']} in {d['seconds'] * 1000:.1f} ms: VIPs +{len(d['vips_added'])}"
        f" ~{len(d['vips_changed'])} -{len(d['vips_removed'])}, backends "
        f"+{len(d['backends_added'])} -{len(d['backends_removed'])}"))
    return 0


def cmd_dataplane_unload(args: argparse.Namespace) -> int:
    from xlb.dataplane.lifecycle import unload_instance

    if args.remove_pins and not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("--remove-pins drops the connection table; add --yes to confirm")
        answer = input(f"Remove {args.instance}'s maps? Established flows lose their backend "
                       "[y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return 1
    doc = unload_instance(args.instance, remove_pins=args.remove_pins)
    _print(doc, args.json, lambda d: (
        f"instance {d['instance']}: " + ("detached" if d["detached"] else "was not attached")
        + ("; maps removed" if d["pins_removed"] else "; maps kept pinned (load adopts them)")))
    return 0


def _instances(args: argparse.Namespace) -> list[str]:
    from xlb.dataplane.lifecycle import instances

    names = [args.instance] if getattr(args, "instance", None) else instances()
    return names


def cmd_dataplane_show(args: argparse.Namespace) -> int:
    from xlb.dataplane.lifecycle import describe

    names = _instances(args)
    if not names:
        raise FileNotFoundError("no data plane instance is loaded (xlb dataplane load --config F)")
    docs = [describe(n, sample=args.sample) for n in names]
    _print(docs, args.json, lambda ds: "\n".join(_describe_text(d) for d in ds))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from xlb.dataplane.lifecycle import describe

    docs = [describe(n, sample=args.sample) for n in _instances(args)]
    summary = [{"instance": d["instance"], "attach": d["attach"], "totals": d["totals"],
                "queues": d["queues"], "vips": [{k: v[k] for k in ("name", "vip", "packets")}
                                                for v in d["vips"]]} for d in docs]
    _print({"instances": summary}, args.json, lambda s: "\n".join(
        _describe_text(d) for d in docs) or "no data plane instance is loaded")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from xlb.lab.demo import run_demo

    return run_demo(duration=args.duration, rate=args.rate,
                    console=False if args.no_console else None, theme=args.theme)


def cmd_lab(args: argparse.Namespace) -> int:
    from xlb.lab import run

    doc = {"up": run.up, "down": run.down, "status": run.status}[args.action]()
    texts = {
        "up": lambda d: (f"lab up in {d['seconds']} s: namespaces {', '.join(d['namespaces'])}; "
                         f"VIPs {d['vip']} and {d['vip6']} (:80/tcp, :53/udp) on "
                         + ", ".join(f"{lb['instance']} ({lb['mode']} XDP)" for lb in d["lbs"])
                         + "\ntry: ip netns exec xlb-client curl http://" + d["vip"] + "/"),
        "down": lambda d: (f"lab down: stopped {len(d['servers_stopped'])} servers and agents "
                           f"{', '.join(d['agents_stopped']) or 'none'}, unloaded "
                           f"{', '.join(d['unloaded']) or 'nothing'}, removed "
                           f"{len(d['namespaces_removed'])} namespaces"),
        "status": lambda d: "\n".join(
            [f"{ns:<12} {'present' if ok else 'absent'}" for ns, ok in d["namespaces"].items()]
            + [f"{lb:<12} data plane {'loaded' if ok else 'not loaded'}"
               for lb, ok in d["lbs"].items()]),
    }
    _print(doc, args.json, texts[args.action])
    return 0


def cmd_lab_traffic(args: argparse.Namespace) -> int:
    from xlb.lab import run

    return run.traffic(args.traffic_args).wait()


def cmd_agent(args: argparse.Namespace) -> int:
    from xlb.agent.main import main as agent_main
    from xlb.dataplane.lifecycle import require_root

    require_root("xlb agent")
    return agent_main(args.config)


def cmd_console(args: argparse.Namespace) -> int:
    from console.main import run as run_console

    return run_console(args.socket, args.read_only, args.theme, args.web, args.host, args.port)


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from xlb.agent.client import AgentClient

    return AgentClient(args.socket)


def _backends_text(vips: list[dict[str, Any]]) -> str:
    lines = []
    for v in vips:
        lines.append(f"{v['name']} ({v['vip']}): {v['pps']:.0f} pps, "
                     f"{v.get('active_conns', 0)} active, "
                     f"{v['healthy']}/{v['total']} healthy")
        for b in v["backends"]:
            lines.append(f"  {b['address']:<28} weight {b['weight']:>5}  {b['state']:<9} "
                         f"ring {b['ring_share'] * 100:5.1f}%  {b['pps']:8.0f} pps  "
                         f"{b['new_conns_per_s']:6.0f} new/s  "
                         f"{b.get('active_conns', 0):7d} active  health {b['health']}")
    return "\n".join(lines) or "no VIPs"


def cmd_vips(args: argparse.Namespace) -> int:
    with _client(args) as c:
        doc = c.call("vips")
    _print(doc, args.json, lambda vs: "\n".join(
        f"{v['name']:<16} {v['vip']:<28} {v['pps']:8.0f} pps  {v['healthy']}/{v['total']} healthy"
        for v in vs) or "no VIPs")
    return 0


def cmd_drops(args: argparse.Namespace) -> int:
    """The console's Drops view as a command: every verdict reason, rate and total."""
    from xlb.dataplane.structs import ACTION_ORDER, reason_action

    with _client(args) as c:
        st = c.call("status")
    totals = st.get("reason_totals", {})
    doc = [{"reason": r, "kind": reason_action(r), "per_s": rate, "total": totals.get(r, 0)}
           for r, rate in st.get("reasons", {}).items()]
    doc.sort(key=lambda d: (ACTION_ORDER.get(d["kind"], 3), -d["per_s"], -d["total"]))
    _print(doc, args.json, lambda ds: "\n".join(
        f"{d['reason']:<22} {d['kind']:<5} {_human(d['per_s']):>7}/s  {_human(d['total']):>7} total"
        for d in ds) or "no verdicts yet")
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    with _client(args) as c:
        doc = c.call("backends", vip=args.vip)
    _print(doc, args.json, _backends_text)
    return 0


def _confirm(args: argparse.Namespace, target: str, consequences: Callable[[], str]) -> bool:
    """Go on with `target`? --yes, or "y" on a terminal; with no terminal, --yes is needed
    (UsageError). `consequences` is worked out only when someone is asked."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{target}: add --yes to confirm (no terminal to ask on)")
    answer = input(f"{target[0].upper()}{target[1:]}? {consequences()} [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing changed")
    return False


def cmd_change(args: argparse.Namespace) -> int:
    if args.command == "drain" and not _confirm(
            args, f"drain {args.address} in "
                  f"{'VIP ' + args.vip if args.vip else 'every VIP that has it'}",
            lambda: "New connections avoid it; established ones stay."):
        return 1
    params: dict[str, Any] = {"address": args.address, "vip": args.vip, "force": args.force}
    if args.command == "weight":
        params["weight"] = args.weight
    with _client(args) as c:
        doc = c.call(args.command, **params)
    _print(doc, args.json, lambda d: f"{args.command} {args.address}: done in "
           + ", ".join(f"{n} ({d['before'][n]} -> {d['after'][n]})" for n in d["vips"]))
    return 0


def _canonical(address: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address  # the agent says what is wrong with it


def _vip_rows(c: Any, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """VIP `name` and all VIPs, as the agent shows them. A VIP that is not there is refused
    before anyone is asked to confirm removing it (the agent would refuse it the same way)."""
    from xlb.agent.client import REFUSED, AgentError

    vips = c.call("backends")
    for v in vips:
        if v["name"] == name:
            return v, vips
    known = ", ".join(repr(v["name"]) for v in vips) or "none"
    raise AgentError(REFUSED, f"no VIP named {name!r} (known: {known})")


def _backend_removal(c: Any, vip: str, address: str) -> str:
    """What removing `address` from `vip` does to its flows, as the data plane does it."""
    from xlb.agent.client import REFUSED, AgentError

    this, vips = _vip_rows(c, vip)
    if not any(b["address"] == _canonical(address) for b in this["backends"]):
        raise AgentError(REFUSED, f"VIP {vip!r} has no backend {address!r}")
    others = [v["name"] for v in vips if v["name"] != vip
              and any(b["address"] == _canonical(address) for b in v["backends"])]
    if others:
        which = f"VIP {others[0]} still has" if len(others) == 1 else (
            f"VIPs {', '.join(others)} still have")
        return (f"It gets no new flows from VIP {vip}; {which} it, so its established flows "
                "stay, as if drained.")
    return ("No other VIP has it, so it is invalidated: its established flows move to the "
            "remaining backends, which do not know them (those connections break).")


def cmd_backend(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.action == "add":
            doc = c.call("add_backend", vip=args.vip, address=args.address, weight=args.weight,
                         state="drained" if args.drained else "active")
        else:
            if not _confirm(args, f"remove backend {args.address} from VIP {args.vip}",
                            lambda: _backend_removal(c, args.vip, args.address)):
                return 1
            doc = c.call("remove_backend", vip=args.vip, address=args.address,
                         force=args.force)
    _print(doc, args.json, lambda d: (
        f"added backend {d['after'][args.vip]['address']} to VIP {args.vip}: weight "
        f"{d['after'][args.vip]['weight']}, {d['after'][args.vip]['state']} (health checks "
        "follow)" if args.action == "add" else
        f"removed backend {d['before'][args.vip]['address']} from VIP {args.vip}"))
    return 0


def _backend_arg(text: str) -> dict[str, Any]:
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
    if weight is None:
        return {"address": addr}
    if not weight.isdigit():
        raise UsageError(f"--backend {text!r}: expected ADDR[:WEIGHT] ([ADDR]:WEIGHT for IPv6)")
    return {"address": addr, "weight": int(weight)}


def _vip_removal(c: Any, name: str) -> str:
    label = _vip_rows(c, name)[0]["vip"]
    return (f"Its traffic will no longer be balanced: packets to {label} pass to this host's "
            "own network stack (XDP_PASS), so new connections are not balanced and "
            "established ones no longer reach their backends.")


def cmd_vip(args: argparse.Namespace) -> int:
    backends = [_backend_arg(b) for b in getattr(args, "backend", None) or []]
    with _client(args) as c:
        if args.action == "add":
            doc = c.call("add_vip", name=args.name, address=args.address, port=args.port,
                         protocol=args.protocol, backends=backends)
        else:
            if not _confirm(args, f"remove VIP {args.name}",
                            lambda: _vip_removal(c, args.name)):
                return 1
            doc = c.call("remove_vip", name=args.name)

    def text(d: dict[str, Any]) -> str:
        v = d["after"][args.name] if args.action == "add" else d["before"][args.name]
        host = f"[{v['address']}]" if ":" in v["address"] else v["address"]
        where = f"VIP {args.name} ({host}:{v['port']}/{v['protocol']})"
        if args.action == "add":
            return f"added {where} with {len(v['backend'])} backend(s)"
        return f"removed {where}: its packets now pass to the host"

    _print(doc, args.json, text)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    import time as _time

    with _client(args) as c:
        doc = c.call("audit", n=args.n)
    _print(doc, args.json, lambda es: "\n".join(
        f"{_time.strftime('%Y-%m-%d %H:%M:%S', _time.localtime(e['time']))} {e['user']}"
        f"({e['uid']}) {e['action']} {e['params'].get('name') or e['params'].get('address')}: "
        f"{e['before']} -> "
        f"{e['after']}" for e in es) or "no changes recorded")
    return 0


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xlb", description="XDP load balancer and console")
    p.add_argument("--version", action="version", version=f"xlb {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    dp = sub.add_parser("dataplane", help="load, inspect and unload the XDP data plane")
    dps = dp.add_subparsers(dest="action", required=True)
    ld = dps.add_parser("load", help="compile/adopt, apply a config, attach XDP")
    ld.add_argument("--config", required=True, help="instance config (TOML)")
    ld.add_argument("--xdp-mode", choices=["native", "generic"], help="override the config")
    ld.add_argument("--json", action="store_true")
    ld.set_defaults(func=cmd_dataplane_load)
    ap = dps.add_parser("apply", help="apply a changed config to a loaded instance")
    ap.add_argument("--config", required=True)
    ap.add_argument("--json", action="store_true")
    ap.set_defaults(func=cmd_dataplane_apply)
    ul = dps.add_parser("unload", help="detach XDP (maps stay pinned unless --remove-pins)")
    ul.add_argument("--instance", required=True)
    ul.add_argument("--remove-pins", action="store_true",
                    help="also drop maps: the connection table and counters are lost")
    ul.add_argument("--yes", action="store_true", help="confirm --remove-pins without asking")
    ul.add_argument("--json", action="store_true")
    ul.set_defaults(func=cmd_dataplane_unload)
    sh = dps.add_parser("show", help="VIPs, backends, Maglev shares, counters")
    sh.add_argument("--instance")
    sh.add_argument("--sample", type=float, default=0.0, help="seconds to sample rates over")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_dataplane_show)

    st = sub.add_parser("status", help="every instance: attach state, totals, rates")
    st.add_argument("--instance")
    st.add_argument("--sample", type=float, default=0.5, help="seconds to sample rates over")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    ag = sub.add_parser("agent", help="run an instance's agent in the foreground")
    ag.add_argument("--config", required=True, help="instance config with an [agent] table")
    ag.set_defaults(func=cmd_agent)
    for name, text, func in (("vips", "VIPs with rates and health", cmd_vips),
                             ("backends", "backends per VIP: weight, state, Maglev share, rates",
                              cmd_backends),
                             ("drops", "verdict reasons: drops, passes, encapsulations",
                              cmd_drops)):
        c = sub.add_parser(name, help=text + " (from the agent)")
        c.add_argument("--socket", help="agent socket (default: the only one in /run/xlb)")
        c.add_argument("--json", action="store_true")
        if name == "backends":
            c.add_argument("--vip", help="only this VIP (by name)")
        c.set_defaults(func=func)
    for name, text in (("drain", "no new flows to a backend (established ones stay)"),
                       ("undrain", "let a drained backend take new flows again"),
                       ("weight", "set a backend's weight")):
        c = sub.add_parser(name, help=text)
        c.add_argument("address", help="backend address")
        if name == "weight":
            c.add_argument("weight", type=int, help="0..65535")
        c.add_argument("--vip", help="only in this VIP (by name; default: every VIP with it)")
        c.add_argument("--force", action="store_true",
                       help="even if it leaves a VIP without a healthy backend")
        c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        c.add_argument("--socket")
        c.add_argument("--json", action="store_true")
        c.set_defaults(func=cmd_change)
    be = sub.add_parser("backend", help="add a backend to a VIP, or remove it")
    bes = be.add_subparsers(dest="action", required=True)
    c = bes.add_parser("add", help="add a backend to a VIP: new flows at once, health checks "
                                   "follow")
    c.add_argument("address", help="backend address (IPv4 or IPv6)")
    c.add_argument("--vip", required=True, help="the VIP (by name)")
    c.add_argument("--weight", type=int, default=1, help="0..65535 (default 1)")
    c.add_argument("--drained", action="store_true", help="add it drained (no new flows yet)")
    c = bes.add_parser("remove", help="remove a backend from a VIP (asks first)")
    c.add_argument("address", help="backend address")
    c.add_argument("--vip", required=True, help="the VIP (by name)")
    c.add_argument("--force", action="store_true",
                   help="even if it leaves the VIP without a healthy backend")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    vi = sub.add_parser("vip", help="add a VIP, or remove one")
    vis = vi.add_subparsers(dest="action", required=True)
    c = vis.add_parser("add", help="add a VIP, balanced at once")
    c.add_argument("name", metavar="NAME", help="unique VIP name")
    c.add_argument("address", metavar="ADDRESS", help="VIP address (IPv4 or IPv6)")
    c.add_argument("port", metavar="PORT", type=int, help="0..65535 (0 = any port)")
    c.add_argument("protocol", metavar="PROTO", help="tcp | udp")
    c.add_argument("--backend", action="append", metavar="ADDR[:WEIGHT]",
                   help="a backend (repeat for more; IPv6 with a weight: [ADDR]:WEIGHT)")
    c = vis.add_parser("remove", help="remove a VIP: its packets pass to the host (asks first)")
    c.add_argument("name", help="the VIP (by name)")
    c.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    for group, func in ((bes, cmd_backend), (vis, cmd_vip)):
        for c in group.choices.values():
            c.add_argument("--socket")
            c.add_argument("--json", action="store_true")
            c.set_defaults(func=func)
    au = sub.add_parser("audit", help="recent changes: who, when, what, before and after")
    au.add_argument("-n", type=int, default=20)
    au.add_argument("--socket")
    au.add_argument("--json", action="store_true")
    au.set_defaults(func=cmd_audit)

    lab = sub.add_parser("lab", help="the lab: client, router, LB, backends in namespaces")
    labs = lab.add_subparsers(dest="action", required=True)
    for action, text in (("up", "build the lab (replaces a running one)"),
                         ("down", "remove everything the lab made"),
                         ("status", "which lab parts exist")):
        la = labs.add_parser(action, help=text)
        la.add_argument("--json", action="store_true")
        la.set_defaults(func=cmd_lab)
    tr = labs.add_parser("traffic", add_help=False,
                         help="real TCP/UDP to the VIP from the client namespace "
                              "(--rate, --concurrency, --duration, --udp-every, --v6-every, "
                              "--json; -h)")
    tr.add_argument("traffic_args", nargs=argparse.REMAINDER)
    tr.set_defaults(func=cmd_lab_traffic)

    co = sub.add_parser("console", help="the live operations console (Textual)")
    co.add_argument("--socket", action="append",
                    help="agent socket; repeat for a fleet (default: every one in /run/xlb)")
    co.add_argument("--read-only", action="store_true", help="show everything, change nothing")
    co.add_argument("--theme", help="xlb-dark (default), xlb-light, xlb-high-contrast")
    co.add_argument("--web", action="store_true",
                    help="serve the console to a browser instead (textual-serve)")
    co.add_argument("--host", default="127.0.0.1", help="with --web (default 127.0.0.1)")
    co.add_argument("--port", type=int, default=8000, help="with --web (default 8000)")
    co.set_defaults(func=cmd_console)

    de = sub.add_parser("demo", help="lab up, traffic, then the console")
    de.add_argument("--duration", type=float, default=0.0, help="seconds (0: until Ctrl-C)")
    de.add_argument("--rate", type=float, default=100.0, help="new TCP connections per second")
    de.add_argument("--no-console", action="store_true",
                    help="print live figures instead of opening the console")
    de.add_argument("--theme", help="console theme")
    de.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    from console.main import ConsoleError
    from xlb.agent.client import AgentError
    from xlb.dataplane.bpfsys import BpfError
    from xlb.dataplane.config import ConfigError
    from xlb.dataplane.maps import LayoutError
    from xlb.dataplane.xdp import AttachError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["lab", "traffic"]:  # its options belong to xlb.lab.traffic
        args = argparse.Namespace(func=cmd_lab_traffic, traffic_args=argv[2:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"xlb: invalid config:\n{e}", file=sys.stderr)
    except AgentError as e:
        print(f"xlb: the agent refused: {e}", file=sys.stderr)
    except UsageError as e:
        print(f"xlb: {e}", file=sys.stderr)
        return 2
    except ConsoleError as e:
        print(f"xlb console: {e}", file=sys.stderr)
    except (AttachError, LayoutError, BpfError, PermissionError, FileNotFoundError,
            RuntimeError, ConnectionError) as e:
        print(f"xlb: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
