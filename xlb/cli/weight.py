"""Set a backend's weight (0..65535); 0 takes no new flows, like a drain.

Weight 0 asks first, as a drain does (--yes for scripts); taking the last healthy
backend of a VIP to 0 is refused unless --force.

examples:
  xlb weight 198.18.2.11 5 --vip web
  xlb weight 198.18.2.11 0 --vip web --yes --force
"""

from __future__ import annotations

import argparse

from xlb.api.protocol import MAX_WEIGHT
from xlb.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_backend_change(p)
    p.add_argument("weight", type=int, help=f"0..{MAX_WEIGHT}")


def run(args: argparse.Namespace) -> int:
    if args.weight == 0 and not common.confirm_no_new_flows(args, "set weight 0 of"):
        return 1
    return common.backend_change(args, "weight", weight=args.weight, force=args.force)
