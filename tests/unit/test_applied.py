"""What the agent applies for backends found down: which flows move, and when a VIP
fails open (xlb/agent/applied.py)."""

from __future__ import annotations

from typing import Any

import pytest

from xlb.agent.applied import Rules, applied, panics
from xlb.dataplane.config import Config, parse_config


def cfg(*vips: tuple[str, str, list[Any]]) -> Config:
    """VIPs as (name, protocol, backends); a backend is an address or (address, state)."""
    return parse_config({
        "instance": {"name": "t", "interface": "eth0"},
        "vip": [{"name": name, "address": f"10.100.0.{i + 1}", "port": 80, "protocol": proto,
                 "backend": [{"address": b} if isinstance(b, str) else
                             {"address": b[0], "state": b[1]} for b in backends]}
                for i, (name, proto, backends) in enumerate(vips)]})


def backends(c: Config, vip: str) -> dict[str, str]:
    return {str(b.address): b.state for b in c.vip(vip).backends}


WEB = ("web", "tcp", ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"])
DNS = ("dns", "udp", ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"])


def test_nothing_down_is_the_intent_itself() -> None:
    c = cfg(WEB)
    out = applied(c, {}, set(), Rules())
    assert out.config is c and out.panic == {} and out.moved == set()


def test_a_vip_without_a_down_backend_is_kept_as_it_is() -> None:
    c = cfg(WEB, ("api", "tcp", ["10.0.2.1"]))
    out = applied(c, {"10.0.1.1": "x"}, set(), Rules())
    assert out.config.vip("api") is c.vip("api")  # the data plane skips it: no ring work
    assert out.config.vip("web") is not c.vip("web")


def test_a_down_backend_takes_no_new_flows_and_its_flows_move_a_tick_later() -> None:
    c = cfg(WEB, DNS)
    first = applied(c, {"10.0.1.1": "x"}, set(), Rules())
    assert backends(first.config, "web")["10.0.1.1"] == "drained"  # no new flows yet ...
    assert backends(first.config, "dns")["10.0.1.1"] == "drained"  # ... and none moved
    assert first.moved == set()
    later = applied(c, {"10.0.1.1": "x"}, {"10.0.1.1"}, Rules())
    assert "10.0.1.1" not in backends(later.config, "web")  # left out: invalid, flows move
    assert "10.0.1.1" not in backends(later.config, "dns")
    assert later.moved == {("web", "10.0.1.1"), ("dns", "10.0.1.1")}
    assert later.config.backend_addresses() == c.backend_addresses()[1:]


def test_with_tcp_flows_staying_udp_flows_still_move() -> None:
    out = applied(cfg(WEB, DNS), {"10.0.1.1": "x"}, {"10.0.1.1"}, Rules(tcp_flows="stay"))
    assert backends(out.config, "web")["10.0.1.1"] == "drained"  # valid: TCP flows stay
    assert "10.0.1.1" not in backends(out.config, "dns")
    assert out.moved == {("dns", "10.0.1.1")}


@pytest.mark.parametrize(("healthy", "serving", "threshold", "panic"), [
    (0, 1, 25, True), (0, 3, 25, True), (1, 3, 25, False), (1, 4, 25, False),
    (1, 5, 25, True), (2, 10, 25, True), (3, 10, 25, False), (0, 0, 25, False),
    (0, 4, 0, False), (4, 4, 100, False), (3, 4, 100, True), (1, 2, 50, False)])
def test_the_panic_rule(healthy: int, serving: int, threshold: int, panic: bool) -> None:
    assert panics(healthy, serving, threshold) is panic


def test_a_vip_in_panic_serves_with_all_its_serving_backends() -> None:
    c = cfg(WEB, ("api", "tcp", ["10.0.2.1", "10.0.2.2"]))
    down = {a: "blackhole" for a in ("10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4",
                                     "10.0.2.1")}
    out = applied(c, down, set(down), Rules())
    assert out.panic == {"web": (0, 4)}
    assert out.config.vip("web") is c.vip("web")  # as if every check passed
    assert ("web", "10.0.1.1") not in out.moved
    assert backends(out.config, "api") == {"10.0.2.2": "active"}  # 1 of 2: no panic
    assert out.moved == {("api", "10.0.2.1")}


def test_drained_backends_neither_count_nor_serve_in_panic() -> None:
    c = cfg(("web", "tcp", ["10.0.1.1", ("10.0.1.2", "drained"), ("10.0.1.3", "drained")]))
    out = applied(c, {"10.0.1.1": "x"}, set(), Rules())
    assert out.panic == {"web": (0, 1)}  # the drained ones are not serving backends
    assert backends(out.config, "web") == {"10.0.1.1": "active", "10.0.1.2": "drained",
                                           "10.0.1.3": "drained"}


def test_panic_can_be_turned_off() -> None:
    c = cfg(WEB)
    down = {b: "x" for b in backends(c, "web")}
    out = applied(c, down, set(), Rules(panic_threshold=0))
    assert out.panic == {} and set(backends(out.config, "web").values()) == {"drained"}
