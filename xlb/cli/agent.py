"""Run an instance's agent in the foreground: the one owner of its data plane.

It loads (or adopts) the data plane, applies the config, serves the API on a Unix
socket, runs the health checks and exports metrics. SIGTERM ends it; the data plane
keeps running and a restarted agent adopts it.

An XDP program on the interface that is not this instance's own (another load balancer,
a firewall) is left alone and the agent does not start; --force takes the interface over
and the audit log records which program it replaced.

examples:
  xlb agent --config /etc/xlb/lb1.toml
  xlb agent --config /etc/xlb/lb1.toml --force
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="instance config with an [agent] table")
    p.add_argument("--force", action="store_true",
                   help="replace another XDP program found on the interface (audited)")


def run(args: argparse.Namespace) -> int:
    from xlb.agent.main import main as agent_main
    from xlb.dataplane.lifecycle import require_root

    require_root("xlb agent")
    return agent_main(args.config, force=args.force)
