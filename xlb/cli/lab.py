"""The lab: client, router, load balancer and backends in network namespaces.

`up` builds it (replacing a running one): two load balancers (lb1, lb2), each with
its agent announcing the VIPs by BGP to BIRD in the router, which spreads flows over
both by ECMP. `traffic` sends real TCP and UDP to the VIPs from the client namespace,
`status` says which parts exist, the router's BGP sessions and its next hops for each
VIP, `down` removes everything the lab made.

examples:
  xlb lab up
  xlb lab traffic --rate 200 --duration 10
  xlb lab status --json
  xlb lab down
"""

from __future__ import annotations

import argparse
from typing import Any

from xlb.cli import common
from xlb.lab import traffic_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = common.actions(p)
    for func in (up, down, status):
        common.add_json(common.action(sub, func))
    traffic_args.add_arguments(common.action(sub, traffic))


def up(args: argparse.Namespace) -> int:
    """Build the lab (replaces a running one): namespaces, XDP, backends, BIRD, two agents.

    It returns once the router has both LBs as next hops for every VIP.

    examples:
      xlb lab up
    """
    from xlb.lab import run

    common.output(run.up(), args, lambda d: (
        f"lab up in {d['seconds']} s: namespaces {', '.join(d['namespaces'])}; VIPs "
        f"{d['vip']} and {d['vip6']} (:80/tcp, :53/udp) on "
        + ", ".join(f"{lb['instance']} ({lb['mode']} XDP)" for lb in d["lbs"])
        + "".join(f"\nrouter: {p} via {', '.join(hops)} (BGP, ECMP)"
                  for p, hops in d["routes"].items())
        + "\ntry: ip netns exec xlb-client curl http://" + d["vip"] + "/"))
    return 0


def down(args: argparse.Namespace) -> int:
    """Remove everything the lab made: processes (by PID), data plane, namespaces.

    examples:
      xlb lab down
    """
    from xlb.lab import run

    def text(d: dict[str, Any]) -> str:
        return (f"lab down: stopped {len(d['servers_stopped'])} servers and agents "
                f"{', '.join(d['agents_stopped']) or 'none'}"
                f"{', BIRD' if d['bird_stopped'] else ''}, unloaded "
                f"{', '.join(d['unloaded']) or 'nothing'}, removed "
                f"{len(d['namespaces_removed'])} namespaces")

    common.output(run.down(), args, text)
    return 0


def status(args: argparse.Namespace) -> int:
    """Which parts of the lab exist; the router's BGP sessions and next hops (from BIRD).

    examples:
      xlb lab status
      xlb lab status --json
    """
    from xlb.lab import run

    common.output(run.status(), args, _status_text)
    return 0


def _status_text(d: dict[str, Any]) -> str:
    router = d["router"]
    lines = [f"{ns:<12} {'present' if ok else 'absent'}" for ns, ok in d["namespaces"].items()]
    lines += [f"{lb:<12} data plane {'loaded' if ok else 'not loaded'}, agent "
              f"{'running' if d['agents'].get(lb) else 'not running'}"
              for lb, ok in d["lbs"].items()]
    if not router["pid"]:
        return "\n".join([*lines, "router       BIRD not running"])
    lines.append(f"router       BIRD pid {router['pid']}"
                 + (f": {router['error']}" if router.get("error") else ""))
    lines += [f"  session {name:<8} {state}" for name, state in router["sessions"].items()]
    lines += [f"  route {prefix:<24} via {', '.join(hops) or 'nothing (no LB announces it)'}"
              for prefix, hops in router["routes"].items()]
    return "\n".join(lines)


def traffic(args: argparse.Namespace) -> int:
    """Real TCP and UDP to the VIPs from the client namespace, with a summary at the end.

    The summary counts the answers per VIP by the mode their flow took, as the backends
    saw it (dsr: the client's address; snat: an address of an LB's SNAT pool), then each
    LB's VIP modes and the packets it forwarded per mode meanwhile (DSR, SNAT, SNAT
    replies). It exits 1 if any TCP connection failed.

    examples:
      xlb lab traffic --rate 200 --duration 10
      xlb lab traffic --duration 5 --json
    """
    import json
    import subprocess

    from xlb.lab import modes, run

    before = modes.packets()
    gen = run.traffic(traffic_args.to_argv(args),
                      stdout=subprocess.PIPE if args.json else None)
    try:
        out, _ = gen.communicate()
    except KeyboardInterrupt:  # the generator got the Ctrl-C too: it prints its summary
        out, _ = gen.communicate()
    lbs = modes.report(before)
    if args.json:
        lines = (out or b"").decode().strip().splitlines()
        summary = json.loads(lines[-1]) if lines else {}
        print(json.dumps({**summary, "lbs": lbs}))
    else:
        print(modes.report_text(lbs))
    return gen.returncode
