"""Drain a backend: no new flows to it; its established flows stay until they close.

Asks first (--yes for scripts). Draining the last healthy backend of a VIP is
refused unless --force.

examples:
  xlb drain 198.18.2.11 --vip web
  xlb drain 198.18.2.11 --yes --json
"""

from __future__ import annotations

import argparse

from xlb.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_backend_change(p)


def run(args: argparse.Namespace) -> int:
    where = f"VIP {args.vip}" if args.vip else "every VIP that has it"
    if not common.confirm(args, f"drain {args.address} in {where}",
                          lambda: "New connections avoid it; established ones stay."):
        return 1
    return common.backend_change(args, "drain", force=args.force)
