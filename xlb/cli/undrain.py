"""Undrain a backend: it takes new flows again, at its weight.

examples:
  xlb undrain 198.18.2.11 --vip web
"""

from __future__ import annotations

import argparse

from xlb.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_backend_change(p, guarded=False)  # it only adds flows: nothing to guard


def run(args: argparse.Namespace) -> int:
    return common.backend_change(args, "undrain")
