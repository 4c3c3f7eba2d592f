"""Saved intent and the config file: "changed" is decided on what the file says, and what a
change of the file discards is listed exactly (xlb/agent/intent.py)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from xlb.agent import intent, settings
from xlb.agent.audit import AuditLog
from xlb.agent.settings import AgentConfig
from xlb.dataplane.config import Config, parse_config

FILE = """
# lb1: the web tier
[instance]
name = "lb1"
interface = "eth1"

[[vip]]
name = "web"
address = "10.100.0.10"
port = 80
protocol = "tcp"
[[vip.backend]]
address = "10.0.1.1"
[[vip.backend]]
address = "fd00::2"
weight = 3

[[vip]]
name = "dns"
address = "10.100.0.10"
port = 53
protocol = "udp"
[[vip.backend]]
address = "10.0.1.1"
"""

# the same, said differently: comments, blank lines, key order, defaults written out,
# another spelling of an address, the VIPs and backends in another order
SAME = """
[[vip]]
protocol = "udp"
port = 53
address = "10.100.0.10"
name = "dns"   # the resolvers
[[vip.backend]]
state = "active"
address = "10.0.1.1"

[instance]
interface = "eth1"
name = "lb1"
mtu = 1500

[[vip]]
name = "web"
address = "10.100.0.10"
port = 80
protocol = "tcp"
[[vip.backend]]
weight = 3
address = "fd00:0:0::2"
[[vip.backend]]
address = "10.0.1.1"
weight = 1
"""


def load(text: str) -> Config:
    return parse_config(tomllib.loads(text))


def test_the_meaning_ignores_how_the_file_says_it() -> None:
    assert intent.meaning(load(FILE)) == intent.meaning(load(SAME))


def test_the_meaning_changes_with_what_the_file_says() -> None:
    base = intent.meaning(load(FILE))
    for old, new in (('weight = 3', 'weight = 2'), ('port = 53', 'port = 5353'),
                     ('address = "fd00::2"', 'address = "fd00::3"'),
                     ('interface = "eth1"', 'interface = "eth2"'),
                     ('address = "fd00::2"\nweight = 3',
                      'address = "fd00::2"\nweight = 3\nstate = "drained"')):
        assert intent.meaning(load(FILE.replace(old, new, 1))) != base, new


def test_what_is_discarded_is_said_exactly() -> None:
    base = load(FILE)
    saved = (base.with_backend("web", "fd00::2", state="drained")
             .with_added_backend("web", "10.0.1.9", weight=2)
             .without_vip("dns")
             .with_added_vip("api", "10.100.0.20", 443, "tcp", [{"address": "10.0.1.5"}]))
    before, after = intent.differences(base, saved)
    assert list(before) == ["web", "dns", "api"]
    assert intent.lines(before, after) == [
        "web: backend fd00::2 state active → drained, backend 10.0.1.9 added (weight 2, active)",
        "dns: removed",
        "api: added (10.100.0.20:443/tcp, 1 backend(s))"]


def test_nothing_differs_nothing_is_listed() -> None:
    assert intent.differences(load(FILE), load(SAME)) == ({}, {})


# -- restoring the saved intent at start -------------------------------------------------------

def setup(tmp: Path, text: str = FILE) -> tuple[AgentConfig, AuditLog, Path]:
    path = tmp / "lb1.toml"
    path.write_text(text)
    return settings.load(str(path)), AuditLog(str(tmp / "audit.jsonl")), tmp / "agent.json"


def test_no_saved_intent_is_nothing_to_say(tmp_path: Path) -> None:
    ac, audit, state = setup(tmp_path)
    assert intent.restore(str(state), ac, audit) is None and audit.tail() == []


def test_an_intent_saved_by_an_older_agent_is_kept_for_the_same_bytes(tmp_path: Path) -> None:
    ac, audit, state = setup(tmp_path)
    drained = ac.config.with_backend("web", "fd00::2", state="drained")
    state.write_text(json.dumps({"digest": ac.digest, "desired": drained.to_dict()}))
    assert intent.restore(str(state), ac, audit) == drained and audit.tail() == []


def test_an_older_agents_intent_for_other_bytes_is_discarded_and_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ac, audit, state = setup(tmp_path)
    drained = ac.config.with_backend("web", "fd00::2", state="drained")
    state.write_text(json.dumps({"digest": "0" * 64, "desired": drained.to_dict()}))
    assert intent.restore(str(state), ac, audit) is None
    (entry,) = audit.tail()
    assert entry["params"]["discarded"] == ["web: backend fd00::2 state active → drained"]
    assert "discarded: web: backend fd00::2 state active → drained" in caplog.text


def test_an_unreadable_saved_intent_is_discarded_and_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ac, audit, state = setup(tmp_path)
    state.write_text('{"desired": {"vip": "torn')
    assert intent.restore(str(state), ac, audit) is None
    (entry,) = audit.tail()
    assert entry["action"] == "discard_intent" and entry["params"]["discarded"] == []
    assert "could not be read" in entry["params"]["reason"]
    assert "(what the intent held is unknown)" in caplog.text
