"""The agent's config file: the instance config plus an optional [agent] table.

The [agent] keys (kind, default, range, doc) are declared once in xlb/schema.py
(`AGENT`) and read by the same checker as the data plane's tables, so a file's
problems, wherever they are, come out as one list in one style. This module adds what
depends on more than one key or on the instance: history >= tick, the health check's
own rules (`CheckSpec`), and the per-instance socket and audit log paths.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from xlb.agent.health import CheckSpec
from xlb.bgp.settings import BgpSettings, check_bgp
from xlb.dataplane.config import Config, check_config, in_file, read_toml
from xlb.paths import default_audit_log, default_socket
from xlb.probes.settings import ProbeSettings, check_probes
from xlb.schema import AGENT, BAD, TRACE, Checker, ok, show


@dataclass(frozen=True)
class AgentSettings:
    """The checked [agent] table (one field per key of `AGENT`, defaults applied there)."""

    socket: str
    tick: float
    history: float
    operator_group: str
    socket_group: str
    max_clients: int
    max_clients_per_user: int
    client_idle_timeout: float
    client_send_timeout: float
    audit_log: str
    metrics: str
    health: str
    health_port: int
    health_path: str
    health_interval: float
    health_timeout: float
    health_rise: int
    health_fall: int
    health_down_flows: str
    health_panic_threshold: int
    tamper: str


@dataclass(frozen=True)
class TraceSettings:
    """The checked [trace] table (one field per key of `TRACE`)."""

    history: int = TRACE.default("history")
    forward_rate: int = TRACE.default("forward_rate")
    seconds: int = TRACE.default("seconds")
    max_seconds: int = TRACE.default("max_seconds")


@dataclass(frozen=True)
class AgentConfig:
    settings: AgentSettings
    config: Config
    digest: str  # of the file's bytes (saved intent compares meanings, see intent.py)
    path: str = ""  # the file, for messages
    probes: ProbeSettings = ProbeSettings()  # the [probes] table
    trace: TraceSettings = TraceSettings()   # the [trace] table
    bgp: BgpSettings | None = None           # the [bgp] table (None: no BGP speaker)


def _check_history(ck: Checker, tick: float, history: float) -> None:
    if BAD not in (tick, history) and history < tick:
        ck.err("agent.history", f"{show(history)} must be >= agent.tick ({show(tick)})")


def _check_health(ck: Checker, values: dict) -> None:
    """CheckSpec's rules across keys (timeout <= interval, the path), once each key is
    fine on its own; with health = "none" nothing is checked, as nothing runs."""
    health = {k: v for k, v in values.items() if k.startswith("health")}
    if health["health"] == "none" or not ok(health):
        return
    try:
        CheckSpec(health["health"], health["health_port"] or 1, health["health_path"],
                  health["health_interval"], health["health_timeout"], health["health_rise"],
                  health["health_fall"])
    except ValueError as e:
        ck.err("agent", str(e))


def check_settings(ck: Checker, raw: object, instance: str) -> AgentSettings | None:
    """Record the [agent] table's problems in `ck`; the settings if it has none."""
    before = len(ck.errors)
    tbl = ck.table(raw, "agent", AGENT.keys)
    if tbl is None:
        return None
    values = ck.read(tbl, "agent", AGENT)
    _check_history(ck, values["tick"], values["history"])
    _check_health(ck, values)
    if len(ck.errors) > before:
        return None
    values["socket"] = values["socket"] or default_socket(instance)
    values["audit_log"] = values["audit_log"] or default_audit_log(instance)
    return AgentSettings(**values)


def check_trace(ck: Checker, raw: object) -> TraceSettings | None:
    """Record the [trace] table's problems in `ck`; the settings if it has none."""
    before = len(ck.errors)
    tbl = ck.table(raw, "trace", TRACE.keys)
    if tbl is None:
        return None
    values = ck.read(tbl, "trace", TRACE)
    if BAD not in (values["seconds"], values["max_seconds"]) and (
            values["seconds"] > values["max_seconds"]):
        ck.err("trace.seconds", f"{show(values['seconds'])} must be <= trace.max_seconds "
               f"({show(values['max_seconds'])})")
    if len(ck.errors) > before:
        return None
    return TraceSettings(**values)


def load(path: str) -> AgentConfig:
    """Read and check the whole file; ConfigError lists every problem, each with the path."""
    raw, data = read_toml(path)
    ck = Checker()
    cfg = check_config(ck, data, other_tables=("agent", "probes", "trace", "bgp"))
    settings = check_settings(ck, data.get("agent", {}), cfg.instance.name if cfg else "")
    probes = check_probes(ck, data.get("probes", {}))
    trace = check_trace(ck, data.get("trace", {}))
    bgp = check_bgp(ck, data["bgp"], cfg) if "bgp" in data else None
    if (cfg is None or settings is None or probes is None or trace is None
            or ("bgp" in data and bgp is None)):
        raise in_file(path, ck.errors)
    return AgentConfig(settings, cfg, hashlib.sha256(raw).hexdigest(), path, probes, trace,
                       bgp)
