"""The agent's config file: the instance config plus an optional [agent] table.

    [agent]
    socket = "/run/xlb/lb1.sock"   # default: /run/xlb/<instance>.sock
    tick = 1.0                      # counter poll interval, seconds (0.25 .. 10)
    history = 300                   # seconds of rates kept for sparklines
    operator_group = "xlb"          # members (and root) may change things
    socket_group = ""               # group owning the socket (default: operator_group)
    audit_log = ""                  # default: /var/lib/xlb/<instance>/audit.jsonl
    metrics = "127.0.0.1:9465"      # Prometheus exporter, host:port ("" = off)
    health = "tcp"                  # tcp | http | none: one check per backend address
    health_port = 0                 # default: the port of the first TCP VIP with the backend
    health_path = "/"               # for http
    health_interval = 1.0           # seconds; timeout <= interval
    health_timeout = 0.5
    health_rise = 2                 # consecutive results that change the verdict
    health_fall = 2
    health_down_flows = "stay"      # stay: a down backend's established flows stay on it;
                                    # move: they are rebalanced over the healthy backends

Everything else in the file is the data plane config (xlb/dataplane/config.py).
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, replace
from typing import Any

from xlb.agent.health import CheckSpec
from xlb.dataplane.config import Config, ConfigError, parse_config
from xlb.paths import STATE_ROOT, default_socket

KEYS = ("socket", "tick", "history", "operator_group", "socket_group", "audit_log", "metrics",
        "health",
        "health_port", "health_path", "health_interval", "health_timeout", "health_rise",
        "health_fall", "health_down_flows")


@dataclass(frozen=True)
class AgentSettings:
    socket: str
    tick: float
    history: float
    operator_group: str
    socket_group: str
    audit_log: str
    metrics: str = "127.0.0.1:9465"
    health: str = "tcp"
    health_port: int = 0
    health_path: str = "/"
    health_interval: float = 1.0
    health_timeout: float = 0.5
    health_rise: int = 2
    health_fall: int = 2
    health_down_flows: str = "stay"


@dataclass(frozen=True)
class AgentConfig:
    settings: AgentSettings
    config: Config
    digest: str  # of the file, to know whether saved runtime state still belongs to it


def _settings(raw: Any, instance: str) -> AgentSettings:
    errors = []
    if not isinstance(raw, dict):
        raise ConfigError(["agent: expected a table"])
    for key in raw:
        if key not in KEYS:
            errors.append(f"agent: unknown key {key!r}")

    def get(key: str, kind: type, default: Any) -> Any:
        value = raw.get(key, default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            errors.append(f"agent.{key}: expected {kind.__name__}, got {value!r}")
            return default
        return value

    tick = get("tick", float, 1.0)
    if not 0.25 <= tick <= 10:
        errors.append(f"agent.tick: {tick} is out of range 0.25..10 seconds")
    history = get("history", float, 300.0)
    if not tick <= history <= 86400:
        errors.append(f"agent.history: {history} is out of range tick..86400 seconds")
    s = AgentSettings(
        socket=get("socket", str, "") or default_socket(instance), tick=tick, history=history,
        operator_group=get("operator_group", str, "xlb"),
        socket_group=get("socket_group", str, ""),
        audit_log=get("audit_log", str, "")
        or os.path.join(STATE_ROOT, instance, "audit.jsonl"))
    health = dict(health=get("health", str, "tcp"), health_port=get("health_port", int, 0),
                  health_path=get("health_path", str, "/"),
                  health_interval=get("health_interval", float, 1.0),
                  health_timeout=get("health_timeout", float, 0.5),
                  health_rise=get("health_rise", int, 2), health_fall=get("health_fall", int, 2),
                  health_down_flows=get("health_down_flows", str, "stay"))
    metrics = get("metrics", str, "127.0.0.1:9465")
    host, _, port = metrics.rpartition(":")
    if metrics and not (host and port.isdigit() and int(port) <= 65535):
        errors.append(f"agent.metrics: {metrics!r} is not host:port (\"\" turns it off)")
    health["metrics"] = metrics
    if health["health_down_flows"] not in ("stay", "move"):
        errors.append(f"agent.health_down_flows: {health['health_down_flows']!r} is not stay or "
                      "move")
    if health["health"] not in ("tcp", "http", "none"):
        errors.append(f"agent.health: {health['health']!r} is not tcp, http or none")
    if health["health"] != "none":
        try:
            CheckSpec(health["health"], health["health_port"] or 1, health["health_path"],
                      health["health_interval"], health["health_timeout"],
                      health["health_rise"], health["health_fall"])
        except ValueError as e:
            errors.append(f"agent: {e}")
    if errors:
        raise ConfigError(errors)
    return replace(s, **health)


def load(path: str) -> AgentConfig:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}: {e}"]) from None
    agent = data.pop("agent", {})
    errors: list[str] = []
    cfg = None
    try:
        cfg = parse_config(data)
    except ConfigError as e:
        errors += e.errors
    name = cfg.instance.name if cfg else "xlb"
    try:
        settings = _settings(agent, name)
    except ConfigError as e:
        errors += e.errors
    if errors or cfg is None:
        raise ConfigError([f"{path}: {e}" for e in errors])
    return AgentConfig(settings, cfg, hashlib.sha256(raw).hexdigest())
