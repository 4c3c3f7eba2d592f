"""Load, inspect and unload the XDP data plane of an instance (no agent needed).

`load` compiles bpf/xlb.c (or adopts the pinned maps of an earlier load), applies the
config all-or-nothing and attaches XDP; `apply` changes VIPs and backends of a loaded
instance; `show` prints what is pinned; `unload` detaches and keeps the maps pinned
unless --remove-pins.

`load` never replaces an XDP program that is not the instance's own (another load
balancer, a firewall): it refuses, naming it; --force takes the interface over and the
instance's audit log records which program it replaced.

examples:
  xlb dataplane load --config lb1.toml --xdp-mode generic
  xlb dataplane apply --config lb1.toml
  xlb dataplane show --instance lb1 --sample 1
  xlb dataplane unload --instance lb1 --remove-pins --yes
"""

from __future__ import annotations

import argparse
from typing import Any

from xlb.cli import common
from xlb.errors import NotLoadedError
from xlb.units import human


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = common.actions(p)
    c = common.action(sub, load)
    c.add_argument("--config", required=True, help="the instance config (TOML)")
    c.add_argument("--xdp-mode", choices=["native", "generic"], help="override the config's")
    c.add_argument("--force", action="store_true",
                   help="replace another XDP program found on the interface (audited)")
    common.add_json(c)
    c = common.action(sub, apply)
    c.add_argument("--config", required=True, help="the instance config (TOML)")
    common.add_json(c)
    c = common.action(sub, unload)
    common.add_instance(c, "the instance's name", required=True)
    c.add_argument("--remove-pins", action="store_true",
                   help="also drop the maps: the connection table and counters are lost")
    common.add_yes(c)
    common.add_json(c)
    c = common.action(sub, show)
    common.add_instance(c, "only this instance (default: every loaded one)")
    c.add_argument("--sample", type=float, default=0.0, help="seconds to sample rates over")
    common.add_json(c)


def load(args: argparse.Namespace) -> int:
    """Compile (or adopt the pinned maps), apply a config, attach XDP.

    Another XDP program on the interface is refused (exit code of a refusal) unless
    --force: then it is replaced, and the instance's audit log records it first.

    examples:
      xlb dataplane load --config lb1.toml
      xlb dataplane load --config lb1.toml --xdp-mode generic --json
      xlb dataplane load --config lb1.toml --force
    """
    from xlb.agent.audit import AuditLog, takeover
    from xlb.dataplane.config import load_config
    from xlb.dataplane.lifecycle import load_instance
    from xlb.paths import default_audit_log

    cfg = load_config(args.config)
    record = takeover(AuditLog(default_audit_log(cfg.instance.name))) if args.force else None
    doc = load_instance(cfg, mode=args.xdp_mode, force=args.force, takeover=record)
    common.output(doc, args, lambda d: (
        f"{'adopted' if d['adopted'] else 'loaded'} instance {d['instance']} on "
        f"{d['interface']}: {d['mode']} XDP, prog {d['prog_id']}; {changes(d)}"
        + (f"\nreplaced XDP program id {d['replaced']['id']} ({d['replaced']['name']}, "
           f"tag {d['replaced']['tag']}, {d['replaced']['mode']}) (--force; audited)"
           if d["replaced"] else "")))
    return 0


def apply(args: argparse.Namespace) -> int:
    """Apply a changed config to a loaded instance (no recompile; all-or-nothing).

    examples:
      xlb dataplane apply --config lb1.toml
    """
    from xlb.dataplane.config import load_config
    from xlb.dataplane.lifecycle import apply_config

    doc = apply_config(load_config(args.config))
    common.output(doc, args, lambda d: (
        f"applied to {d['instance']} in {d['seconds'] * 1000:.1f} ms: {changes(d)}"))
    return 0


def changes(d: dict[str, Any]) -> str:
    """What an apply changed: VIPs +added ~changed -removed, backends +added -removed."""
    return (f"VIPs +{len(d['vips_added'])} ~{len(d['vips_changed'])} -{len(d['vips_removed'])}, "
            f"backends +{len(d['backends_added'])} -{len(d['backends_removed'])}")


def unload(args: argparse.Namespace) -> int:
    """Detach XDP; the maps stay pinned (a later load adopts them) unless --remove-pins.

    examples:
      xlb dataplane unload --instance lb1
      xlb dataplane unload --instance lb1 --remove-pins --yes
    """
    from xlb.dataplane.lifecycle import unload_instance

    if args.remove_pins and not common.confirm(
            args, f"remove the maps of {args.instance} (--remove-pins)",
            lambda: "The connection table goes: established flows lose their backend."):
        return 1
    doc = unload_instance(args.instance, remove_pins=args.remove_pins)
    common.output(doc, args, lambda d: (
        f"instance {d['instance']}: " + ("detached" if d["detached"] else "was not attached")
        + ("; maps removed" if d["pins_removed"] else "; maps kept pinned (load adopts them)")))
    return 0


def show(args: argparse.Namespace) -> int:
    """VIPs, backends, Maglev shares and counters, read from the pinned maps.

    examples:
      xlb dataplane show
      xlb dataplane show --instance lb1 --sample 1 --json
    """
    from xlb.dataplane.lifecycle import describe

    names = instances(args.instance)
    if not names:
        raise NotLoadedError("no data plane instance is loaded (xlb dataplane load --config F)")
    docs = [describe(n, sample=args.sample) for n in names]
    common.output(docs, args, lambda ds: "\n".join(describe_text(d) for d in ds))
    return 0


def instances(name: str | None) -> list[str]:
    """The instance asked for, or every loaded one."""
    from xlb.dataplane.lifecycle import instances as loaded

    return [name] if name else loaded()


def describe_text(d: dict[str, Any]) -> str:
    """One instance as `describe()` sees it, for people."""
    a = d["attach"]
    where = f"{a['interface']}" + (f" (netns {a['netns']})" if a.get("netns") else "")
    state = (f"{a['mode']} XDP, prog {a['prog_id']}" if a.get("ours")
             else f"NOT ATTACHED (interface reports {a.get('mode')}, prog {a.get('prog_id')})")
    t = d["totals"]
    rate = f", {t['pps']:.0f} pps" if "pps" in t else ""
    lines = [f"instance {d['instance']}: {where}: {state}",
             f"  packets {human(t['packets'])}, bytes {human(t['bytes'])}, "
             f"dropped {human(t['dropped'])}{rate}"]
    for v in d["vips"]:
        lines.append(f"  VIP {v['name']} ({v['vip']}, {v['mode']}): {human(v['packets'])} "
                     "packets")
        for b in v["backends"]:
            lines.append(f"    {b['address']:<28} weight {b['weight']!s:>5} {b['state']:<8} "
                         f"ring {b['ring_share'] * 100:5.1f}%  packets {human(b['packets'])}"
                         f"  new conns {human(b['new_connections'])}"
                         f"  active {human(b['active_connections'])}")
    if d["queues"]:
        lines.append("  RX queues: " + ", ".join(
            f"q{q['queue']} {human(q['packets'])}" + (f" ({q['pps']:.0f} pps)" if "pps" in q
                                                      else "")
            for q in d["queues"]))
    lines.append("  connection-table misses: " + ", ".join(
        f"{k} {human(v['packets'])}" + (f" ({v['per_s']:.0f}/s)" if "per_s" in v else "")
        for k, v in d["misses"].items()))
    busy = {k: v["packets"] for k, v in d["reasons"].items() if v["packets"]}
    if busy:
        lines.append("  verdicts: " + ", ".join(f"{k} {human(v)}" for k, v in busy.items()))
    return "\n".join(lines)
