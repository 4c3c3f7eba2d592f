"""The config schema (xlb/schema.py): one declaration per key, and the README's settings
blocks held to it, key by key, value by value, comment by comment."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from typing import Any

import pytest

from tests.helpers import REPO
from xlb.agent.health import CheckSpec
from xlb.agent.settings import AgentSettings, check_settings
from xlb.bgp.settings import check_bgp
from xlb.dataplane.config import BackendConfig, InstanceConfig, parse_config
from xlb.dataplane.loader import Geometry
from xlb.schema import (
    AGENT,
    BACKEND,
    BGP,
    BGP_NEIGHBOR,
    INSTANCE,
    PROBES,
    REQUIRED,
    TABLES,
    TRACE,
    VIP,
    Checker,
    Table,
)

# --------------------------------------------------------------------- the README blocks

_LINE_RE = re.compile(r'^(\w+) = ("(?:[^"\\]|\\.)*"|[^\s#]+)\s*(?:#\s?(.*))?$')


def readme_block(heading: str) -> str:
    """The first ```toml block after `heading` in the README."""
    text = (REPO / "README.md").read_text()
    start = text.index("```toml\n", text.index(heading)) + len("```toml\n")
    return text[start:text.index("```", start)]


def comments(block: str) -> dict[tuple[str, str], str]:
    """(table, key) -> the line's comment ("" if none), for every key line of a block."""
    table, out = "", {}
    for line in block.splitlines():
        if line.startswith("["):
            table = line.strip("[]")
        elif m := _LINE_RE.match(line):
            out[(table, m.group(1))] = (m.group(3) or "").strip()
    return out


AGENT_BLOCK = "### Agent settings: the `[agent]` table in the instance config"
CONFIG_BLOCK = "### Config (TOML)"
PROBES_BLOCK = "### Probe settings: the `[probes]` table in the instance config"
TRACE_BLOCK = "### Trace settings: the `[trace]` table in the instance config"
BGP_BLOCK = "### BGP settings: the `[bgp]` table in the instance config"


def readme_tables() -> list[tuple[Table, dict[str, Any], dict[tuple[str, str], str]]]:
    """Each declared table with the README's keys for it and the block's comments."""
    agent_text, config_text = readme_block(AGENT_BLOCK), readme_block(CONFIG_BLOCK)
    agent, config = tomllib.loads(agent_text), tomllib.loads(config_text)
    vip = config["vip"][0]
    bgp_text = readme_block(BGP_BLOCK)
    bgp = tomllib.loads(bgp_text)["bgp"]
    return [(INSTANCE, config["instance"], comments(config_text)),
            (VIP, vip, comments(config_text)),
            (BACKEND, vip["backend"][0], comments(config_text)),
            (AGENT, agent["agent"], comments(agent_text)),
            (PROBES, tomllib.loads(readme_block(PROBES_BLOCK))["probes"],
             comments(readme_block(PROBES_BLOCK))),
            (TRACE, tomllib.loads(readme_block(TRACE_BLOCK))["trace"],
             comments(readme_block(TRACE_BLOCK))),
            (BGP, bgp, comments(bgp_text)),
            (BGP_NEIGHBOR, bgp["neighbor"][0], comments(bgp_text))]


@pytest.mark.parametrize("index", range(len(TABLES)), ids=[t.name for t in TABLES])
def test_the_readme_shows_every_key_and_no_other(index: int) -> None:
    table, shown, _ = readme_tables()[index]
    missing = [k for k in table.keys if k not in shown]
    unknown = [k for k in shown if k not in table.keys]
    assert not missing, f"the README's [{table.name}] block lacks {missing}"
    assert not unknown, f"the README's [{table.name}] block shows undeclared keys {unknown}"


@pytest.mark.parametrize("index", range(len(TABLES)), ids=[t.name for t in TABLES])
def test_the_readme_shows_the_defaults(index: int) -> None:
    table, shown, _ = readme_tables()[index]
    for s in table.settings:
        if s.default is REQUIRED or s.default is None:
            continue
        assert s.name in shown, f"the README's [{table.name}] block lacks {s.name}"
        got = shown[s.name]
        assert (got, type(got)) == (s.default, type(s.default)), (
            f"README: {table.name}.{s.name} = {got!r}, but its default is {s.default!r}")


@pytest.mark.parametrize("index", range(len(TABLES)), ids=[t.name for t in TABLES])
def test_the_readme_comments_are_the_docs(index: int) -> None:
    table, _, notes = readme_tables()[index]
    for s in table.settings:
        assert notes.get((table.name, s.name)) == s.summary, (
            f"README: the comment on {table.name}.{s.name} should read {s.summary!r}")


