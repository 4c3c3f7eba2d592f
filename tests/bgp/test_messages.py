"""ExaBGP's JSON lines -> messages -> neighbor state, on lines recorded from a real ExaBGP 5
against BIRD 2 (exabgp_lines.txt). No root."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from xlb.bgp import messages as M
from xlb.bgp.neighbors import NO_OPEN, Neighbors
from xlb.bgp.settings import BgpSettings, Neighbor

LINES = os.path.join(os.path.dirname(__file__), "exabgp_lines.txt")


def scenarios() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current: list[str] = []
    with open(LINES) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.startswith("# scenario: "):
                current = out.setdefault(line.split(": ", 1)[1], [])
            elif line and not line.startswith("#"):
                current.append(line)
    return out


def replay(settings: BgpSettings, lines: list[str]) -> tuple[Neighbors, list[tuple[str, str, str]]]:
    nbs = Neighbors(settings)
    events: list[tuple[str, str, str]] = []
    for i, line in enumerate(lines):
        msg = M.parse(line)
        assert msg is not None, line
        events += nbs.apply(msg, 1000.0 + i)
    return nbs, events


LAB = BgpSettings(65001, "10.250.0.2", (Neighbor("10.250.0.1", 65000),
                                        Neighbor("fd00:250::1", 65000)))


def test_every_recorded_line_is_understood() -> None:
    kinds = set()
    for lines in scenarios().values():
        for line in lines:
            msg = M.parse(line)
            assert msg is not None, line
            kinds.add(type(msg).__name__)
    assert kinds == {"Ack", "State", "Notification", "Open", "Update"}


def test_updates_by_direction() -> None:
    msgs = [M.parse(x) for x in scenarios()["established"]]
    ups = [m for m in msgs if isinstance(m, M.Update)]
    sent = [m for m in ups if m.direction == "send"]
    assert sorted(m.announced for m in sent if m.announced) == [("10.9.0.1/32",),
                                                                ("fd00:9::1/128",)]
    assert sorted(m.withdrawn for m in sent if m.withdrawn) == [("10.9.0.1/32",),
                                                               ("fd00:9::1/128",)]
    assert sum(m.eor for m in sent) == 2
    assert all(m.eor for m in ups if m.direction == "receive")


def test_acks_and_shutdown() -> None:
    assert M.parse("done") == M.Ack(True)
    assert M.parse("error\n") == M.Ack(False)
    shutdown = [M.parse(x) for x in scenarios()["established"]][-1]
    assert shutdown == M.Notification("", "", 0, 0, "shutdown")


def test_open_takes_the_four_byte_asn() -> None:
    opens = [m for m in map(M.parse, scenarios()["established"]) if isinstance(m, M.Open)]
    assert {(m.peer, m.asn, m.hold_time, m.router_id) for m in opens} == {
        ("10.250.0.1", 65000, 9, "10.250.0.1"), ("fd00:250::1", 65000, 9, "10.250.0.1")}


@given(st.text())
def test_any_text_is_none_or_a_message_never_an_exception(text: str) -> None:
    M.parse(text)


def test_malformed_json_is_ignored() -> None:
    for line in ("", "{", "[1]", "{}", '{"type": "state"}', '{"type": "state", "neighbor": 1}',
                 '{"type": "update", "neighbor": {"address": {"peer": "1.2.3.4"}, '
                 '"message": {"update": {"announce": "x"}}}}',
                 '{"type": "notification", "neighbor": {"address": {"peer": "1.2.3.4"}, '
                 '"notification": {"code": "x"}}}', "warning: something"):
        assert M.parse(line) is None, line


def test_notification_words() -> None:
    assert M.notification_words(2, 2, "0x0000FDEA") == "OPEN message error: bad peer AS"
    assert M.notification_words(6, 2, "0x") == "cease: administrative shutdown"
    # RFC 8203 shutdown communication: a length byte, then UTF-8
    assert M.notification_words(6, 2, "0x" + (b"\x0bmaintenance").hex()) == \
        'cease: administrative shutdown: "maintenance"'
    assert M.notification_words(4, 0) == "hold timer expired"
    assert M.notification_words(3, 99, "0xab") == "UPDATE message error (subcode 99) (data ab)"
    assert M.notification_words(42, 1) == "error code 42 (subcode 1)"
    assert M.reason_words("notification sent (2,2)") == \
        "notification sent (2,2): OPEN message error: bad peer AS"
    assert M.reason_words("closing connection") == "closing connection"


def test_an_established_session_then_exabgp_stops() -> None:
    lines = scenarios()["established"]
    cut = next(i for i, x in enumerate(lines) if '"withdraw"' in x)
    nbs, events = replay(LAB, lines[:cut])
    snap = {n["peer"]: n for n in nbs.snapshot(2000.0)}
    assert snap["10.250.0.1"]["state"] == "established"
    assert snap["10.250.0.1"]["local_address"] == "10.250.0.2"
    assert snap["fd00:250::1"]["local_address"] == "fd00:250::2"
    assert snap["10.250.0.1"]["uptime"] > 0
    # End-of-RIB and the announce: two UPDATEs sent; the peer's End-of-RIB received
    assert (snap["10.250.0.1"]["updates_sent"], snap["10.250.0.1"]["updates_received"]) == (2, 1)
    assert nbs.carried() == {"10.9.0.1/32": ["10.250.0.1"], "fd00:9::1/128": ["fd00:250::1"]}
    assert sorted(e for e in events if e[0] == "session") == [
        ("session", "10.250.0.1", "session established (AS 65000)"),
        ("session", "fd00:250::1", "session established (AS 65000)")]
    nbs, events = replay(LAB, lines)
    snap = {n["peer"]: n for n in nbs.snapshot(2000.0)}
    assert nbs.carried() == {}
    assert snap["10.250.0.1"]["updates_sent"] == 3
    assert snap["10.250.0.1"]["state"] == "down"
    assert snap["10.250.0.1"]["uptime"] == 0
    assert snap["10.250.0.1"]["last_error"] == "ExaBGP stopped the session (shutting down)"


def test_the_peer_sends_a_cease_and_comes_back() -> None:
    v4 = BgpSettings(65001, "10.250.0.2", (Neighbor("10.250.0.1", 65000),))
    nbs, events = replay(v4, scenarios()["cease"])
    assert ("notification", "10.250.0.1",
            "notification received: cease: administrative shutdown") in events
    assert ("session", "10.250.0.1",
            "session established (AS 65000)") == events[-1]
    [snap] = nbs.snapshot(2000.0)
    assert snap["state"] == "established" and snap["last_error"] == ""


def test_wrong_asns_and_an_unreachable_peer_are_states_with_the_reason() -> None:
    settings = BgpSettings(65002, "10.250.0.2", (
        Neighbor("10.250.0.1", 65000), Neighbor("fd00:250::1", 65099),
        Neighbor("10.250.0.99", 65000), Neighbor("10.251.0.1", 65000)))
    nbs, events = replay(settings, scenarios()["wrong_asn"])
    snap = {n["peer"]: n for n in nbs.snapshot(2000.0)}
    assert snap["10.250.0.1"]["state"] == "down"
    assert snap["10.250.0.1"]["last_error"] == \
        "notification received: OPEN message error: bad peer AS: the peer does not accept " \
        "our AS 65002"
    assert snap["fd00:250::1"]["last_error"] == (
        "notification sent (2,2): OPEN message error: bad peer AS: the peer's OPEN says "
        "AS 65000, the neighbor's asn is 65099")
    assert snap["10.250.0.99"]["last_error"] == NO_OPEN
    # never a word from ExaBGP about a peer it cannot even try: idle, no reason invented
    assert (snap["10.251.0.1"]["state"], snap["10.251.0.1"]["last_error"]) == ("idle", "")
    # ExaBGP retries every few seconds: each peer's failure is in the log once
    per_peer = {p: [e for e in events if e[1] == p] for p in snap}
    assert [len(v) for v in per_peer.values()] == [1, 1, 1, 0], per_peer
    assert all(s["updates_sent"] == 0 and s["uptime"] == 0 for s in snap.values())


_peers = st.sampled_from(["10.250.0.1", "fd00:250::1", "192.0.2.9"])
_msgs = st.one_of(
    st.builds(M.State, _peers, st.just("10.250.0.2"),
              st.sampled_from(["connected", "up", "down", "odd"]),
              st.sampled_from(["", "closing connection", "notification received (6,2)",
                               "notification sent (2,2)", "stop, message [x]"])),
    st.builds(M.Notification, _peers, st.sampled_from(["receive", "send"]),
              st.integers(0, 9), st.integers(0, 12), st.sampled_from(["0x", "0x0b61", "zz"])),
    st.builds(M.Open, _peers, st.just("receive"), st.integers(1, 2**32 - 1),
              st.integers(0, 90), st.just("10.250.0.1")),
    st.builds(M.Update, _peers, st.sampled_from(["send", "receive"]),
              st.lists(st.sampled_from(["10.9.0.1/32", "fd00:9::1/128"]), max_size=2)
              .map(tuple), st.lists(st.sampled_from(["10.9.0.1/32"]), max_size=1).map(tuple),
              st.booleans()),
    st.builds(M.Ack, st.booleans()))


@given(st.lists(_msgs, max_size=40))
def test_any_message_sequence_keeps_the_states_consistent(msgs: list[M.Message]) -> None:
    nbs = Neighbors(LAB)
    for i, msg in enumerate(msgs):
        nbs.apply(msg, float(i))
        snap = {n["peer"]: n for n in nbs.snapshot(float(i) + 0.5)}
        for n in snap.values():
            assert (n["uptime"] > 0) == (n["state"] == "established")
            if isinstance(msg, M.State) and msg.state == "up" and n["peer"] == msg.peer:
                assert n["last_error"] == ""
        for prefix, peers in nbs.carried().items():
            assert peers and all(snap[p]["state"] == "established" for p in peers), prefix
        # a peer that is not a neighbor is ignored
        assert sorted(snap) == ["10.250.0.1", "fd00:250::1"]


def test_exabgp_gone_drops_every_session() -> None:
    lines = scenarios()["established"]
    cut = next(i for i, x in enumerate(lines) if '"withdraw"' in x)
    nbs, _ = replay(LAB, lines[:cut])
    events = nbs.speaker_gone("ExaBGP (pid 7) was killed by SIGKILL", 3000.0)
    assert events == [("session", p, "session down: ExaBGP (pid 7) was killed by SIGKILL")
                      for p in ("10.250.0.1", "fd00:250::1")]
    assert nbs.carried() == {}
    assert {n["state"] for n in nbs.snapshot(3000.0)} == {"down"}
