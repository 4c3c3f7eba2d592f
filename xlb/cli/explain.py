"""Explain one flow: which backend the data plane sends it to, and why.

Read from the data plane's maps by the agent; no packet is sent and nothing changes.
Each step is one line: is the destination a VIP address, which service (its port, or the
any-port VIP), the connection entry (its backend and age), else the flow hash, the Maglev
slot and the backend in it, the backend's state, the encapsulation and outer source, and
the verdict with its reason (as `xlb drops` counts it). Without the client's port: the
share of client ports each backend gets. IPv6 addresses with a port go in brackets.

examples:
  xlb explain 198.18.0.23:41002 198.19.0.10:80
  xlb explain 198.18.0.23:41002 198.19.0.10:80 --syn
  xlb explain 198.18.0.23 198.19.0.10:53 udp
  xlb explain [fd00:5f1b:18::23]:41002 [fd00:5f1b:19::10]:80 tcp --json
"""

from __future__ import annotations

import argparse
from typing import Any

from xlb.addresses import parse_address
from xlb.api.protocol import Explain
from xlb.cli import common


def endpoint(text: str, port_required: bool) -> tuple[str, int | None]:
    """ADDRESS, ADDRESS:PORT or [IPv6]:PORT (a bare IPv6 address has no port) as the
    canonical address and the port (None when absent)."""
    host, port = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise argparse.ArgumentTypeError(f"{text!r}: expected [IPv6]:PORT")
        port = rest[1:] if rest else None
    elif parse_address(text) is None and ":" in text:
        host, _, port = text.rpartition(":")
    addr = parse_address(host)
    if addr is None:
        raise argparse.ArgumentTypeError(f"{host[:45]!r} is not an IP address")
    if port is None:
        if port_required:
            hint = f"[{addr}]:PORT" if addr.version == 6 else f"{addr}:PORT"
            raise argparse.ArgumentTypeError(f"{text!r}: the destination needs its port: "
                                             f"{hint}")
        return str(addr), None
    if not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{port[:20]!r} in {text[:60]!r} is not a port "
                                         "(0..65535)")
    return str(addr), int(port)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC[:SPORT]", type=lambda t: endpoint(t, False),
                   help="the client (without its port: the share each backend gets)")
    p.add_argument("dst", metavar="DST:DPORT", type=lambda t: endpoint(t, True),
                   help="the destination: a VIP address and port")
    p.add_argument("protocol", nargs="?", default="tcp", choices=("tcp", "udp"),
                   metavar="tcp|udp",
                   help="tcp (default) or udp")
    p.add_argument("--syn", action="store_true",
                   help="the packet is a TCP SYN (a SYN always asks Maglev)")
    p.add_argument("--length", type=int, metavar="BYTES",
                   help="the IP packet's length, for the mtu check (default: headers only)")
    common.add_client(p)


def run(args: argparse.Namespace) -> int:
    (src, sport), (dst, dport) = args.src, args.dst
    with common.client(args) as c:
        doc = c.call("explain", src=src, sport=sport, dst=dst, dport=dport,
                     protocol=args.protocol, syn=args.syn, length=args.length)
    common.output(doc, args, text)
    return 0


def text(e: Explain | dict[str, Any]) -> str:
    """The flow, then one step per line."""
    return "\n".join([e["flow"], *(f"  {s['step']:<11} {s['text']}" for s in e["steps"])])
