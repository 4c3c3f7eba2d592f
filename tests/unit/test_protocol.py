"""xlb/api/protocol.py is the one schema: the server dispatches from it, the test double
answers from it, the data plane's reasons and the README agree with it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest

from tests.agent_double import AgentDouble
from tests.helpers import REPO
from xlb.agent.server import HANDLERS
from xlb.api import protocol as P
from xlb.api.client import AgentClient
from xlb.dataplane import structs as S
from xlb.errors import (
    ErrorCode,
    InvalidParams,
    ReadOnlyError,
    RefusedError,
    XlbError,
    from_rpc,
)


def test_every_method_has_a_handler_and_no_handler_is_unlisted() -> None:
    assert set(HANDLERS) == set(P.METHODS)


def test_reasons_match_the_data_plane_enum() -> None:
    assert list(P.REASONS) == [r.label for r in S.Reason]
    assert {P.reason_kind(r) for r in P.REASONS} == {"drop", "tx", "pass"}
    with pytest.raises(ValueError):
        P.reason_kind("nonsense")


def test_miss_kinds_match_the_data_plane_enum() -> None:
    assert list(P.MISSES) == [m.label for m in S.Miss]


def test_paths_match_the_data_plane_enum() -> None:
    assert list(P.PATHS) == [p.label for p in S.Path]
    assert set(P.PATHS) == set(get_args(P.TracePath))


def test_params_are_checked_from_the_table() -> None:
    weight = P.METHODS["weight"]
    assert weight.check({"address": "10.0.0.1", "weight": 3}) == {
        "address": "10.0.0.1", "weight": 3, "vip": None, "force": False}
    assert weight.check({"address": "10.0.0.1", "weight": 0, "vip": None})["vip"] is None
    for params, text in (({"weight": 3}, "missing parameter 'address'"),
                         ({"address": "10.0.0.1", "weight": "3"},
                          "'weight' must be an integer"),
                         ({"address": "10.0.0.1", "weight": True},
                          "'weight' must be an integer"),
                         ({"address": "10.0.0.1", "weight": 1, "force": 1},
                          "must be true or false"),
                         ({"address": "10.0.0.1", "weight": 1, "colour": "red"},
                          "unknown parameter(s) colour")):
        with pytest.raises(InvalidParams, match=re.escape(text)):
            weight.check(params)
    assert P.METHODS["audit"].check({}) == {"n": 50}


def test_only_changes_need_an_operator() -> None:
    changes = {n for n, m in P.METHODS.items() if m.operator}
    assert changes == {"drain", "undrain", "weight", "add_backend", "remove_backend",
                       "add_vip", "remove_vip", "probe_attach", "probe_detach",
                       "trace_start", "trace_stop", "bgp_withdraw", "bgp_announce", "mode",
                       "xdp_mode"}
    probes = {"probe_attach", "probe_detach"}  # a probe's state, not the balancing
    traces = {"trace_start", "trace_stop"}     # the trace: a cost, so operators only
    bgp = {"bgp_withdraw", "bgp_announce"}     # what the routers are told
    xdp = {"xdp_mode"}                         # the attachment, not a VIP
    assert all(P.METHODS[n].result is P.ChangeResult
               for n in changes - probes - traces - bgp - xdp)
    assert P.METHODS["xdp_mode"].result is P.XdpModeChange
    assert all(P.METHODS[n].result is P.BgpChange for n in bgp)
    assert all(P.METHODS[n].result is P.ProbeChange for n in probes)
    assert all(P.METHODS[n].result is P.TraceStatus for n in traces)


def test_conforms_says_what_does_not_fit() -> None:
    good: P.Totals = {"pps": 1.0, "bps": 2, "drop_pps": 0.0}
    assert P.conforms(good, P.Totals) == []
    assert P.conforms({"pps": 1.0, "bps": 2.0}, P.Totals) == ["$: missing 'drop_pps'"]
    assert P.conforms({**good, "extra": 1}, P.Totals) == ["$: unknown field 'extra'"]
    assert P.conforms({**good, "pps": "fast"}, P.Totals)[0].startswith("$.pps: expected float")
    assert P.conforms({**good, "pps": True}, P.Totals) != []
    assert P.conforms([{"busy": 1, "softirq": 2}], list[P.Cpu]) == []
    assert P.conforms({"kind": "health", "time": 1.0, "address": "a", "healthy": True,
                       "reason": ""}, P.Event) == []
    assert P.conforms({"kind": "nope"}, P.Event) != []


def test_changes_read_as_text() -> None:
    b: P.BackendConfig = {"address": "10.0.0.1", "weight": 1, "state": "active"}
    assert P.change_text({"web": b}, {"web": {**b, "weight": 7}}) == "web: weight 1 → 7"
    assert P.change_text({"web": b, "dns": b},
                         {"web": {**b, "state": "drained"}, "dns": b}) == (
        "web: state active → drained; dns: unchanged")
    assert P.change_text({"web": None}, {"web": b}) == "web: added (weight 1, active)"
    vip: P.VipConfig = {"name": "api", "address": "2001:db8::1", "port": 443,
                        "protocol": "tcp", "mode": "dsr", "backend": [b]}
    assert P.change_text({"api": None}, {"api": vip}) == (
        "api: added ([2001:db8::1]:443/tcp, 1 backend(s))")
    assert P.change_text({"api": vip}, {"api": None}) == "api: removed"


def test_error_answers_become_the_matching_error() -> None:
    assert isinstance(from_rpc(ErrorCode.REFUSED, "no"), RefusedError)
    assert isinstance(from_rpc(ErrorCode.READ_ONLY, "no"), ReadOnlyError)
    assert isinstance(from_rpc(ErrorCode.INVALID_PARAMS, "no"), InvalidParams)
    other = from_rpc(-32099, "odd")
    assert isinstance(other, XlbError) and other.rpc_code == -32099 and str(other) == "odd"


def test_every_error_has_an_exit_code_and_an_rpc_code() -> None:
    def all_subclasses(cls: type[XlbError]) -> list[type[XlbError]]:
        return [cls, *(s for c in cls.__subclasses__() for s in all_subclasses(c))]

    for cls in all_subclasses(XlbError):
        assert isinstance(cls.exit_code, int) and cls.exit_code > 0, cls
        assert int(cls.rpc_code) < 0, cls


def test_the_double_answers_in_the_protocol_shapes(tmp_path: Path) -> None:
    """The test double is what the console tests run against: its answers must be the
    agent's (tests/agent/test_agent.py checks the real agent's the same way)."""
    d = AgentDouble(str(tmp_path / "d.sock"), backends=4, vips=3).start()
    try:
        with AgentClient(d.path) as c:
            assert P.conforms(c.call("status"), P.Status) == []
            result = c.call("drain", address=d.vips[0]["backends"][0]["address"],
                            vip=d.vips[0]["name"])
            assert P.conforms(result, P.ChangeResult) == []
            assert P.conforms(result["after"][d.vips[0]["name"]], P.BackendConfig) == []
            assert P.conforms(c.call("audit"), list[P.AuditEntry]) == []
            switched = c.call("mode", vip=d.vips[0]["name"], mode="snat")
            assert P.conforms(switched, P.ChangeResult) == []
            assert P.conforms(switched["after"][d.vips[0]["name"]], P.VipConfig) == []
            assert P.conforms(c.call("xdp_mode", mode="generic"), P.XdpModeChange) == []
            status = c.call("status")
            assert status["vips"][0]["mode"] == "snat" and status["lb_mode"] == "dsr+snat"
            assert status["xdp_mode"] == "generic"
            with pytest.raises(XlbError) as e:
                c.call("vips")
            assert e.value.rpc_code == ErrorCode.NO_METHOD
            for kind, doc in c.subscribe():
                assert P.conforms(doc, P.NOTIFICATIONS[kind]) == []
                break
    finally:
        d.stop()


def test_the_double_refuses_modes_as_the_agent_does(tmp_path: Path) -> None:
    """No pool: snat refused in the config rules' words; no native XDP: native refused;
    nothing changes either way."""
    d = AgentDouble(str(tmp_path / "d.sock"), snat_pool_v4=None, xdp_mode="generic",
                    xdp_native=False).start()
    try:
        with AgentClient(d.path) as c:
            with pytest.raises(RefusedError, match="snat needs instance.snat_pool_v4"):
                c.call("mode", vip=d.vips[0]["name"], mode="snat")
            with pytest.raises(RefusedError, match="no native XDP"):
                c.call("xdp_mode", mode="native")
            status = c.call("status")
            assert status["vips"][0]["mode"] == "dsr" and status["xdp_mode"] == "generic"
            assert status["xdp_native"] is False and status["snat"]["pool_v4"] is None
    finally:
        d.stop()


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(title)
    end = text.find("\n#", start + len(title))
    return text[start:end if end > 0 else None]


def test_the_readme_documents_every_method_and_error_code() -> None:
    api = readme_section("### API")
    for name, method in P.METHODS.items():
        assert f"`{name}`" in api, f"the README's API section does not mention {name}"
        for p in method.params:
            assert p.name in api, f"the README does not name {name}'s parameter {p.name}"
    codes: dict[int, Any] = {int(m.group(1)): m.group(2) for m in
                             re.finditer(r"^\s*\|\s*(-\d+)\s*\|\s*(.+?)\s*\|$", api, re.M)}
    assert set(codes) == {int(c) for c in ErrorCode}, "the error code table is not the protocol's"
    assert f"array of up to {P.MAX_BATCH} requests" in api, "the README's batch limit"
