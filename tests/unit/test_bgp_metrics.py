"""The BGP metrics (xlb/agent/metrics.py) from a snapshot's bgp document: one series per
neighbor and prefix, Prometheus's conventions (promtool agrees), none without [bgp]."""

from __future__ import annotations

from prometheus_client import generate_latest

from tests.helpers import promtool_check, samples
from xlb.agent.metrics import Published, registry_of
from xlb.api import protocol as P


def exposition(bgp: P.Bgp) -> str:
    snap = {"bgp": bgp}
    return generate_latest(registry_of(lambda: Published(snap, None))).decode()  # type: ignore[arg-type]


def neighbor(peer: str, state: P.BgpSessionState, sent: int) -> P.BgpNeighbor:
    return {"peer": peer, "local_address": "", "peer_asn": 65000, "local_asn": 65001,
            "family": "ipv4 unicast", "state": state, "since": 1.0, "uptime": 0.0,
            "last_error": "", "updates_sent": sent, "updates_received": 1}


def prefix(p: str, announced: bool) -> P.BgpPrefix:
    return {"prefix": p, "vips": ["web"], "announced": announced,
            "cause": "serving" if announced else "operator", "reason": "", "since": 1.0,
            "peers": []}


def test_sessions_prefixes_restarts_and_maintenance() -> None:
    bgp: P.Bgp = {**P.empty_bgp(), "enabled": True, "speaker": "running", "restarts": 3,
                  "maintenance": True,
                  "neighbors": [neighbor("198.18.1.1", "established", 4),
                                neighbor("fd00::1", "down", 0)],
                  "prefixes": [prefix("198.19.0.10/32", True), prefix("fd00::10/128", False)]}
    text = exposition(bgp)
    assert promtool_check(text) == ""
    got = samples(text)
    assert got[("xlb_bgp_session_up", (("peer", "198.18.1.1"),))] == 1
    assert got[("xlb_bgp_session_up", (("peer", "fd00::1"),))] == 0
    assert got[("xlb_bgp_session_state", (("peer", "fd00::1"), ("state", "down")))] == 1
    assert got[("xlb_bgp_session_state", (("peer", "fd00::1"), ("state", "idle")))] == 0
    assert got[("xlb_bgp_updates_sent_total", (("peer", "198.18.1.1"),))] == 4
    assert got[("xlb_bgp_updates_received_total", (("peer", "fd00::1"),))] == 1
    assert got[("xlb_bgp_prefix_announced", (("prefix", "198.19.0.10/32"),))] == 1
    assert got[("xlb_bgp_prefix_announced", (("prefix", "fd00::10/128"),))] == 0
    assert got[("xlb_bgp_speaker_restarts_total", ())] == 3
    assert got[("xlb_bgp_maintenance", ())] == 1


def test_no_bgp_table_no_series() -> None:
    text = exposition(P.empty_bgp())
    assert promtool_check(text) == ""
    assert not [k for k in samples(text) if k[0].startswith("xlb_bgp")]
    assert "# TYPE xlb_bgp_session_up gauge" in text  # described, empty
