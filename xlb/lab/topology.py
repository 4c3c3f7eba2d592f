"""The lab: client, router, load balancer and backends as network namespaces.

    xlb-client  c0 198.18.0.2/24 (+ .10-.41) ── r-c    198.18.0.1/24 ┐
                                                                     │ xlb-router
    xlb-lb1     l0 198.18.1.2/24, 4 RX queues ─ r-lb1  198.18.1.1/24 │ (forwards; BIRD:
    xlb-lb2     l0 198.18.3.2/24, 4 RX queues ─ r-lb2  198.18.3.1/24 │  BGP, ECMP route
    xlb-be1..3  b0 198.18.2.1x/24, VIP on lo ── r-be*  in br0 198.18.2.1/24 ┘  to the VIPs)

The lab is dual-stack: every link also has IPv6 from fd00:5f1b:18::/48 with
the same plan (client fd00:5f1b:18::2/64 and ::10-::41, lb1 fd00:5f1b:18:1::2/64,
lb2 fd00:5f1b:18:3::2/64, backends fd00:5f1b:18:2::1x/64, the router ::1 on each),
and the v6 VIP fd00:5f1b:19::10 goes the same way as the v4 one. Duplicate address
detection is off in every lab namespace, so v6 addresses work at once.

The router has no static route to the VIPs: each LB's agent announces them by BGP
(ExaBGP) to BIRD in the router (xlb/lab/fabric.py), which installs one ECMP route per
VIP with every announcing LB as a next hop, hashed on the 5-tuple
(fib_multipath_hash_policy=1), so a flow stays on one LB. That LB's XDP program
encapsulates it to a backend and bounces it back to the router (XDP_TX), which
delivers it to the backend; the backend's XDP program strips the outer header, its
server answers from the VIP on lo, and the reply goes straight to the client via
the router (DSR: replies never pass the load balancer).

Each LB has SNAT pools of its own (for VIPs in SNAT mode: the backends see an address of
the pool and answer it): lb1 198.19.1.0/28 and fd00:5f1b:19:1::/124, lb2 198.19.3.0/28 and
fd00:5f1b:19:3::/124. The router has a static route for each pool via that LB's link
address, so a backend's reply to a SNAT address goes back to the LB that translated it.

Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking) and the ULA
prefix fd00:5f1b:18::/48 (lb1's outer IPv6 sources: fd00:5f1b:18:f1::/64),
so lab traffic can never be mistaken for anyone's real network. All names
start with "xlb-", and `down()` removes exactly what `up()` made.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
from dataclasses import dataclass, field

from pyroute2 import netns

from xlb.lab import netns as lab_ns

PREFIX = "xlb-"
CLIENT, ROUTER = f"{PREFIX}client", f"{PREFIX}router"
VIP = "198.19.0.10"
CLIENT_ADDRS = [f"198.18.0.{i}" for i in range(10, 42)]
NET6 = "fd00:5f1b:18"  # the lab's /48: subnet 0 client, 1.. LBs, 2 backends
VIP6 = "fd00:5f1b:19::10"
CLIENT_ADDRS6 = [f"{NET6}::{i}" for i in range(10, 42)]
# the lab's VIPs: name -> (address, port, protocol); all dsr until switched (`xlb mode`)
VIPS = {"web": (VIP, 80, "tcp"), "dns": (VIP, 53, "udp"),
        "web6": (VIP6, 80, "tcp"), "dns6": (VIP6, 53, "udp")}
LINK_MTU = 1600  # room for the outer header (IPv6: 40 bytes) on LB and backend links


@dataclass(frozen=True)
class Backend:
    name: str   # namespace
    address: str
    address6: str


@dataclass(frozen=True)
class Lab:
    lbs: tuple[str, ...] = ("lb1", "lb2")
    backends: tuple[Backend, ...] = field(default_factory=lambda: tuple(
        Backend(f"{PREFIX}be{i}", f"198.18.2.{10 + i}", f"{NET6}:2::1{i}") for i in (1, 2, 3)))

    def lb_ns(self, lb: str) -> str:
        return f"{PREFIX}{lb}"

    def lb_net(self, lb: str) -> int:
        """The third octet (v4) / subnet (v6) of lb's link: lb1 1, lb2 3 (2: the backends)."""
        i = self.lbs.index(lb) + 1
        return i if i < 2 else i + 1

    def lb_address(self, lb: str, v6: bool = False) -> str:
        """lb's own address on its link to the router (its BGP session's source)."""
        n = self.lb_net(lb)
        return f"{NET6}:{n}::2" if v6 else f"198.18.{n}.2"

    def router_address(self, lb: str, v6: bool = False) -> str:
        """The router's address on lb's link (lb's BGP neighbor and default gateway)."""
        n = self.lb_net(lb)
        return f"{NET6}:{n}::1" if v6 else f"198.18.{n}.1"

    def snat_pool(self, lb: str, v6: bool = False) -> str:
        """lb's SNAT pool (CIDR): the addresses its SNAT flows leave from, routed to it."""
        n = self.lb_net(lb)
        return f"fd00:5f1b:19:{n}::/124" if v6 else f"198.19.{n}.0/28"

    def snat_owner(self, address: str) -> tuple[str, str] | None:
        """(lb, "snat") when `address` is in an LB's SNAT pool, else None: who asked a
        backend, read from the backend side (its X-Client header, its echo's body)."""
        addr = ipaddress.ip_address(address)
        for lb in self.lbs:
            if addr in ipaddress.ip_network(self.snat_pool(lb, addr.version == 6)):
                return lb, "snat"
        return None

    def namespaces(self) -> list[str]:
        return [CLIENT, ROUTER, *(self.lb_ns(lb) for lb in self.lbs),
                *(b.name for b in self.backends)]