def test_the_readme_blocks_are_valid_configs() -> None:
    cfg = parse_config(tomllib.loads(readme_block(CONFIG_BLOCK)))
    ck = Checker()
    settings = check_settings(ck, tomllib.loads(readme_block(AGENT_BLOCK))["agent"],
                              cfg.instance.name)
    assert ck.errors == [] and settings is not None
    bgp = check_bgp(ck, tomllib.loads(readme_block(BGP_BLOCK))["bgp"], cfg)
    assert ck.errors == [] and bgp is not None and bgp.announce == ("web",)


# ------------------------------------------------------------------- the declarations


def test_every_table_declares_each_key_once_with_a_doc() -> None:
    for table in TABLES:
        assert len(set(table.keys)) == len(table.keys), table.name
        for s in table.settings:
            assert s.doc and "\n" not in s.doc, f"{table.name}.{s.name} needs a one-line doc"
            assert not (s.bounds and s.kind == "string"), f"{table.name}.{s.name}"
            assert not (s.choices and s.kind != "string"), f"{table.name}.{s.name}"


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_default_passes_its_own_checks(table: Table) -> None:
    """Written out, a default reads back as the value an absent key gets."""
    for s in table.settings:
        if s.default is REQUIRED or s.default is None:
            continue
        ck = Checker()
        assert ck.value({s.name: s.default}, table.name, s) == ck.value({}, table.name, s)
        assert ck.errors == [], ck.errors


def test_the_defaults_have_not_moved() -> None:
    """The defaults operators rely on (a change here changes running systems)."""
    assert {s.name: s.default for s in INSTANCE.settings if s.default is not REQUIRED} == {
        "netns": "", "xdp_mode": "native", "ring_size": 65537, "max_vips": 64,
        "max_backends": 4096, "max_connections": 262144, "trace_buffer_kib": 1024, "mtu": 1500,
        "flow_table_turnover": 10.0, "nexthop_mac": "",
        "encap_source_v4": "172.16.0.0/16", "encap_source_v6": "fd00:5f1b::/64",
        "snat_pool_v4": "", "snat_pool_v6": "", "snat_port_min": 1024, "snat_port_max": 65535,
        "snat_table_size": 0, "snat_tcp_timeout": 7440, "snat_udp_timeout": 60,
        "snat_close_timeout": 10}
    assert VIP["mode"].default == "dsr"
    assert (BACKEND["weight"].default, BACKEND["state"].default) == (1, "active")
    assert {s.name: s.default for s in AGENT.settings} == {
        "socket": "", "tick": 1.0, "history": 300.0, "operator_group": "xlb",
        "socket_group": "", "max_clients": 128, "max_clients_per_user": 16,
        "client_idle_timeout": 60.0, "client_send_timeout": 10.0,
        "audit_log": "", "metrics": "127.0.0.1:9465", "health": "tcp",
        "health_port": 0, "health_path": "/", "health_interval": 1.0, "health_timeout": 0.5,
        "health_rise": 2, "health_fall": 2, "health_down_flows": "move",
        "health_panic_threshold": 25, "tamper": "restore"}
    assert {s.name: s.default for s in (*BGP.settings, *BGP_NEIGHBOR.settings)
            if s.default is not REQUIRED} == {
        "announce": None, "next_hop": "self", "next_hop6": "self", "exabgp": "",
        "hold_time": 9, "local_address": "", "passive": False}


def test_the_models_take_their_defaults_from_the_schema() -> None:
    inst = InstanceConfig(name="a", interface="eth0")
    for s in INSTANCE.settings:
        if s.default is not REQUIRED:
            assert getattr(inst, s.name) == s.value, s.name
    b = BackendConfig(parse_config({"instance": {"name": "a", "interface": "e"}})
                      .instance.encap_source_v4.network_address)
    assert (b.weight, b.state) == (BACKEND.default("weight"), BACKEND.default("state"))
    spec = CheckSpec("tcp", 80)
    assert (spec.path, spec.interval, spec.timeout, spec.rise, spec.fall) == tuple(
        AGENT.default(k) for k in ("health_path", "health_interval", "health_timeout",
                                   "health_rise", "health_fall"))


def test_agent_settings_have_one_field_per_key_and_no_defaults_of_their_own() -> None:
    fields = dataclasses.fields(AgentSettings)
    assert [f.name for f in fields] == list(AGENT.keys)
    assert all(f.default is dataclasses.MISSING for f in fields)


def test_geometry_has_no_defaults_of_its_own() -> None:
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(Geometry))


def test_summary_says_the_constraints() -> None:
    assert INSTANCE["ring_size"].summary == (
        "Maglev ring size, a prime, >= 100 x the backends of any VIP; 13..1048573")
    assert INSTANCE["name"].summary.endswith("; required")
    assert AGENT["health"].summary.endswith("; tcp | http | none")
    assert AGENT["health_rise"].summary.endswith("; >= 1")
    assert AGENT["health_interval"].summary.endswith("; > 0")
