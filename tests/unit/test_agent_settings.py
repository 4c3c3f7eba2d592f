"""The [agent] table: checked by the same checker as the rest of the file, in its style,
with the defaults of the schema; and a whole file's problems in one ConfigError."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from xlb.agent.settings import AgentSettings, check_settings, load
from xlb.errors import ConfigError
from xlb.paths import STATE_ROOT, default_socket
from xlb.schema import AGENT, Checker

INSTANCE = '[instance]\nname = "lb1"\ninterface = "eth0"\n'


def settings(**agent: Any) -> AgentSettings:
    ck = Checker()
    s = check_settings(ck, agent, "lb1")
    assert ck.errors == [] and s is not None, ck.errors
    return s


def errors(raw: Any) -> list[str]:
    ck = Checker()
    assert check_settings(ck, raw, "lb1") is None
    return ck.errors


def test_an_empty_table_gets_every_default_of_the_schema() -> None:
    s = settings()
    for setting in AGENT.settings:
        if setting.name not in ("socket", "audit_log"):
            assert getattr(s, setting.name) == setting.default, setting.name
    assert s.socket == default_socket("lb1")
    assert s.audit_log == os.path.join(STATE_ROOT, "lb1", "audit.jsonl")


def test_a_file_without_agent_table_gets_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "lb1.toml"
    path.write_text(INSTANCE)
    assert load(str(path)).settings == settings()


@pytest.mark.parametrize(("agent", "want"), [
    ({"tick": 0.25}, {"tick": 0.25}),
    ({"tick": 10, "history": 10}, {"tick": 10.0, "history": 10.0}),  # integers are numbers
    ({"history": 86400}, {"history": 86400.0}),
    ({"metrics": ""}, {"metrics": ""}),
    ({"metrics": "127.0.0.1:0"}, {"metrics": "127.0.0.1:0"}),
    ({"metrics": "[::1]:9465"}, {"metrics": "[::1]:9465"}),
    ({"metrics": "unix:/run/xlb/m.sock"}, {"metrics": "unix:/run/xlb/m.sock"}),
    ({"max_clients": 8, "max_clients_per_user": 1, "client_idle_timeout": 0.5,
      "client_send_timeout": 3600},
     {"max_clients": 8, "max_clients_per_user": 1, "client_idle_timeout": 0.5,
      "client_send_timeout": 3600.0}),
    ({"health": "none", "health_path": "no slash"}, {"health_path": "no slash"}),
    ({"health": "http", "health_port": 8080, "health_path": "/healthz"},
     {"health": "http", "health_port": 8080, "health_path": "/healthz"}),
    ({"health_interval": 0.5, "health_timeout": 0.5}, {"health_timeout": 0.5}),
    ({"health_down_flows": "stay"}, {"health_down_flows": "stay"}),
    ({"health_panic_threshold": 0}, {"health_panic_threshold": 0}),
    ({"health_panic_threshold": 100}, {"health_panic_threshold": 100}),
    ({"socket": "/tmp/a.sock", "audit_log": "/tmp/a.jsonl"},
     {"socket": "/tmp/a.sock", "audit_log": "/tmp/a.jsonl"}),
])
def test_valid_values(agent: dict[str, Any], want: dict[str, Any]) -> None:
    s = settings(**agent)
    assert {k: getattr(s, k) for k in want} == want
    assert all(type(getattr(s, k)) is type(v) for k, v in want.items())


@pytest.mark.parametrize(("agent", "message"), [
    ({"tick": 0.01}, "agent.tick: 0.01 is out of range 0.25..10"),
    ({"tick": 11}, "agent.tick: 11.0 is out of range 0.25..10"),
    ({"tick": "1"}, "agent.tick: expected a number, got '1'"),
    ({"tick": True}, "agent.tick: expected a number, got True"),
    ({"tick": float("nan")}, "agent.tick: expected a finite number, got nan"),
    ({"history": 86401}, "agent.history: 86401.0 is out of range 0.25..86400"),
    ({"history": 0.5}, "agent.history: 0.5 must be >= agent.tick (1.0)"),
    ({"socket": 5}, "agent.socket: expected a string, got 5"),
    ({"metrics": "nowhere"},
     "agent.metrics: 'nowhere' is not host:port or unix:PATH (\"\" turns it off)"),
    ({"metrics": "h:65536"},
     "agent.metrics: 'h:65536' is not host:port or unix:PATH (\"\" turns it off)"),
    ({"metrics": "unix:relative.sock"},
     "agent.metrics: 'unix:relative.sock': unix: needs an absolute path (at most 107 bytes)"),
    ({"max_clients": 4}, "agent.max_clients: 4 is out of range 8..65536"),
    ({"max_clients_per_user": 0}, "agent.max_clients_per_user: 0 is out of range 1..65536"),
    ({"client_idle_timeout": 0}, "agent.client_idle_timeout: 0.0 is out of range 0.5..86400"),
    ({"health": "ping"}, "agent.health: 'ping' is not 'tcp', 'http' or 'none'"),
    ({"health_down_flows": "drop"}, "agent.health_down_flows: 'drop' is not 'move' or 'stay'"),
    ({"health_panic_threshold": 101}, "agent.health_panic_threshold: 101 is out of range 0..100"),
    ({"health_panic_threshold": 0.5},
     "agent.health_panic_threshold: expected an integer, got 0.5"),
    ({"health_port": 65536}, "agent.health_port: 65536 is out of range 0..65535"),
    ({"health_port": 1.5}, "agent.health_port: expected an integer, got 1.5"),
    ({"health_rise": 0}, "agent.health_rise: 0 must be >= 1"),
    ({"health_fall": -1}, "agent.health_fall: -1 must be >= 1"),
    ({"health_interval": 0}, "agent.health_interval: 0.0 must be > 0"),
    ({"health_timeout": 2.0},
     "agent: health check timeout must be > 0 s and <= the interval (1.0 s), not 2.0"),
    ({"health": "http", "health_path": "healthz"},
     "agent: health check path must start with '/' and contain no whitespace, not 'healthz'"),
    ({"tikc": 1.0}, "agent: unknown key 'tikc'"),
])
def test_one_error_in_the_shared_style(agent: dict[str, Any], message: str) -> None:
    assert errors(agent) == [message]


def test_not_a_table() -> None:
    assert errors(5) == ["agent: expected a table, got 5"]


def test_every_problem_of_the_table_at_once() -> None:
    assert errors({"x": 1, "tick": 0, "metrics": 1, "health": "ping", "health_rise": 0}) == [
        "agent: unknown key 'x'",
        "agent.tick: 0.0 is out of range 0.25..10",
        "agent.metrics: expected a string, got 1",
        "agent.health: 'ping' is not 'tcp', 'http' or 'none'",
        "agent.health_rise: 0 must be >= 1",
    ]


def test_a_whole_file_is_one_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('extra = 1\n[agent]\ntick = 0.01\nhealth = "ping"\nx = 1\n'
                    '[instance]\nname = "LB"\ninterface = "eth0"\nmtu = 100\n'
                    '[[vip]]\naddress = "10.0.0.1"\nport = 80\nprotocol = "sctp"\n'
                    '[[vip.backend]]\naddress = "10.0.0.1"\nweight = -1\n')
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert info.value.errors == [f"{path}: {e}" for e in [
        "config: unknown key 'extra'",
        "instance.name: 'LB' does not match ^[a-z0-9][a-z0-9_-]{0,30}$",
        "instance.mtu: 100 is out of range 576..3522",
        "vip[0].protocol: 'sctp' is not 'tcp' or 'udp'",
        "vip[0].backend[0].weight: -1 is out of range 0..65535",
        "vip[0].backend[0].address: 10.0.0.1 is a VIP address (vip[0])",
        "agent: unknown key 'x'",
        "agent.tick: 0.01 is out of range 0.25..10",
        "agent.health: 'ping' is not 'tcp', 'http' or 'none'",
    ]]


def test_agent_errors_come_even_when_the_instance_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[agent]\ntick = 99\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert info.value.errors == [f"{path}: instance: missing required table [instance]",
                                 f"{path}: agent.tick: 99.0 is out of range 0.25..10"]


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing.toml: cannot read"):
        load(str(tmp_path / "nothing.toml"))
    path = tmp_path / "syntax.toml"
    path.write_text(INSTANCE + "[agent]\ntick = \n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert info.value.errors[0].startswith(f"{path}:5:")
