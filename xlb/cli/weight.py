"""Set a backend's weight (0..65535); 0 takes no new flows, like a drain.

examples:
  xlb weight 198.18.2.11 5 --vip web
  xlb weight 198.18.2.11 0 --vip web --force
"""

from __future__ import annotations

import argparse

from xlb.api.protocol import MAX_WEIGHT
from xlb.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_backend_change(p)
    p.add_argument("weight", type=int, help=f"0..{MAX_WEIGHT}")


def run(args: argparse.Namespace) -> int:
    return common.backend_change(args, "weight", weight=args.weight, force=args.force)
