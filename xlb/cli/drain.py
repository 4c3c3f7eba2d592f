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
    if not common.confirm_no_new_flows(args, "drain"):
        return 1
    return common.backend_change(args, "drain", force=args.force)
