"""The checked [bgp] table: who we are, whom we peer with, what we announce.

    [bgp]
    local_asn = 65001
    router_id = "198.18.1.2"
    announce = ["web", "dns"]        # VIP names (default: every VIP)
    [[bgp.neighbor]]
    address = "198.18.1.1"
    asn = 65000
    hold_time = 9

Every prefix goes to the neighbors of its family (an IPv4 VIP to IPv4 neighbors) with
next hop "self" unless next_hop / next_hop6 say otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Neighbor:
    address: str                 # canonical
    asn: int
    hold_time: int = 9           # seconds (0, or 3..65535)
    local_address: str = ""      # "" = the address the kernel picks towards the neighbor
    passive: bool = False        # wait for the neighbor to connect

    @property
    def family(self) -> str:
        return "ipv6 unicast" if ":" in self.address else "ipv4 unicast"


@dataclass(frozen=True)
class BgpSettings:
    local_asn: int
    router_id: str
    neighbors: tuple[Neighbor, ...]
    announce: tuple[str, ...] | None = None  # VIP names; None = every VIP
    next_hop: str = "self"       # for IPv4 prefixes: "self" or an address
    next_hop6: str = "self"      # for IPv6 prefixes
    exabgp: str = ""             # the exabgp command ("" = the one installed with xlb)
