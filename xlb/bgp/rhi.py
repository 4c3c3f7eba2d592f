"""Route health injection: which VIP prefixes this LB offers the routers, and why.

A pure rule, apart from ExaBGP and the agent, so it can be tested on its own and the
snapshot's reasons are the very words the decision was made with. A prefix is one VIP
address (/32 or /128) and carries every VIP (service) at that address: the routers route
addresses, not ports. It is announced iff no operator withdrew it, the LB is not in
maintenance, some VIP at the address is in the announce list and one of those has a
backend that would take a new flow here (configured active, weight > 0, not found down).
Otherwise routers would send this LB traffic it can only drop, while another LB could
serve it.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from xlb.addresses import parse_address
from xlb.api import protocol as P
from xlb.dataplane.config import Config, IPAddress, VipConfig


def prefix_of(address: IPAddress) -> str:
    """The host prefix of a VIP address: 198.19.0.10/32, fd00::10/128."""
    return f"{address}/{address.max_prefixlen}"


def stamp(t: float) -> str:
    """When, for a reason people read (UTC: every LB's log and reason agree)."""
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Mark:
    """Who withdrew something, and when (kept in bgp.json: it outlives the agent)."""

    user: str
    uid: int
    time: float

    def __str__(self) -> str:
        return f"{self.user} at {stamp(self.time)}"


@dataclass(frozen=True)
class Operator:
    """The operators' withdrawals: the whole LB (maintenance) and single prefixes."""

    maintenance: Mark | None = None
    withdrawn: Mapping[str, Mark] = field(default_factory=dict)  # prefix -> who


@dataclass(frozen=True)
class Route:
    """One prefix's decision."""

    prefix: str
    vips: tuple[str, ...]        # the names of the VIPs at the address, in config order
    announced: bool
    cause: P.BgpCause
    reason: str


def serving_backends(vip: VipConfig, down: Collection[str]) -> int:
    """Backends of `vip` a new flow may go to: configured active, weight > 0, healthy."""
    return sum(1 for b in vip.backends
               if b.state == "active" and b.weight > 0 and str(b.address) not in down)


def _health(vips: list[VipConfig], down: Collection[str]) -> tuple[bool, str]:
    counts = [(v.name, serving_backends(v, down), len(v.backends)) for v in vips]
    text = "; ".join(f"{name}: {n} of {total} backends healthy and undrained"
                     for name, n, total in counts)
    return any(n for _, n, _ in counts), text


def routes(cfg: Config, down: Collection[str], announce: Collection[str] | None,
           op: Operator) -> list[Route]:
    """Every VIP address of `cfg` as a prefix, in config order, with the decision. `down`:
    the backend addresses (canonical text) found down; `announce`: the VIP names that may
    be announced (None: all). The causes, first that applies: not_announced, maintenance,
    operator, no_backend; else serving."""
    by_prefix: dict[str, list[VipConfig]] = {}
    for v in cfg.vips:
        by_prefix.setdefault(prefix_of(v.address), []).append(v)
    out: list[Route] = []
    for prefix, vips in by_prefix.items():
        names = tuple(v.name for v in vips)
        listed = [v for v in vips if announce is None or v.name in announce]
        if not listed:
            out.append(Route(prefix, names, False, "not_announced",
                             f"not in bgp.announce: {', '.join(names)}"))
        elif op.maintenance is not None:
            out.append(Route(prefix, names, False, "maintenance",
                             f"withdrawn by {op.maintenance}: maintenance"))
        elif prefix in op.withdrawn:
            out.append(Route(prefix, names, False, "operator",
                             f"withdrawn by {op.withdrawn[prefix]}"))
        else:
            serving, text = _health(listed, down)
            out.append(Route(prefix, names, serving, "serving" if serving else "no_backend",
                             text))
    return out


def find_prefix(cfg: Config, vip: str) -> str | None:
    """The prefix of a VIP given by name or by address (any spelling), or None."""
    for v in cfg.vips:
        if v.name == vip:
            return prefix_of(v.address)
    text, slash, length = vip.partition("/")
    addr = parse_address(text)
    if addr is None or (slash and length != str(addr.max_prefixlen)):
        return None
    return prefix_of(addr) if any(v.address == addr for v in cfg.vips) else None
