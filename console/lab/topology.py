"""The lab: client, router, load balancer and backends as network namespaces.

    xlb-client  c0 198.18.0.2/24 (+ .10-.41) ── r-c    198.18.0.1/24 ┐
                                                                     │ xlb-router
    xlb-lb1     l0 198.18.1.2/24, 4 RX queues ─ r-lb1  198.18.1.1/24 │ (forwards,
    xlb-be1..3  b0 198.18.2.1x/24, VIP on lo ── r-be*  in br0 198.18.2.1/24 ┘ routes the VIP)

The router sends VIP traffic to lb1; lb1's XDP program encapsulates it to
a backend and bounces it back to the router (XDP_TX), which delivers it to
the backend; the backend's XDP program strips the outer header, its server
answers from the VIP on lo, and the reply goes straight to the client via
the router (DSR: replies never pass the load balancer). A second LB (lb2,
BGP issue) is one more `_lb()` and a second next hop for the VIP.

Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking), so lab traffic
can never be mistaken for anyone's real network. All names start with
"xlb-", and `down()` removes exactly what `up()` made.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from pyroute2 import NetNS, netns

from console.lab import netns as lab_ns

PREFIX = "xlb-"
CLIENT, ROUTER = f"{PREFIX}client", f"{PREFIX}router"
VIP = "198.19.0.10"
CLIENT_ADDRS = [f"198.18.0.{i}" for i in range(10, 42)]
LINK_MTU = 1600  # room for the outer header on LB and backend links


@dataclass(frozen=True)
class Backend:
    name: str   # namespace
    address: str


@dataclass(frozen=True)
class Lab:
    lbs: tuple[str, ...] = ("lb1",)
    backends: tuple[Backend, ...] = field(default_factory=lambda: tuple(
        Backend(f"{PREFIX}be{i}", f"198.18.2.{10 + i}") for i in (1, 2, 3)))

    def lb_ns(self, lb: str) -> str:
        return f"{PREFIX}{lb}"

    def namespaces(self) -> list[str]:
        return [CLIENT, ROUTER, *(self.lb_ns(lb) for lb in self.lbs),
                *(b.name for b in self.backends)]


def sh(ns: str, *cmd: str) -> str:
    """Run a command inside a lab namespace (sysctl, ethtool, tc)."""
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True,
                          text=True).stdout


def _addr(ns: str, ifname: str, cidr: str) -> None:
    addr, _, plen = cidr.partition("/")
    with NetNS(ns) as n:
        n.addr("add", index=n.link_lookup(ifname=ifname)[0], address=addr,
               prefixlen=int(plen or 32))


def _route(ns: str, dst: str, gateway: str) -> None:
    with NetNS(ns) as n:
        n.route("add", dst=dst, gateway=gateway)


def _sysctls(ns: str, **values: str) -> None:
    for key, value in values.items():
        sh(ns, "sysctl", "-qw", f"{key.replace('__', '.')}={value}")


def up(lab: Lab | None = None) -> Lab:
    """Build every namespace and link (tearing down a previous lab first)."""
    lab = lab or Lab()
    down(lab)
    for ns in lab.namespaces():
        lab_ns.create(ns)
    _sysctls(ROUTER, net__ipv4__ip_forward="1", net__ipv4__conf__all__rp_filter="0",
             net__ipv4__conf__default__rp_filter="0")
    # client side
    lab_ns.veth(CLIENT, "c0", ROUTER, "r-c", queues=1)
    _addr(CLIENT, "c0", "198.18.0.2/24")
    for a in CLIENT_ADDRS:
        _addr(CLIENT, "c0", f"{a}/32")
    _addr(ROUTER, "r-c", "198.18.0.1/24")
    _route(CLIENT, "default", "198.18.0.1")
    # XDP_TX keeps no checksum-offload state: let the client compute checksums
    sh(CLIENT, "ethtool", "-K", "c0", "tx", "off")
    # load balancers
    for i, lb in enumerate(lab.lbs, start=1):
        ns = lab.lb_ns(lb)
        lab_ns.veth(ns, "l0", ROUTER, f"r-{lb}", queues=4, mtu=LINK_MTU)
        _addr(ns, "l0", f"198.18.{i}.2/24")
        _addr(ROUTER, f"r-{lb}", f"198.18.{i}.1/24")
        _route(ns, "default", f"198.18.{i}.1")
    _route(ROUTER, f"{VIP}/32", "198.18.1.2")
    # backends behind a bridge in the router
    with NetNS(ROUTER) as r:
        r.link("add", ifname="br0", kind="bridge")
        r.link("set", index=r.link_lookup(ifname="br0")[0], state="up", mtu=LINK_MTU)
    _addr(ROUTER, "br0", "198.18.2.1/24")
    for i, be in enumerate(lab.backends, start=1):
        lab_ns.veth(be.name, "b0", ROUTER, f"r-be{i}", queues=1, mtu=LINK_MTU)
        with NetNS(ROUTER) as r:
            r.link("set", index=r.link_lookup(ifname=f"r-be{i}")[0],
                   master=r.link_lookup(ifname="br0")[0])
        _addr(be.name, "b0", f"{be.address}/24")
        _addr(be.name, "lo", f"{VIP}/32")
        _route(be.name, "default", "198.18.2.1")
        _sysctls(be.name, net__ipv4__conf__all__rp_filter="0",
                 net__ipv4__conf__b0__rp_filter="0")
    return lab


def down(lab: Lab | None = None) -> list[str]:
    """Remove every lab namespace (their links and processes' sockets go with them)."""
    lab = lab or Lab()
    present = set(netns.listnetns())
    gone = []
    for ns in lab.namespaces():
        if ns in present:
            lab_ns.remove(ns)
            gone.append(ns)
    return gone
