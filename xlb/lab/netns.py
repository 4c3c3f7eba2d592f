"""Network namespaces and veth links built with pyroute2, torn down by name.

Namespaces and links get exactly the names the caller gives (the lab's all
start with `xlb-`, the tests' with their own prefix and PID), so whoever made
them removes them by those names; frames sent here only move between
namespaces the caller made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import NetNS, netns

from xlb.lab import interrupt


@contextmanager
def session(name: str) -> Iterator[Any]:
    """pyroute2 (NetNS) in namespace `name`, as one step that a Ctrl-C during the lab's
    build does not cut in half: pyroute2 runs each call in an asyncio loop of its own, and
    a signal raised inside it leaves a task there that is reported as a traceback when
    garbage-collected (see xlb.lab.interrupt). A few milliseconds; the signal comes after."""
    with interrupt.held(), NetNS(name) as ns:
        yield ns


def create(name: str) -> None:
    with interrupt.held():  # pyroute2's forked helper makes it: never after the cleanup looked
        if name not in netns.listnetns():
            netns.create(name)
    with session(name) as ns:
        lo = ns.link_lookup(ifname="lo")
        ns.link("set", index=lo[0], state="up")


def remove(name: str) -> None:
    if name in netns.listnetns():
        netns.remove(name)


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str, queues: int = 4, mtu: int = 1500) -> None:
    """A multi-queue veth pair between two namespaces (or within one), both up."""
    subprocess.run(
        ["ip", "link", "add", if_a, "netns", ns_a, "numtxqueues", str(queues), "numrxqueues",
         str(queues), "mtu", str(mtu), "type", "veth", "peer", "name", if_b, "netns", ns_b,
         "numtxqueues", str(queues), "numrxqueues", str(queues), "mtu", str(mtu)],
        check=True, capture_output=True, text=True)
    for ns, ifname in ((ns_a, if_a), (ns_b, if_b)):
        with session(ns) as n:
            n.link("set", index=n.link_lookup(ifname=ifname)[0], state="up")


def mac(ns: str, ifname: str) -> str:
    with session(ns) as n:
        link = n.get_links(n.link_lookup(ifname=ifname)[0])[0]
        return str(link.get_attr("IFLA_ADDRESS"))


_SENDER = """
import socket, sys, time
ifname, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
frames = [bytes.fromhex(h) for h in sys.stdin.read().split()]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
gap = 1.0 / rate if rate > 0 else 0.0
deadline = time.monotonic()
for i in range(count if count > 0 else 1 << 62):
    s.send(frames[i % len(frames)])
    if gap:
        deadline += gap
        pause = deadline - time.monotonic()
        if pause > 0:
            time.sleep(pause)
"""


def send_frames(ns: str, ifname: str, frames: list[bytes], count: int,
                rate: float = 0.0) -> subprocess.Popen[bytes]:
    """Send raw Ethernet frames out of `ifname` inside namespace `ns` (a child process).

    count <= 0 sends until the process is terminated; rate 0 is as fast as it goes.
    """
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _SENDER, ifname, str(count), str(rate)],
        stdin=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdin is not None
    proc.stdin.write(" ".join(f.hex() for f in frames).encode())
    proc.stdin.close()
    return proc
