"""Saved operator intent and the config file: when the file "changed".

The agent keeps the operator's changes (drains, weights, added or removed backends and
VIPs) across restarts as long as the config file means what it meant when they were
saved. Meaning is the parsed config, not the bytes: comments, blank lines, key order,
a default written out or left implicit, another spelling of an address, the order of
VIPs and of backends change nothing. When the file does change, it wins, and the
operator changes it discards are listed exactly (per VIP, in the words `xlb audit`
uses) in the log and the audit log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from xlb.agent.audit import AuditLog
from xlb.agent.settings import AgentConfig
from xlb.api.protocol import change_text
from xlb.dataplane.config import Config, ConfigError, parse_config
from xlb.errors import XlbError

log = logging.getLogger(__name__)


def restore(path: str, ac: AgentConfig, audit: AuditLog) -> Config | None:
    """The intent saved in `path` by the last agent, if the config file still means what
    it meant then; otherwise None: the file wins, and what that discards is logged
    (WARNING) and audited, exactly."""
    where = ac.path or "the config file"
    try:
        with open(path) as f:
            doc = json.load(f)
        desired = parse_config(doc["desired"])
        base = parse_config(doc["base"]) if "base" in doc else None
    except (FileNotFoundError, NotADirectoryError):  # never saved: nothing to discard
        return None
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as e:
        _discard(ac, audit, f"{path} could not be read ({e})", None, None)
        return None
    if doc.get("meaning") == meaning(ac.config) or doc.get("digest") == ac.digest:
        if doc.get("meaning") and doc.get("file") not in (None, ac.digest):
            log.info("%s was edited without changing what it says: the saved intent "
                     "(drains, weights, added and removed backends and VIPs) is kept", where)
        return desired
    # what the operator changed since the file was read (all of it, if that is unknown)
    _discard(ac, audit, f"{where} changed since the intent was saved",
             *differences(base or ac.config, desired))
    return None


def _discard(ac: AgentConfig, audit: AuditLog, why: str, base: dict[str, Any] | None,
             saved: dict[str, Any] | None) -> None:
    """Say that the saved intent is dropped and what the operator had changed that is
    lost. `base` and `saved`: the VIP tables that differ between the config the intent
    started from and the saved intent (None if it could not be read)."""
    where = ac.path or "the config file"
    if base is not None and saved is not None and not base:
        log.info("saved intent replaced by %s: %s; it held no operator changes", where, why)
        return
    lost = lines(base, saved) if base is not None and saved is not None else []
    log.warning("saved intent discarded: %s; %s applies as written%s", why, where,
                "" if lost else " (what the intent held is unknown)")
    for line in lost:
        log.warning("discarded: %s", line)
    before = saved or {}  # what ran, and what runs now, in the VIPs concerned
    file = {v.name: v.to_dict() for v in ac.config.vips}
    try:
        audit.record(uid=os.getuid(), user="agent", action="discard_intent",
                     params={"name": ac.config.instance.name, "config": ac.path,
                             "reason": why, "discarded": lost},
                     before=before, after={n: file.get(n) for n in before})
    except XlbError as e:
        log.error("the discarded intent could not be audited: %s", e)


def meaning(cfg: Config) -> str:
    """A digest of what `cfg` says, blind to how the file says it."""
    doc = cfg.to_dict()
    doc["vip"] = sorted(({**v, "backend": sorted(v["backend"], key=lambda b: b["address"])}
                         for v in doc["vip"]), key=lambda v: v["name"])
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def differences(old: Config, new: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The VIP tables that differ between `old` and `new`, by VIP name, as a change's
    before and after (None where a VIP is absent)."""
    a = {v.name: v.to_dict() for v in old.vips}
    b = {v.name: v.to_dict() for v in new.vips}
    names = [n for n in dict.fromkeys([*a, *b]) if _key(a.get(n)) != _key(b.get(n))]
    return {n: a.get(n) for n in names}, {n: b.get(n) for n in names}


def lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """One line per VIP: "web: backend 10.0.1.2 state active → drained"."""
    return [change_text({n: before[n]}, {n: after[n]}) for n in before]


def _key(vip: dict[str, Any] | None) -> Any:
    """A VIP table without the order of its backends."""
    if vip is None:
        return None
    return {**vip, "backend": sorted(vip["backend"], key=lambda b: b["address"])}
