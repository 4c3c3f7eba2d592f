"""Recent changes from the agent's audit log: who, when, what, before and after; and
refused attempts (who tried what).

examples:
  xlb audit -n 50
  xlb audit --json
"""

from __future__ import annotations

import argparse
import time

from xlb.api.protocol import MAX_AUDIT, AuditEntry, entry_text
from xlb.cli import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", type=int, default=20,
                   help=f"how many records, newest last (default 20, at most {MAX_AUDIT})")
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    with common.client(args) as c:
        doc = c.call("audit", n=args.n)
    common.output(doc, args, lambda es: "\n".join(line(e) for e in es) or "no changes recorded")
    return 0


def line(e: AuditEntry) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
    subject = e["params"].get("name") or e["params"].get("address")
    return f"{when} {e['user']} (uid {e['uid']}) {e['action']} {subject}: " + entry_text(e)