def sh(ns: str, *cmd: str) -> str:
    """Run a command inside a lab namespace (sysctl, ethtool, tc)."""
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True,
                          text=True).stdout


def _config(ns: str, addrs: dict[str, list[str]],
            routes: tuple[tuple[str, str], ...] = ()) -> None:
    """Addresses ({ifname: [cidr]}, no prefix length = a host address) and routes
    ((dst, gateway), IPv4 or IPv6) in one netlink session per namespace."""
    with lab_ns.session(ns) as n:
        for ifname, cidrs in addrs.items():
            index = n.link_lookup(ifname=ifname)[0]
            for cidr in cidrs:
                addr, _, plen = cidr.partition("/")
                n.addr("add", index=index, address=addr,
                       prefixlen=int(plen or (128 if ":" in addr else 32)))
        for dst, gateway in routes:
            n.route("add", dst=dst, gateway=gateway,
                    family=socket.AF_INET6 if ":" in gateway else socket.AF_INET)


def _sysctls(ns: str, **values: str) -> None:
    sh(ns, "sysctl", "-qw", *(f"{key.replace('__', '.')}={value}"
                              for key, value in values.items()))


# every lab namespace: IPv6 addresses usable at once (no duplicate address detection:
# nobody else is on these links), no IPv4 reverse-path filter (DSR replies and the LB's
# encapsulated packets come from addresses that are not on the arrival link)
_NS_SYSCTLS = {"net__ipv6__conf__all__accept_dad": "0",
               "net__ipv6__conf__default__accept_dad": "0",
               "net__ipv4__conf__all__rp_filter": "0",
               "net__ipv4__conf__default__rp_filter": "0"}


# the router forwards, and spreads the VIPs' ECMP routes by the 5-tuple (policy 1: L4):
# the default (L3) would send every flow of a client address to the same LB
_ROUTER_SYSCTLS = {"net__ipv4__ip_forward": "1", "net__ipv6__conf__all__forwarding": "1",
                   "net__ipv4__fib_multipath_hash_policy": "1",
                   "net__ipv6__fib_multipath_hash_policy": "1"}


def up(lab: Lab | None = None) -> Lab:
    """Build every namespace and link (tearing down a previous lab first)."""
    lab = lab or Lab()
    down(lab)
    for ns in lab.namespaces():
        lab_ns.create(ns)
        # before any link exists: links take the namespace's defaults when made
        extra = _ROUTER_SYSCTLS if ns == ROUTER else {}
        _sysctls(ns, **_NS_SYSCTLS, **extra)
    # client side
    lab_ns.veth(CLIENT, "c0", ROUTER, "r-c", queues=1)
    _config(CLIENT, {"c0": ["198.18.0.2/24", *CLIENT_ADDRS, f"{NET6}::2/64", *CLIENT_ADDRS6]},
            routes=(("default", "198.18.0.1"), ("default", f"{NET6}::1")))
    router_addrs = {"r-c": ["198.18.0.1/24", f"{NET6}::1/64"]}
    # XDP_TX keeps no checksum-offload state: let the client compute checksums
    sh(CLIENT, "ethtool", "-K", "c0", "tx", "off")
    # load balancers
    for lb in lab.lbs:
        ns = lab.lb_ns(lb)
        lab_ns.veth(ns, "l0", ROUTER, f"r-{lb}", queues=4, mtu=LINK_MTU)
        _config(ns, {"l0": [f"{lab.lb_address(lb)}/24", f"{lab.lb_address(lb, True)}/64"]},
                routes=(("default", lab.router_address(lb)),
                        ("default", lab.router_address(lb, True))))
        router_addrs[f"r-{lb}"] = [f"{lab.router_address(lb)}/24",
                                   f"{lab.router_address(lb, True)}/64"]
    # backends behind a bridge in the router
    with lab_ns.session(ROUTER) as r:
        r.link("add", ifname="br0", kind="bridge")
        r.link("set", index=r.link_lookup(ifname="br0")[0], state="up", mtu=LINK_MTU)
    router_addrs["br0"] = ["198.18.2.1/24", f"{NET6}:2::1/64"]
    # no route to the VIPs (BGP brings them); each LB's SNAT pools via that LB
    _config(ROUTER, router_addrs, routes=tuple(
        (lab.snat_pool(lb, v6), lab.lb_address(lb, v6)) for lb in lab.lbs for v6 in (False, True)))
    for i, be in enumerate(lab.backends, start=1):
        lab_ns.veth(be.name, "b0", ROUTER, f"r-be{i}", queues=1, mtu=LINK_MTU)
        with lab_ns.session(ROUTER) as r:
            r.link("set", index=r.link_lookup(ifname=f"r-be{i}")[0],
                   master=r.link_lookup(ifname="br0")[0])
        _config(be.name, {"b0": [f"{be.address}/24", f"{be.address6}/64"], "lo": [VIP, VIP6]},
                routes=(("default", "198.18.2.1"), ("default", f"{NET6}:2::1")))
        # SNAT replies cross an LB's XDP_TX, which keeps no checksum-offload state (as the
        # client's packets do): the backend computes its checksums itself
        sh(be.name, "ethtool", "-K", "b0", "tx", "off")
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
