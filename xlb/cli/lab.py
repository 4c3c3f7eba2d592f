"""The lab: client, router, load balancer and backends in network namespaces.

`up` builds it (replacing a running one) with lb1's agent, `traffic` sends real
TCP and UDP to the VIPs from the client namespace, `status` says which parts
exist, `down` removes everything the lab made.

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
    """Build the lab (replaces a running one): namespaces, XDP, backends, lb1's agent.

    examples:
      xlb lab up
    """
    from xlb.lab import run

    common.output(run.up(), args, lambda d: (
        f"lab up in {d['seconds']} s: namespaces {', '.join(d['namespaces'])}; VIPs "
        f"{d['vip']} and {d['vip6']} (:80/tcp, :53/udp) on "
        + ", ".join(f"{lb['instance']} ({lb['mode']} XDP)" for lb in d["lbs"])
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
                f"{', '.join(d['agents_stopped']) or 'none'}, unloaded "
                f"{', '.join(d['unloaded']) or 'nothing'}, removed "
                f"{len(d['namespaces_removed'])} namespaces")

    common.output(run.down(), args, text)
    return 0


def status(args: argparse.Namespace) -> int:
    """Which parts of the lab exist.

    examples:
      xlb lab status --json
    """
    from xlb.lab import run

    common.output(run.status(), args, lambda d: "\n".join(
        [f"{ns:<12} {'present' if ok else 'absent'}" for ns, ok in d["namespaces"].items()]
        + [f"{lb:<12} data plane {'loaded' if ok else 'not loaded'}"
           for lb, ok in d["lbs"].items()]))
    return 0


def traffic(args: argparse.Namespace) -> int:
    """Real TCP and UDP to the VIPs from the client namespace, with a summary at the end.

    It exits 1 if any TCP connection failed.

    examples:
      xlb lab traffic --rate 200 --duration 10
    """
    from xlb.lab import run

    return run.traffic(traffic_args.to_argv(args)).wait()
