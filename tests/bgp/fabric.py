"""A tiny routed fabric for BGP tests: a router namespace running a real BIRD, and LB
namespaces each on its own veth link to it, both families. Names carry the test process's
PID and a counter, so parallel runs never meet; everything is removed on exit, pass or fail.

    with fabric(tmp_path, lbs=2) as f:
        f.lbs[0].ns, f.lbs[0].address, f.lbs[0].router ...   # where a speaker runs, whom it peers
        f.bird.wait(prefix, 2, 10)
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from xlb.bgp.settings import BgpSettings, Neighbor
from xlb.lab import netns
from xlb.lab.bird import Bird, Peer, config

ROUTER_ASN = 65000
LB_ASN = 65001
VIP = "198.19.240.10/32"          # prefixes the tests announce
VIP6 = "fd00:5f1b:19::10/128"
_count = itertools.count()


@dataclass(frozen=True)
class Lb:
    ns: str
    address: str                  # the LB's addresses on its link
    address6: str
    router: str                   # the router's addresses on that link (the LB's neighbors)
    router6: str

    def settings(self, local_asn: int = LB_ASN, peer_asn: int = ROUTER_ASN,
                 **kw: object) -> BgpSettings:
        nbs = (Neighbor(self.router, peer_asn), Neighbor(self.router6, peer_asn))
        return BgpSettings(local_asn, self.address, nbs, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Fabric:
    router_ns: str
    bird: Bird
    lbs: list[Lb]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def fabric(workdir: str, lbs: int = 1, lb_asn: int = LB_ASN, hold_time: int = 9
           ) -> Iterator[Fabric]:
    tag = f"xbgp{os.getpid()}x{next(_count)}"
    router = f"{tag}r"
    with ExitStack() as stack:
        stack.callback(netns.remove, router)
        netns.create(router)
        made: list[Lb] = []
        for i in range(1, lbs + 1):
            ns = f"{tag}l{i}"
            stack.callback(netns.remove, ns)
            netns.create(ns)
            netns.veth(router, f"r{i}", ns, "l0", queues=1)
            net, net6 = f"198.18.{240 + i}", f"fd00:5f1b:{240 + i}:"
            _ip("-n", router, "addr", "add", f"{net}.1/24", "dev", f"r{i}")
            _ip("-n", ns, "addr", "add", f"{net}.2/24", "dev", "l0")
            _ip("-n", router, "addr", "add", f"{net6}:1/64", "dev", f"r{i}", "nodad")
            _ip("-n", ns, "addr", "add", f"{net6}:2/64", "dev", "l0", "nodad")
            made.append(Lb(ns, f"{net}.2", f"{net6}:2", f"{net}.1", f"{net6}:1"))
        bird = Bird(router, os.path.join(workdir, "bird"))
        peers = [p for i, lb in enumerate(made, 1)
                 for p in (Peer(f"lb{i}_v4", lb.address, lb.router, lb_asn),
                           Peer(f"lb{i}_v6", lb.address6, lb.router6, lb_asn))]
        stack.callback(bird.stop)
        bird.start(config(ROUTER_ASN, "198.18.240.1", peers, hold_time=hold_time))
        yield Fabric(router, bird, made)
