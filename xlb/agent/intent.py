"""Saved operator intent and the config file: when the file "changed".

The agent keeps the operator's changes (drains, weights, added or removed backends and
VIPs) across restarts as long as the config file means what it meant when they were
saved. Meaning is the parsed config, not the bytes: comments, blank lines, key order,
a default written out or left implicit, another spelling of an address, the order of
VIPs and of backends change nothing. When the file does change, it wins, and the
operator changes it discards are listed exactly (per VIP, in the words `xlb audit`
uses) for the log and the audit log.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from xlb.api.protocol import change_text
from xlb.dataplane.config import Config


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
