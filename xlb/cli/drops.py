"""Every verdict reason of the data plane: rate and total (the console's Drops view).

examples:
  xlb drops
  xlb drops --json
"""

from __future__ import annotations

import argparse

from xlb.api.protocol import REASONS, reason_kind, reason_order
from xlb.cli import common
from xlb.units import human


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    with common.client(args) as c:
        st = c.call("status")
    doc = [{"reason": r, "kind": reason_kind(r), "per_s": st["reasons"].get(r, 0.0),
            "total": st["reason_totals"].get(r, 0), "meaning": REASONS[r]}
           for r in sorted(REASONS, key=reason_order)]
    doc.sort(key=lambda d: (reason_order(d["reason"])[0], -d["per_s"], -d["total"]))
    common.output(doc, args, lambda ds: "\n".join(
        f"{d['reason']:<22} {d['kind']:<5} {human(d['per_s']):>7}/s  {human(d['total']):>7} total"
        for d in ds) or "no verdicts yet")
    return 0
