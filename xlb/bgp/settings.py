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

The keys are declared once in xlb/schema.py (`BGP`, `BGP_NEIGHBOR`) and read by the one
Checker, so a bad value is named like any other (`bgp.neighbor[1].asn: ...`); this module
adds the rules across keys and tables (duplicate neighbors, the announce list against the
VIPs, a local address of the neighbor's family).
"""

from __future__ import annotations

from dataclasses import dataclass

from xlb.dataplane.config import Config
from xlb.schema import BAD, BGP, BGP_NEIGHBOR, Checker, ok


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


def _neighbor(ck: Checker, raw: object, loc: str) -> Neighbor | None:
    tbl = ck.table(raw, loc, BGP_NEIGHBOR.keys)
    if tbl is None:
        return None
    values = ck.read(tbl, loc, BGP_NEIGHBOR)
    if not ok(values):
        return None
    local = values["local_address"]
    if local and (":" in local) != (":" in values["address"]):
        ck.err(f"{loc}.local_address", f"{local} is not of the family of the neighbor's "
               f"address {values['address']}")
        return None
    return Neighbor(**values)


def check_bgp(ck: Checker, raw: object, cfg: Config | None) -> BgpSettings | None:
    """Record the [bgp] table's problems in `ck`; the settings if it has none. `cfg` (the
    checked instance config, None if it has problems of its own) is what the announce
    list is held to."""
    before = len(ck.errors)
    tbl = ck.table(raw, "bgp", BGP.keys)
    if tbl is None:
        return None
    values = ck.read(tbl, "bgp", BGP)
    raw_neighbors: list | tuple = ()
    if "neighbor" not in tbl:
        ck.err("bgp.neighbor", "missing: give at least one [[bgp.neighbor]] (the routers to "
               "announce the VIPs to)")
    else:
        raw_neighbors = ck.array(tbl["neighbor"], "bgp.neighbor", "bgp.neighbor")
        if isinstance(tbl["neighbor"], list | tuple) and not raw_neighbors:
            ck.err("bgp.neighbor", "is empty: give at least one [[bgp.neighbor]]")
    neighbors: list[Neighbor] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw_neighbors):
        n = _neighbor(ck, item, f"bgp.neighbor[{i}]")
        if n is None:
            continue
        if n.address in seen:
            ck.err(f"bgp.neighbor[{i}].address", f"{n.address} is already "
                   f"bgp.neighbor[{seen[n.address]}]")
            continue
        seen[n.address] = i
        neighbors.append(n)
    announce = values["announce"]
    if cfg is not None and announce not in (None, BAD):
        names = {v.name for v in cfg.vips}
        unknown = [a for a in announce if a not in names]
        if unknown:
            ck.err("bgp.announce", f"no VIP is named {', '.join(map(repr, unknown))} "
                   f"(VIPs: {', '.join(sorted(names)) or 'none'})")
    if len(ck.errors) > before:
        return None
    return BgpSettings(values["local_asn"], values["router_id"], tuple(neighbors), announce,
                       values["next_hop"], values["next_hop6"], values["exabgp"])
