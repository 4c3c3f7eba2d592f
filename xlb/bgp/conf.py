"""ExaBGP's configuration and environment, written from the checked [bgp] table.

Everything ExaBGP would otherwise pick for itself is pinned here, so the agent supervises
exactly one known thing: no CLI pipes (the agent talks through the process API only), no
privilege drop (a setuid would clear the parent-death signal that ties ExaBGP to the agent),
no respawning of the bridge (if the bridge dies ExaBGP ends and the agent restarts the pair),
no listening socket unless a neighbor is passive, no per-keepalive statistics in its log.
Each neighbor carries the family of its address only: v4 prefixes go to IPv4 neighbors, v6
to IPv6 ones.
"""

from __future__ import annotations

import os
import pwd
import shlex
import sys

from xlb.bgp.settings import BgpSettings, Neighbor

PROCESS = "xlb"  # the process block's name, referred to by every neighbor's api


def bridge_command(socket_path: str) -> list[str]:
    """The process ExaBGP runs: our relay between its stdin/stdout and the Speaker's
    socket, with the Python that runs the agent."""
    return [sys.executable, "-m", "xlb.bgp.bridge", socket_path]


def config(settings: BgpSettings, socket_path: str) -> str:
    """exabgp.conf: one process block (the bridge, JSON) and one block per neighbor."""
    run = " ".join(shlex.quote(a) for a in bridge_command(socket_path))
    out = [f"process {PROCESS} {{", f"    run {run};", "    encoder json;", "}"]
    for nb in settings.neighbors:
        out += _neighbor(settings, nb)
    return "\n".join(out) + "\n"


def _neighbor(settings: BgpSettings, nb: Neighbor) -> list[str]:
    lines = [f"neighbor {nb.address} {{",
             f"    router-id {settings.router_id};",
             f"    local-as {settings.local_asn};",
             f"    peer-as {nb.asn};",
             f"    hold-time {nb.hold_time};"]
    if nb.local_address:
        lines.append(f"    local-address {nb.local_address};")
    if nb.passive:
        lines.append("    passive true;")
    lines += [f"    family {{ {nb.family}; }}",
              "    api {",
              f"        processes [ {PROCESS} ];",
              "        neighbor-changes;",
              "        receive { parsed; update; notification; open; }",
              "        send { parsed; update; }",
              "    }",
              "}"]
    return lines


def environment(settings: BgpSettings) -> dict[str, str]:
    """ExaBGP's settings that are not in its config file (exabgp_<section>_<key>)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("exabgp")}
    env.update({
        "exabgp_daemon_user": pwd.getpwuid(os.getuid()).pw_name,
        "exabgp_daemon_drop": "false",
        "exabgp_daemon_daemonize": "false",
        "exabgp_api_cli": "false",
        "exabgp_api_ack": "true",
        "exabgp_api_respawn": "false",
        "exabgp_api_terminate": "true",
        "exabgp_log_destination": "stdout",
        "exabgp_log_statistics": "false",
        "exabgp_log_short": "false",
        "exabgp_tcp_bind": " ".join(nb.local_address for nb in settings.neighbors
                                    if nb.passive and nb.local_address),
    })
    return env


def exabgp_command(settings: BgpSettings, conf_path: str) -> list[str]:
    """The exabgp program: settings.exabgp if given, else the one installed beside this
    Python (the venv's)."""
    if settings.exabgp:
        return [*shlex.split(settings.exabgp), conf_path]
    return [os.path.join(os.path.dirname(sys.executable), "exabgp"), conf_path]
