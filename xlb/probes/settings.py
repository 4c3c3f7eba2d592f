"""The [probes] table of the instance config: which probes the agent attaches at start
(keys declared in xlb/schema.py's PROBES, read by the one checker)."""

from __future__ import annotations

from dataclasses import dataclass, field

from xlb.schema import PROBES, Checker


@dataclass(frozen=True)
class ProbeSettings:
    wanted: dict[str, str] = field(default_factory=lambda: {
        s.name: s.default for s in PROBES.settings if s.kind == "string"})
    auto_cpu_percent: float = PROBES.default("auto_cpu_percent")


def check_probes(ck: Checker, raw: object) -> ProbeSettings | None:
    """Record the [probes] table's problems in `ck`; the settings if it has none."""
    before = len(ck.errors)
    tbl = ck.table(raw, "probes", PROBES.keys)
    if tbl is None:
        return None
    values = ck.read(tbl, "probes", PROBES)
    if len(ck.errors) > before:
        return None
    cpu = values.pop("auto_cpu_percent")
    return ProbeSettings(values, cpu)
