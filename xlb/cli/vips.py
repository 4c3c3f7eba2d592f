"""VIPs with their forwarding mode, rates and health (from the agent).

examples:
  xlb vips
  xlb vips --socket /run/xlb/lb2.sock --json
"""

from __future__ import annotations

import argparse

from xlb.api.protocol import VipSummary
from xlb.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    with common.client(args) as c:
        doc = c.call("vips")
    common.output(doc, args, text)
    return 0


def text(vips: list[VipSummary]) -> str:
    return "\n".join(
        f"{v['name']:<16} {v['vip']:<28} {v['mode']:<5} {v['pps']:8.0f} pps  "
        f"{v['healthy']}/{v['total']} healthy"
        + ("  PANIC: all serving backends take flows" if v["panic"] else "")
        for v in vips) or "no VIPs"
