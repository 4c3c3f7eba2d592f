"""Every loaded instance: attach state, totals and rates, from the pinned maps.

Reads bpffs and netlink directly, so it answers even when no agent runs.

examples:
  xlb status
  xlb status --instance lb1 --sample 2 --json
"""

from __future__ import annotations

import argparse

from xlb.cli import common
from xlb.cli.dataplane import describe_text, instances


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_instance(p, "only this instance (default: every loaded one)")
    p.add_argument("--sample", type=float, default=0.5, help="seconds to sample rates over")
    common.add_json(p)


def run(args: argparse.Namespace) -> int:
    from xlb.dataplane.lifecycle import describe

    docs = [describe(n, sample=args.sample) for n in instances(args.instance)]
    summary = [{"instance": d["instance"], "attach": d["attach"], "totals": d["totals"],
                "queues": d["queues"], "misses": d["misses"],
                "vips": [{k: v[k] for k in ("name", "vip", "mode", "packets")}
                         for v in d["vips"]]}
               for d in docs]
    common.output({"instances": summary}, args, lambda _s: "\n".join(
        describe_text(d) for d in docs) or "no data plane instance is loaded")
    return 0
