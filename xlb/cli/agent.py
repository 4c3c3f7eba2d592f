"""Run an instance's agent in the foreground: the one owner of its data plane.

It loads (or adopts) the data plane, applies the config, serves the API on a Unix
socket, runs the health checks and exports metrics. SIGTERM ends it; the data plane
keeps running and a restarted agent adopts it. It needs CAP_BPF, CAP_PERFMON and
CAP_NET_ADMIN (and CAP_SYS_ADMIN for an interface in a network namespace), not uid 0.
Under systemd (xlb-agent@INSTANCE.service) it logs to the journal and tells systemd
when it is ready.

An XDP program on the interface that is not this instance's own (another load balancer,
a firewall) is left alone and the agent does not start; --force takes the interface over
and the audit log records which program it replaced.

examples:
  xlb agent lb1                               # reads /etc/xlb/lb1.toml
  xlb agent --config ./lb1.toml --log-level debug
  xlb agent lb1 --force                       # take the interface over (audited)
  systemctl enable --now xlb-agent@lb1
"""

from __future__ import annotations

import argparse

from xlb import paths
from xlb.errors import UsageError

__doc__ = f"{__doc__}\n{paths.help_text()}\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance", nargs="?", metavar="INSTANCE",
                   help=f"the instance to run: reads {paths.default_config('INSTANCE')}")
    p.add_argument("--config", metavar="FILE",
                   help="instance config with an optional [agent] table (instead of "
                        "INSTANCE's default)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="least severe level logged (default: info: what the agent did, no "
                        "line per tick)")
    p.add_argument("--force", action="store_true",
                   help="replace another XDP program found on the interface (audited)")


def config_path(args: argparse.Namespace) -> str:
    """--config, or the instance's file under /etc/xlb."""
    if args.config:
        return str(args.config)
    if not args.instance:
        raise UsageError("xlb agent: name the instance (xlb agent lb1 reads "
                         f"{paths.default_config('lb1')}) or give --config FILE")
    return paths.default_config(args.instance)


def run(args: argparse.Namespace) -> int:
    from xlb.agent.main import main as agent_main

    return agent_main(config_path(args), args.log_level, args.instance, args.force)
