"""BgpControl (xlb/bgp/control.py) between the agent and the Speaker: the rule applied,
the operators' changes audited and kept across restarts, refusals audited, the event log.

The Speaker here is SpeakerDouble, a test double that records what it is given (the real
ExaBGP supervisor is exercised against BIRD in tests/agent/test_bgp_agent.py)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from xlb.agent.audit import AuditLog
from xlb.api import protocol as P
from xlb.bgp.control import BgpControl
from xlb.bgp.settings import BgpSettings, Neighbor
from xlb.dataplane.config import Config, parse_config
from xlb.errors import ApplyError, InvalidParams, RefusedError


class SpeakerDouble:
    """Test double of xlb.bgp.speaker.Speaker: keeps the desired routes it is given."""

    def __init__(self, settings: BgpSettings, instance: str, netns: str | None,
                 on_event: Callable[[P.BgpEvent], None]) -> None:
        self.on_event = on_event
        self.routes: dict[str, bool] = {}
        self.calls = 0
        self.started = self.closed = False
        self.fail: Exception | None = None

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True

    def set_routes(self, routes: Mapping[str, bool]) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        self.routes = dict(routes)

    def neighbors(self) -> list[P.BgpNeighbor]:
        return []

    def state(self) -> tuple[P.BgpSpeakerState, int, int, str]:
        return "running", 4242, 1, "killed by signal 9"

    def carried(self) -> dict[str, list[str]]:
        return {p: ["198.18.1.1"] for p, on in self.routes.items() if on}


@dataclass(frozen=True)
class Who:
    uid: int
    user: str
    operator: bool = True


ALICE, BOB = Who(1000, "alice"), Who(0, "root")
SETTINGS = BgpSettings(65001, "198.18.1.2", (Neighbor("198.18.1.1", 65000),))
CFG = parse_config({
    "instance": {"name": "lb1", "interface": "eth0"},
    "vip": [{"name": "web", "address": "198.19.0.10", "port": 80, "protocol": "tcp",
             "backend": [{"address": "10.0.1.1"}, {"address": "10.0.1.2"}]},
            {"name": "dns", "address": "198.19.0.10", "port": 53, "protocol": "udp",
             "backend": [{"address": "10.0.1.1"}]},
            {"name": "web6", "address": "fd00::10", "port": 80, "protocol": "tcp",
             "backend": [{"address": "10.0.1.2"}]}]})
V4, V6 = "198.19.0.10/32", "fd00::10/128"


class Rig:
    def __init__(self, tmp: Path, cfg: Config = CFG) -> None:
        self.tmp = tmp
        self.audit = AuditLog(str(tmp / "audit.jsonl"))
        self.ctl = BgpControl(SETTINGS, "lb1", None, self.audit, SpeakerDouble,
                              state_dir=str(tmp / "run"))
        self.speaker: SpeakerDouble = self.ctl.speaker  # type: ignore[assignment]
        self.ctl.update(cfg, set())

    def prefix(self, prefix: str) -> P.BgpPrefix:
        return next(p for p in self.ctl.status()["prefixes"] if p["prefix"] == prefix)

    def events(self, kind: str) -> list[str]:
        return [e["message"] for e in self.ctl.status()["events"] if e["kind"] == kind]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_the_speaker_is_given_the_rules_decision(rig: Rig) -> None:
    assert rig.speaker.routes == {V4: True, V6: True}
    rig.ctl.update(CFG, {"10.0.1.2"})  # web6's only backend down; web and dns serve
    assert rig.speaker.routes == {V4: True, V6: False}
    p = rig.prefix(V6)
    assert (p["announced"], p["cause"], p["peers"]) == (False, "no_backend", [])
    assert p["reason"] == "web6: 0 of 1 backends healthy and undrained"
    assert rig.prefix(V4)["peers"] == ["198.18.1.1"]
    assert rig.events("withdraw") == [
        "fd00::10/128 withdrawn (no_backend): web6: 0 of 1 backends healthy and undrained"]
    assert len(rig.events("announce")) == 2  # the first decision, one per prefix


def test_since_moves_when_the_decision_does(rig: Rig) -> None:
    first = rig.prefix(V4)["since"]
    assert first > 0
    rig.ctl.update(CFG, {"10.0.1.1"})  # a reason changes (1 of 2), the decision does not
    assert rig.prefix(V4)["since"] == first
    assert "web: 1 of 2 backends" in rig.prefix(V4)["reason"]
    rig.ctl.update(CFG, {"10.0.1.1", "10.0.1.2"})
    assert rig.prefix(V4)["since"] > first


def test_an_unchanged_tick_decides_nothing_again(rig: Rig) -> None:
    decided = rig.ctl.routes
    for _ in range(3):
        rig.ctl.update(CFG, set())
    assert rig.ctl.routes is decided and rig.speaker.calls == 4  # the set, every tick


def test_a_speaker_that_fails_never_stops_the_tick(rig: Rig) -> None:
    rig.speaker.fail = RuntimeError("ExaBGP's pipe is gone")
    rig.ctl.update(CFG, {"10.0.1.2"})  # no exception
    assert rig.prefix(V6)["cause"] == "no_backend"


def test_operator_withdraw_and_announce_one_prefix(rig: Rig) -> None:
    got = rig.ctl.change(ALICE, "withdraw", "web6", False)
    assert got["changed"] and not got["maintenance"]
    [p] = got["prefixes"]
    assert (p["prefix"], p["announced"], p["cause"]) == (V6, False, "operator")
    assert p["reason"].startswith("withdrawn by alice at ")
    assert rig.speaker.routes == {V4: True, V6: False}  # at once, not at the next tick
    assert rig.ctl.change(BOB, "withdraw", "FD00::10", False)["changed"] is False
    assert "withdrawn by alice" in rig.prefix(V6)["reason"]  # the first one stays
    rig.ctl.update(CFG, set())  # ticks keep it withdrawn
    assert rig.speaker.routes[V6] is False
    got = rig.ctl.change(BOB, "announce", "fd00::10/128", False)
    assert got["changed"] and got["prefixes"][0]["cause"] == "serving"
    assert rig.speaker.routes == {V4: True, V6: True}
    entries = rig.audit.tail(10)
    assert [(e["user"], e["action"], e["result"]) for e in entries] == [
        ("alice", "bgp_withdraw", "ok"), ("root", "bgp_withdraw", "ok"),
        ("root", "bgp_announce", "ok")]
    assert entries[0]["params"] == {"vip": "web6", "all": False}
    assert entries[0]["before"][V6] == {"announced": True, "cause": "serving",
                                        "operator": False}
    assert entries[0]["after"][V6] == {"announced": False, "cause": "operator",
                                       "operator": True}
    assert rig.events("operator") == ["alice withdrew fd00::10/128 (web6)",
                                      "root announced again fd00::10/128 (fd00::10/128)"]


def test_maintenance_withdraws_everything_and_its_end_clears_every_withdrawal(
        rig: Rig) -> None:
    rig.ctl.change(ALICE, "withdraw", "web", False)
    got = rig.ctl.change(ALICE, "withdraw", None, True)
    assert got["changed"] and got["maintenance"]
    assert [(p["prefix"], p["cause"]) for p in got["prefixes"]] == [
        (V4, "maintenance"), (V6, "maintenance")]
    assert rig.speaker.routes == {V4: False, V6: False}
    status = rig.ctl.status()
    assert status["maintenance"] and status["maintenance_by"].startswith("alice at ")
    with pytest.raises(RefusedError, match=r"lb1 is in maintenance .*`xlb bgp announce --all` "
                       "ends it"):
        rig.ctl.change(BOB, "announce", "web", False)
    assert rig.ctl.change(BOB, "withdraw", None, True)["changed"] is False
    got = rig.ctl.change(BOB, "announce", None, True)
    assert got["changed"] and not got["maintenance"]
    assert rig.speaker.routes == {V4: True, V6: True}  # web's own withdrawal ended too
    assert rig.ctl.change(BOB, "announce", None, True)["changed"] is False
    refused = [e for e in rig.audit.tail(20) if e["result"] != "ok"]
    assert [(e["user"], e["action"]) for e in refused] == [("root", "bgp_announce")]
    assert "maintenance" in refused[0]["result"]


def test_unknown_vips_and_bad_params_are_refused_and_change_nothing(rig: Rig) -> None:
    with pytest.raises(RefusedError, match=r"no VIP of lb1 is named or at 'api' \(prefixes: "
                       r"198.19.0.10/32, fd00::10/128\)"):
        rig.ctl.change(ALICE, "withdraw", "api", False)
    for vip, every in ((None, False), ("web", True)):
        with pytest.raises(InvalidParams, match="either vip"):
            rig.ctl.change(ALICE, "withdraw", vip, every)
    assert rig.speaker.routes == {V4: True, V6: True}
    assert [e["result"][:8] for e in rig.audit.tail(10)] == ["refused:"]
    assert not os.path.exists(rig.ctl.path)


def test_operator_state_survives_a_restart(rig: Rig, tmp_path: Path) -> None:
    rig.ctl.change(ALICE, "withdraw", "198.19.0.10", False)
    rig.ctl.change(ALICE, "withdraw", None, True)
    saved = json.loads(Path(rig.ctl.path).read_text())
    assert saved["maintenance"]["user"] == "alice" and list(saved["withdrawn"]) == [V4]
    assert oct(os.stat(rig.ctl.path).st_mode & 0o777) == "0o600"
    again = Rig(tmp_path)  # a new agent on the same run directory
    assert again.speaker.routes == {V4: False, V6: False}  # before its first session is up
    assert again.ctl.status()["maintenance_by"] == rig.ctl.status()["maintenance_by"]
    assert again.events("operator") == [
        "restored after a restart: maintenance (by "
        f"{rig.ctl.status()['maintenance_by']})"]
    again.ctl.change(BOB, "announce", None, True)
    assert Rig(tmp_path).speaker.routes == {V4: True, V6: True}


def test_an_unreadable_state_file_is_said_and_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "bgp.json").write_text("{not json")
    rig = Rig(tmp_path)
    assert rig.speaker.routes == {V4: True, V6: True}


def test_a_state_that_cannot_be_saved_is_not_made_and_not_audited(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (tmp_path / "blocker").write_text("")
    rig.ctl.path = str(tmp_path / "blocker" / "bgp.json")  # its directory is a file
    with pytest.raises(ApplyError, match="not changed: the BGP state could not be saved"):
        rig.ctl.change(ALICE, "withdraw", None, True)
    assert rig.speaker.routes == {V4: True, V6: True} and not rig.ctl.status()["maintenance"]
    assert rig.audit.tail(10) == []  # the record was taken back


def test_the_event_log_is_bounded_and_takes_the_speakers_events(rig: Rig) -> None:
    def burst(n: int) -> None:
        for i in range(n):
            rig.speaker.on_event({"time": float(i), "kind": "session", "peer": "198.18.1.1",
                                  "message": f"event {i}"})
    threads = [threading.Thread(target=burst, args=(150,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = rig.ctl.status()["events"]
    assert len(events) == P.MAX_BGP_EVENTS and events[-1]["kind"] == "session"


def test_status_speaks_for_the_speaker(rig: Rig) -> None:
    s = rig.ctl.status()
    assert (s["enabled"], s["speaker"], s["pid"], s["restarts"], s["last_error"]) == (
        True, "running", 4242, 1, "killed by signal 9")
    assert (s["local_asn"], s["router_id"], s["maintenance"], s["maintenance_by"]) == (
        65001, "198.18.1.2", False, "")
    assert set(s) == set(P.Bgp.__annotations__)


def test_close_stops_only_a_started_speaker(rig: Rig) -> None:
    rig.ctl.close()
    assert not rig.speaker.closed  # never started (the agent failed before)
    rig.ctl.start()
    rig.ctl.close()
    assert rig.speaker.started and rig.speaker.closed
