"""What the agent applies: the operator's intent, with the health verdicts taken into
account and the fail-open (panic) rule.

A backend found down leaves its VIPs' Maglev rings (no new flows). What happens to its
established flows depends on the transport:

* UDP has no reset and clients keep their ports, so a UDP flow left on a dead backend
  is blackholed for as long as the client keeps talking: UDP flows always move.
* TCP follows `health_down_flows`. "move" (the default): the next packet of a flow goes
  to a live backend, which answers with a reset, so the client reconnects at once
  instead of hanging until its own timeout. "stay": the flows stay on the backend (a
  check that fails while the service still works breaks nothing).

Flows move only once the backend has been down for a whole tick, and not in the tick a
VIP leaves panic, so a health-check path that breaks (or heals) for every backend over a
few ticks meets the panic rule before anything has moved.

Panic: a VIP whose healthy backends fall below `health_panic_threshold` percent of its
serving ones (active, weight > 0) fails open: all its serving backends take new flows
again, as if every check passed, because a broken check path (a blackhole route on
the load balancer) is more likely than all backends dying together, and serving with
some dead backends beats serving nothing. Envoy does the same below 50 % healthy; AWS
network load balancers fail open when every target is unhealthy; HAProxy does not fail
open (all servers down: 503, or its backup servers). The default, 25 %, sits between
Envoy and AWS: a VIP of up to three backends panics only when all are down.
"""

from __future__ import annotations

import functools
from collections.abc import Container, Mapping
from dataclasses import dataclass, field, replace

from xlb.dataplane.config import BackendConfig, Config, IPAddress, VipConfig


@dataclass(frozen=True)
class Rules:
    """The [agent] settings that decide what a down verdict does."""

    tcp_flows: str = "move"     # health_down_flows: move | stay
    panic_threshold: int = 25   # percent; 0 = never fail open


@dataclass
class Applied:
    config: Config                                # what the data plane gets
    panic: dict[str, tuple[int, int]] = field(default_factory=dict)  # VIP -> (healthy, serving)
    moved: set[tuple[str, str]] = field(default_factory=set)  # (VIP, address) whose flows move


@functools.lru_cache(maxsize=1 << 17)
def text(address: IPAddress) -> str:
    """str(address), remembered: a commit looks up thousands of backends by address."""
    return str(address)


def panics(healthy: int, serving: int, threshold: int) -> bool:
    """Whether a VIP with `healthy` of `serving` backends up fails open."""
    return serving > 0 and healthy * 100 < threshold * serving


def flows_move(vip: VipConfig, rules: Rules) -> bool:
    """Whether the flows of a down backend of `vip` move (once settled)."""
    return vip.protocol == "udp" or rules.tcp_flows == "move"


def applied(desired: Config, down: Mapping[str, str], settled: Container[str],
            rules: Rules, held: Container[str] = ()) -> Applied:
    """The config to apply for `desired` with backends `down` (address -> why); those in
    `settled` have been down for a whole tick, so their flows may move, except in the VIPs
    `held` (in panic until now).

    One pass over the backends; a VIP without a down backend is kept as it is (the same
    object), which the data plane recognises as unchanged without rebuilding its ring.
    """
    out = Applied(desired)
    if not down:
        return out
    vips: list[VipConfig] = []
    for vip in desired.vips:
        hit = [text(b.address) in down for b in vip.backends]
        if not any(hit):
            vips.append(vip)
            continue
        serving = [h for b, h in zip(vip.backends, hit, strict=True) if b.effective_weight]
        healthy = serving.count(False)
        if panics(healthy, len(serving), rules.panic_threshold):
            out.panic[vip.name] = (healthy, len(serving))
            vips.append(vip)
            continue
        moves = flows_move(vip, rules) and vip.name not in held
        kept: list[BackendConfig] = []
        for b, is_down in zip(vip.backends, hit, strict=True):
            if not is_down:
                kept.append(b)
            elif moves and text(b.address) in settled:
                out.moved.add((vip.name, text(b.address)))  # invalid once no VIP has it
            else:
                kept.append(BackendConfig(b.address, b.weight, "drained"))
        vips.append(replace(vip, backends=tuple(kept)))
    out.config = replace(desired, vips=tuple(vips))
    return out
