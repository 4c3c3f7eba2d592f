"""VIPs with their rates and health (from the agent).

examples:
  xlb vips
  xlb vips --socket /run/xlb/lb2.sock --json
"""

from __future__ import annotations

import argparse

from xlb.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    with common.client(args) as c:
        doc = c.call("vips")
    common.output(doc, args, lambda vs: "\n".join(
        f"{v['name']:<16} {v['vip']:<28} {v['pps']:8.0f} pps  {v['healthy']}/{v['total']} healthy"
        + ("  PANIC: all serving backends take flows" if v["panic"] else "")
        for v in vs) or "no VIPs")
    return 0
