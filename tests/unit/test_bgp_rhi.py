"""Route health injection (xlb/bgp/rhi.py): the rule on examples, with the words people
read, and on every combination hypothesis makes, held to a plain restatement of the rule."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from xlb.bgp.rhi import Mark, Operator, Route, find_prefix, prefix_of, routes, stamp
from xlb.dataplane.config import Config, parse_config

ALICE = Mark("alice", 1000, 1796000000.0)  # 2026-11-29 ...


def config(*vips: tuple[str, str, list[dict[str, Any]]]) -> Config:
    return parse_config({
        "instance": {"name": "lb1", "interface": "eth0"},
        "vip": [{"name": n, "address": a, "port": 80 + i, "protocol": "tcp", "backend": b}
                for i, (n, a, b) in enumerate(vips)]})


B1, B2, B3 = ({"address": "10.0.1.1"}, {"address": "10.0.1.2"}, {"address": "10.0.1.3"})
CFG = config(("web", "198.19.0.10", [B1, B2, B3]), ("api", "198.19.0.10", [B3]),
             ("six", "fd00::10", [B1]))


def test_one_prefix_per_address_with_every_vip_there() -> None:
    got = routes(CFG, set(), None, Operator())
    assert [(r.prefix, r.vips, r.announced, r.cause) for r in got] == [
        ("198.19.0.10/32", ("web", "api"), True, "serving"),
        ("fd00::10/128", ("six",), True, "serving")]
    assert got[0].reason == ("web: 3 of 3 backends healthy and undrained; "
                             "api: 1 of 1 backends healthy and undrained")


def test_withdrawn_when_no_vip_at_the_address_has_a_backend_to_serve() -> None:
    got = routes(CFG, {"10.0.1.1", "10.0.1.2", "10.0.1.3"}, None, Operator())
    assert got[0] == Route("198.19.0.10/32", ("web", "api"), False, "no_backend",
                           "web: 0 of 3 backends healthy and undrained; "
                           "api: 0 of 1 backends healthy and undrained")
    # one VIP at the address that serves is enough: the address is routed, not the port
    assert routes(CFG, {"10.0.1.1", "10.0.1.2"}, None, Operator())[0].announced


def test_drained_and_weight_zero_backends_do_not_serve() -> None:
    cfg = config(("web", "198.19.0.10", [{**B1, "state": "drained"}, {**B2, "weight": 0}]))
    assert routes(cfg, set(), None, Operator())[0].cause == "no_backend"
    assert routes(config(("web", "198.19.0.10", [])), set(), None, Operator())[0].reason == (
        "web: 0 of 0 backends healthy and undrained")


def test_the_announce_list_counts_only_its_vips() -> None:
    cfg = config(("web", "198.19.0.10", [B1]), ("api", "198.19.0.10", [B3]))
    got = routes(cfg, {"10.0.1.1"}, {"web"}, Operator())
    assert (got[0].cause, got[0].reason) == (
        "no_backend", "web: 0 of 1 backends healthy and undrained")  # api's backend is not it
    assert routes(cfg, {"10.0.1.3"}, {"web"}, Operator())[0].announced is True
    got = routes(CFG, set(), {"six"}, Operator())
    assert got[0] == Route("198.19.0.10/32", ("web", "api"), False, "not_announced",
                           "not in bgp.announce: web, api")


def test_operators_withdraw_with_who_and_when() -> None:
    got = routes(CFG, set(), None, Operator(withdrawn={"fd00::10/128": ALICE}))
    assert got[0].announced and (got[1].cause, got[1].reason) == (
        "operator", f"withdrawn by alice at {stamp(ALICE.time)}")
    got = routes(CFG, set(), None, Operator(maintenance=ALICE))
    assert [(r.announced, r.cause) for r in got] == [(False, "maintenance")] * 2
    assert got[0].reason == f"withdrawn by alice at {stamp(ALICE.time)}: maintenance"
    assert stamp(0) == "1970-01-01 00:00:00 UTC"


def test_a_prefix_is_found_by_vip_name_or_address() -> None:
    assert find_prefix(CFG, "api") == "198.19.0.10/32"
    assert find_prefix(CFG, "198.19.0.10") == "198.19.0.10/32"
    assert find_prefix(CFG, "198.19.0.10/32") == "198.19.0.10/32"
    assert find_prefix(CFG, "FD00:0::10") == "fd00::10/128"
    assert find_prefix(CFG, "fd00::10/128") == "fd00::10/128"
    for unknown in ("web2", "198.19.0.11", "198.19.0.10/24", "fd00::10/64", "", "/"):
        assert find_prefix(CFG, unknown) is None, unknown


# -------------------------------------------------------------------- every combination

ADDRESSES = ["198.19.0.10", "198.19.0.11", "fd00::10", "fd00::11"]
BACKENDS = ["10.0.1.1", "10.0.1.2", "fd00:1::1"]

backend = st.fixed_dictionaries({"address": st.sampled_from(BACKENDS),
                                 "weight": st.integers(0, 2),
                                 "state": st.sampled_from(["active", "drained"])})
vip = st.tuples(st.sampled_from(ADDRESSES),
                st.lists(backend, max_size=3, unique_by=lambda b: b["address"]))


@st.composite
def cases(draw: st.DrawFn) -> tuple[Config, set[str], set[str] | None, Operator]:
    vips = draw(st.lists(vip, min_size=1, max_size=5))
    cfg = config(*[(f"v{i}", a, b) for i, (a, b) in enumerate(vips)])
    down = draw(st.sets(st.sampled_from(BACKENDS)))
    names = [v.name for v in cfg.vips]
    announce = draw(st.none() | st.sets(st.sampled_from(names)))
    prefixes = [prefix_of(v.address) for v in cfg.vips]
    withdrawn = draw(st.sets(st.sampled_from(prefixes)))
    maintenance = draw(st.none() | st.just(ALICE))
    return cfg, down, announce, Operator(maintenance, dict.fromkeys(withdrawn, ALICE))


@settings(max_examples=400, deadline=None)
@given(cases())
def test_the_rule_on_every_combination(case: tuple[Config, set[str], set[str] | None,
                                                   Operator]) -> None:
    cfg, down, announce, op = case
    got = routes(cfg, down, announce, op)
    addresses = list(dict.fromkeys(v.address for v in cfg.vips))
    assert [r.prefix for r in got] == [prefix_of(a) for a in addresses]  # each once, in order
    for r, address in zip(got, addresses, strict=True):
        here = [v for v in cfg.vips if v.address == address]
        assert r.vips == tuple(v.name for v in here)
        listed = [v for v in here if announce is None or v.name in announce]
        serves = any(b.state == "active" and b.weight > 0 and str(b.address) not in down
                     for v in listed for b in v.backends)
        announced = bool(listed) and op.maintenance is None and r.prefix not in op.withdrawn \
            and serves
        assert r.announced == announced
        assert r.announced == (r.cause == "serving")
        if not listed:
            assert r.cause == "not_announced"
        elif op.maintenance is not None:
            assert r.cause == "maintenance" and "alice" in r.reason
        elif r.prefix in op.withdrawn:
            assert r.cause == "operator" and "alice" in r.reason
        else:
            assert r.cause == ("serving" if serves else "no_backend")
            assert [part.split(":")[0] for part in r.reason.split("; ")] == [
                v.name for v in listed]
