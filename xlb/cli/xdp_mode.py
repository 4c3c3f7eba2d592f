"""Show or switch the XDP mode: native (in the driver) or generic (in the kernel's
network stack, slower, works on any device).

Without a mode: the mode in effect and whether the driver can run native XDP. With
one: the same program is detached and attached again in that mode; every map stays,
so connections and counters survive. Packets arriving in the gap (measured and
printed, about a millisecond) meet no XDP program and go to the kernel's own path.
Native is refused, before anything is detached, where the driver has none. The choice
is kept when the agent restarts. Asks first on a terminal (--yes for scripts);
operators only, audited.

examples:
  xlb xdp-mode
  xlb xdp-mode generic
  xlb xdp-mode native --yes --json
"""

from __future__ import annotations

import argparse
from typing import Any, get_args

from xlb.api.protocol import XdpMode
from xlb.cli import common, completion

XDP_MODES = get_args(XdpMode)


def add_arguments(p: argparse.ArgumentParser) -> None:
    completion.attach(p.add_argument("mode", nargs="?", choices=XDP_MODES,
                                     help="native | generic (none: show the mode in effect)"),
                      completion.xdp_modes)
    common.add_yes(p)
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    with common.client(args) as c:
        st = c.call("status")
        if args.mode is None:
            doc = {"interface": st["interface"], "xdp_mode": st["xdp_mode"],
                   "xdp_native": st["xdp_native"]}
            common.output(doc, args, shown)
            return 0
        if args.mode != st["xdp_mode"] and not common.confirm(
                args, f"switch XDP on {st['interface']} from {st['xdp_mode']} to {args.mode}",
                lambda: "The program is re-attached: packets in the gap (tens of ms on a veth) "
                        "go to the kernel's own path; connections survive."):
            return 1
        doc = c.call("xdp_mode", mode=args.mode)
    common.output(doc, args, switched)
    return 0


def shown(doc: dict[str, Any]) -> str:
    native = {True: "the driver can run native XDP",
              False: "the driver has no native XDP (generic only)",
              None: "the kernel does not say whether the driver can run native XDP"}
    return f"XDP on {doc['interface']}: {doc['xdp_mode']} ({native[doc['xdp_native']]})"


def switched(doc: dict[str, Any]) -> str:
    if doc["before"] == doc["after"]:
        return f"XDP on {doc['interface']}: {doc['after']} already; nothing changed"
    return (f"XDP on {doc['interface']}: {doc['before']} → {doc['after']}; "
            f"{doc['gap_seconds'] * 1000:.1f} ms without a program (packets in it went to "
            "the kernel's own path); connections and counters kept")
