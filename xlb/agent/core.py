"""The agent's state and operations: the only writer of one instance's data plane.

The operator's intent (the desired Config: VIPs, backends, weights, drained
states) is kept apart from what is applied (intent minus backends found down),
so a backend that comes back healthy returns to exactly the weight it had. Intent
survives restarts in /run/xlb/<instance>/agent.json as long as the config
file is unchanged; a changed file wins.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from xlb import statefile
from xlb.addresses import canonical_address
from xlb.agent.audit import AuditLog
from xlb.agent.health import CheckSpec
from xlb.agent.rates import Rates, RateTracker
from xlb.agent.settings import AgentConfig
from xlb.agent.watch import Owned, Watch
from xlb.api import protocol as P
from xlb.dataplane import bpfsys, lifecycle, loader
from xlb.dataplane import structs as S
from xlb.dataplane.config import Config, ConfigError, IPAddress, parse_config, vip_label
from xlb.dataplane.manager import Dataplane, key_label
from xlb.dataplane.owner import Ownership
from xlb.errors import ApplyError, RefusedError, XlbError
from xlb.paths import run_dir

HOST = socket.gethostname()
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    uid: int
    user: str
    operator: bool


View = Callable[[Config], dict[str, Any]]  # the part of a config a change touches, by VIP


class Agent:
    def __init__(self, ac: AgentConfig):
        self.settings = ac.settings
        self.name = ac.config.instance.name
        self.digest = ac.digest
        self.desired = self._saved_intent(ac.digest) or ac.config
        self.down: dict[str, str] = {}  # backend address -> why it is out (health)
        self.audit = AuditLog(ac.settings.audit_log)
        self.rates = RateTracker(history_seconds=ac.settings.history, tick=ac.settings.tick)
        self.lock = threading.Lock()
        self.started = time.time()
        self.load_result: dict[str, Any] = {}
        self.dp: Dataplane | None = None
        self.owner = Ownership(self.name)
        self.watch: Watch | None = None
        self.alarms: list[P.Alarm] = []
        self.shares: dict[str, dict[str, float]] = {}
        self.backend_ids: dict[str, int] = {}   # address -> data-plane id, as last applied
        self.vip_ids: dict[str, int] = {}       # VIP label -> counter row, as last applied
        self.listeners: list[Callable[[str, Any], None]] = []
        self.queue_count = 0
        self.reason_totals = np.zeros(0, dtype=np.uint64)
        self.changed_at: dict[str, float] = {}  # backend address -> last state/health change
        self.metrics_port = 0
        self.tick_failures = 0  # counted by the tick loop (main.Ticker)
        self.active = np.zeros(0, dtype=np.uint64)  # per backend id, from the last tick
        self.cpus: list[P.Cpu] = []                  # per-CPU load over the last tick
        self.last: P.Snapshot = self._snapshot(None)  # what readers see until the first tick

    # -- start and intent ---------------------------------------------------------
    def _state_path(self) -> str:
        return os.path.join(run_dir(self.name), "agent.json")

    def _saved_intent(self, digest: str) -> Config | None:
        try:
            with open(self._state_path()) as f:
                doc = json.load(f)
            if doc.get("digest") != digest:
                return None
            return parse_config(doc["desired"])
        except (OSError, ValueError, KeyError, ConfigError):
            return None

    def _save_intent(self) -> None:
        statefile.write_json(self._state_path(),
                             {"digest": self.digest, "desired": self.desired.to_dict()})

    def start(self) -> dict[str, Any]:
        """Become the instance's one writer, then load or adopt the data plane and apply
        the intent (all-or-nothing). A second agent of the instance stops here."""
        self.owner.acquire("agent")
        self.load_result = lifecycle.load_instance(self.effective())
        self.dp = Dataplane(self.name)
        self.watch = self._watch(self.dp)
        self._refresh_layout()
        self._save_intent()
        self.last = self._snapshot(None)
        r = self.load_result
        log.info("%s %s: %s XDP on %s (prog %s); %d VIPs, %d backends", "adopted" if
                 r["adopted"] else "loaded", self.name, r["mode"], r["interface"], r["prog_id"],
                 len(self.desired.vips), len(self.desired.backend_addresses()))
        return self.load_result

    def _watch(self, dp: Dataplane) -> Watch:
        """Keep our program open and watch that it stays attached and pinned."""
        r = self.load_result
        prog_fd = bpfsys.obj_get(os.path.join(dp.maps.dir, loader.PROG_PIN))
        owned = Owned(self.name, r["interface"], r["netns"], r["mode"], r["prog_id"], prog_fd,
                      dp.maps, os.path.dirname(dp.maps.dir))
        return Watch(owned, self.settings.tamper == "restore", self.emit)

    def close(self) -> None:
        if self.watch:
            self.watch.close()
            os.close(self.watch.owned.prog_fd)
        if self.dp:
            self.dp.close()
        self.owner.release()

    # -- what is applied -------------------------------------------------------------
    def effective(self) -> Config:
        """The intent with backends found down taken out of Maglev (no new flows).

        health_down_flows "stay": they act as drained, established flows stay on them.
        "move": they leave the applied config altogether, so the data plane invalidates
        them and their flows are rebalanced over the healthy backends.
        """
        cfg = self.desired
        move = self.settings.health_down_flows == "move"
        for vip in cfg.vips:
            for b in vip.backends:
                if str(b.address) not in self.down:
                    continue
                if move:
                    cfg = cfg.without_backend(vip.name, b.address)
                elif b.state == "active":
                    cfg = cfg.with_backend(vip.name, b.address, state="drained")
        return cfg

    def _refresh_layout(self) -> None:
        """Ids and Maglev shares as applied: read once per apply, never per tick."""
        assert self.dp is not None
        ids = {i: str(S.unpack_addr(b.addr, b.family)) for i, b in
               self.dp.backend_entries().items()}
        shares: dict[str, dict[str, float]] = {}
        vip_ids: dict[str, int] = {}
        for key, meta in self.dp.vip_entries().values():
            label = key_label(key)
            vip_ids[label] = meta.vip_id
            vals, counts = np.unique(self.dp.ring(meta.ring_slot), return_counts=True)
            total = counts.sum()
            shares[label] = {ids[int(v)]: float(c) / total
                             for v, c in zip(vals, counts, strict=True) if int(v) in ids}
        self.shares, self.vip_ids = shares, vip_ids
        self.backend_ids = {addr: i for i, addr in ids.items()}

    def _commit(self, desired: Config, down: dict[str, str]) -> None:
        """Apply new intent and/or health verdicts together; on failure keep the old ones.
        Call with the lock held."""
        old = self.desired, self.down
        before = self._backend_states()
        self.desired, self.down = desired, down
        assert self.dp is not None
        try:
            self.dp.apply(self.effective())
            self._save_intent()
        except Exception as e:
            self.desired, self.down = old
            if isinstance(e, OSError) and not isinstance(e, XlbError):
                # the maps were written, but a state file (applied.json, agent.json) was
                # not, say on a full disk: put the maps back, say what happened
                self._put_back()
                where = run_dir(self.name)
                raise ApplyError(f"not applied: the state could not be saved in {where} "
                                 f"({e.strerror or e}); the data plane is as it was") from e
            raise  # ApplyError: the data plane put itself back; anything else: a bug
        now = time.time()
        for addr, state in self._backend_states().items():
            if before.get(addr) != state:
                self.changed_at[addr] = now
        self._refresh_layout()
        self.last = self._snapshot(self.rates.last)  # readers see the change at once

    def _put_back(self) -> None:
        """Apply the intent in force again after a commit failed past the data plane."""
        assert self.dp is not None
        try:
            self.dp.apply(self.effective())
        except OSError as e:  # the maps are back; only applied.json could not be rewritten
            log.error("after a failed change: %s", e)

    def _backend_states(self) -> dict[str, tuple[Any, ...]]:
        """What an operator sees change per backend: its weight/state in each VIP, health."""
        out: dict[str, tuple[Any, ...]] = {}
        for vip in self.desired.vips:
            for b in vip.backends:
                addr = str(b.address)
                out[addr] = (*out.get(addr, ()), vip.name, b.weight, b.state)
        return {a: (*v, self.down.get(a, "up")) for a, v in out.items()}

    # -- operations -------------------------------------------------------------------
    def _targets(self, address: str, vip: str | None) -> list[str]:
        """The VIPs (`vip`, or all) that have backend `address` (in its canonical text)."""
        names = [v.name for v in self.desired.vips
                 if (vip is None or v.name == vip) and any(str(b.address) == address
                                                          for b in v.backends)]
        if not names:
            where = f"VIP {vip!r}" if vip else "any VIP"
            raise RefusedError(f"backend {address} is not in {where}")
        return names

    def _healthy_active(self, cfg: Config, vip_name: str) -> list[str]:
        vip = cfg.vip(vip_name)
        return [str(b.address) for b in vip.backends
                if b.effective_weight > 0 and str(b.address) not in self.down]

    def change_backend(self, caller: Caller, action: str, address: str, vip: str | None = None,
                       weight: int | None = None, force: bool = False) -> P.ChangeResult:
        """drain / undrain / weight on one backend (in one VIP, or every VIP that has it)."""
        address = canonical_address(address)  # any spelling; a bad one is InvalidParams
        options: dict[str, dict[str, Any]] = {
            "drain": {"state": "drained"}, "undrain": {"state": "active"},
            "weight": {"weight": weight}}
        changes = options[action]

        def plan(cfg: Config) -> tuple[Config, View]:
            names = self._targets(address, vip)
            new = cfg
            for name in names:
                new = new.with_backend(name, address, **changes)
            return new, lambda c: {n: c.vip(n).backend(address).to_dict() for n in names}

        params = {"address": address, "vip": vip, "weight": weight, "force": force}
        return self._change(caller, action, params, plan, force)

    def add_backend(self, caller: Caller, vip: str, address: str, weight: int = 1,
                    state: str = "active") -> P.ChangeResult:
        """A new backend in a VIP: it takes new flows at once (health checks follow)."""
        address = canonical_address(address)

        def plan(cfg: Config) -> tuple[Config, View]:
            new = cfg.with_added_backend(vip, address, weight=weight, state=state)
            added = new.vip(vip).backends[-1].address
            return new, lambda c: {vip: _backend_in(c, vip, added)}

        params = {"vip": vip, "address": address, "weight": weight, "state": state}
        return self._change(caller, "add_backend", params, plan)

    def remove_backend(self, caller: Caller, vip: str, address: str,
                       force: bool = False) -> P.ChangeResult:
        """Take a backend out of a VIP: no new flows from it there. Once no VIP has it, it
        is invalidated and its established flows move to other backends; while another VIP
        still has it, it acts here like a drained one (its established flows stay)."""
        address = canonical_address(address)

        def plan(cfg: Config) -> tuple[Config, View]:
            return (cfg.without_backend(vip, address),
                    lambda c: {vip: _backend_in(c, vip, address)})

        params = {"vip": vip, "address": address, "force": force}
        return self._change(caller, "remove_backend", params, plan, force)

    def add_vip(self, caller: Caller, name: str, address: str, port: int, protocol: str,
                backends: list[dict[str, Any]] | None = None) -> P.ChangeResult:
        """A new VIP, balanced at once over `backends` ({address, weight?, state?})."""
        def plan(cfg: Config) -> tuple[Config, View]:
            return (cfg.with_added_vip(name, address, port, protocol, backends or []),
                    lambda c: {name: _vip_in(c, name)})

        params = {"name": name, "address": address, "port": port, "protocol": protocol,
                  "backends": backends or []}
        return self._change(caller, "add_vip", params, plan)

    def remove_vip(self, caller: Caller, name: str) -> P.ChangeResult:
        """Stop balancing a VIP: its packets pass to the host (XDP_PASS) from now on."""
        def plan(cfg: Config) -> tuple[Config, View]:
            return cfg.without_vip(name), lambda c: {name: _vip_in(c, name)}

        return self._change(caller, "remove_vip", {"name": name}, plan)

    def _change(self, caller: Caller, action: str, params: dict[str, Any],
                plan: Callable[[Config], tuple[Config, View]],
                force: bool = False) -> P.ChangeResult:
        """Every operator change goes through here (the API lets only operators call it).
        Under the lock, `plan(intent)` gives the new intent and a view of the part it
        changes (by VIP name: the before and after of the answer and the audit). An
        unknown VIP or backend is refused; so is a change that leaves a VIP that had a
        healthy backend without one, unless `force`. The audit record is written first
        (AuditError if it cannot be: nothing changes), then the all-or-nothing commit
        (its record is taken back if it fails), then a "change" event."""
        with self.lock:
            try:
                new, view = plan(self.desired)
            except KeyError as e:  # Config's lookups: no such VIP or backend
                raise RefusedError(str(e.args[0]) if e.args else str(e)) from None
            kept = {v.name for v in self.desired.vips} & {v.name for v in new.vips}
            for name in (v.name for v in new.vips if v.name in kept):
                if (self._healthy_active(self.desired, name)
                        and not self._healthy_active(new, name) and not force):
                    subject = params.get("address") or params.get("name")
                    raise RefusedError(f"{action} {subject} would leave VIP {name} without a "
                                       "healthy backend: refused (use --force to do it "
                                       "anyway)")
            before, after = view(self.desired), view(new)
            present = {str(a) for a in new.backend_addresses()}  # a removed backend's
            down = {a: r for a, r in self.down.items() if a in present}  # verdict goes too
            # audited or not done: the record is on disk first, taken back if the commit fails
            with self.audit.change(uid=caller.uid, user=caller.user, action=action,
                                   params=params, before=before, after=after) as entry:
                self._commit(new, down)
        log.info("%s (uid %d) %s %s: %s", caller.user, caller.uid, action,
                 params.get("address") or params.get("name"), P.change_text(before, after))
        event: P.ChangeEvent = {"kind": "change", **entry}  # type: ignore[typeddict-item]
        self.emit("event", event)
        return {"vips": list(dict.fromkeys([*before, *after])), "before": before,
                "after": after}

    # -- health ------------------------------------------------------------------------------
    def health_targets(self) -> dict[str, CheckSpec]:
        """One check per backend address, from the instance's namespace."""
        st = self.settings
        if st.health == "none":
            return {}
        out: dict[str, CheckSpec] = {}
        for vip in self.desired.vips:
            port = st.health_port or (vip.port if vip.protocol == "tcp" else 0)
            for b in vip.backends:
                if port and str(b.address) not in out:
                    out[str(b.address)] = CheckSpec(
                        st.health, port, st.health_path, st.health_interval, st.health_timeout,
                        st.health_rise, st.health_fall, self.desired.instance.netns)
        return out

    def set_health(self, address: str, healthy: bool, reason: str) -> None:
        """A verdict changed: take the backend out of (or back into) Maglev. Its
        established flows stay where they are either way."""
        with self.lock:
            if healthy == (address not in self.down):
                return
            if not healthy and address not in {str(a) for a in self.desired.backend_addresses()}:
                return  # removed while its check ran: no verdict to keep for it
            down = {a: r for a, r in self.down.items() if a != address}
            if not healthy:
                down[address] = reason or "down"
            try:
                self._commit(self.desired, down)
            except Exception as e:
                log.error("health change for %s not applied: %s", address, e)
                error: P.ErrorEvent = {"kind": "error", "time": time.time(),
                                       "message": f"health change for {address} not applied: "
                                                  f"{e}"}
                self.emit("event", error)
                return
        if healthy:
            log.info("backend %s is up again: back in Maglev at its configured weight", address)
        else:
            log.warning("backend %s is down (%s): out of Maglev, %s", address, reason,
                        "its flows move" if self.settings.health_down_flows == "move"
                        else "its established flows stay")
        event: P.HealthEvent = {"kind": "health", "time": time.time(), "address": address,
                                "healthy": healthy, "reason": reason}
        self.emit("event", event)

    # -- reading ---------------------------------------------------------------------------
    def emit(self, kind: str, doc: Any) -> None:
        """Tell the listeners (the API server, the health loop): a notification of
        protocol.NOTIFICATIONS by name."""
        for listener in list(self.listeners):
            listener(kind, doc)

    def tick(self) -> P.Snapshot:
        """Read counters (batch calls, never the connection table) and build a snapshot;
        first, look that our program is still attached and pinned (and put it back)."""
        assert self.dp is not None
        if self.watch is not None:
            self.alarms = self.watch.check()
        with self.lock:
            counters = self.dp.counters()
            rates = self.rates.update(counters)
            self.active = counters.active
            self.reason_totals = counters.reasons[:, 0].copy()
            self.cpus = cpu_load()  # once per tick: each call measures since the last one
            snap = self._snapshot(rates)
        self.last = snap
        return snap

    def _snapshot(self, rates: Rates | None) -> P.Snapshot:
        """The typed snapshot of protocol.Snapshot: intent, health and the last rates."""
        ids, vip_ids = self.backend_ids, self.vip_ids
        vips: list[P.Vip] = []
        for vip in self.desired.vips:
            key = vip_label(vip.address, vip.port, vip.protocol)
            rows: list[P.Backend] = []
            for b in vip.backends:
                addr = str(b.address)
                bid = ids.get(addr)
                pps = new = 0.0
                if rates is not None and bid is not None:
                    pps, new = float(rates.backends[bid, 0]), float(rates.backends[bid, 2])
                active = (int(self.active[bid]) if bid is not None and bid < len(self.active)
                          else 0)
                rows.append({"address": addr, "weight": b.weight,
                             "state": _state(b.state, addr in self.down, pps),
                             "health": self.down.get(addr, "up"),
                             "ring_share": round(self.shares.get(key, {}).get(addr, 0.0), 6),
                             "pps": round(pps, 1), "new_connections_per_s": round(new, 1),
                             "active_connections": active,
                             "changed": self.changed_at.get(addr, 0.0)})
            vid = vip_ids.get(key)
            vips.append({"name": vip.name, "vip": key, "backends": rows,
                         "pps": round(float(rates.vips[vid, 0]), 1)
                         if rates is not None and vid is not None else 0.0,
                         "active_connections": sum(r["active_connections"] for r in rows),
                         "healthy": sum(1 for r in rows if r["health"] == "up"),
                         "total": len(rows)})
        q = rates.queues[:, 0] if rates is not None else np.zeros(S.XLB_MAX_QUEUES)
        totals = self.reason_totals
        return {"instance": self.name, "host": HOST, "lb_mode": "dsr", "time": time.time(),
                "metrics_port": self.metrics_port,
                "uptime": round(time.time() - self.started, 1),
                "xdp_mode": self.load_result.get("mode"),
                "interface": self.load_result.get("interface"),
                "totals": {"pps": round(rates.pps, 1) if rates else 0.0,
                           "bps": round(rates.bps, 1) if rates else 0.0,
                           "drop_pps": round(rates.drop_pps, 1) if rates else 0.0},
                "queues": [round(float(x), 1) for x in q[: self._queues_seen(q)]],
                "reasons": {r.label: round(float(rates.reasons[r, 0]), 1) if rates else 0.0
                            for r in S.Reason},
                "reason_totals": {r.label: int(totals[r]) if len(totals) > r else 0
                                  for r in S.Reason},
                "cpus": self.cpus,
                "vips": vips,
                "alarms": [P.Alarm(**a) for a in self.alarms],  # copies: alarms change later
                "tick_failures": self.tick_failures}

    def _queues_seen(self, q: np.ndarray) -> int:
        """Queues up to the highest that ever carried traffic: the list never shrinks."""
        used = np.nonzero(q)[0]
        if len(used):
            self.queue_count = max(self.queue_count, int(used[-1]) + 1)
        return max(self.queue_count, 1)


def _backend_in(cfg: Config, vip: str, address: IPAddress | str) -> dict[str, Any] | None:
    try:
        return cfg.vip(vip).backend(address).to_dict()
    except KeyError:
        return None


def _vip_in(cfg: Config, name: str) -> dict[str, Any] | None:
    try:
        return cfg.vip(name).to_dict()
    except KeyError:
        return None


def cpu_load() -> list[P.Cpu]:
    """Per-CPU busy and softirq percent since the previous call (the previous tick).

    Softirq is where XDP and the network stack run, so a CPU hot with softirq is
    a hot RX queue's CPU.
    """
    out: list[P.Cpu] = []
    for c in psutil.cpu_times_percent(interval=None, percpu=True):
        idle = c.idle + getattr(c, "iowait", 0.0)
        out.append({"busy": round(max(0.0, 100.0 - idle), 1),
                    "softirq": round(getattr(c, "softirq", 0.0), 1)})
    return out


def _state(configured: str, down: bool, pps: float) -> P.BackendState:
    if down:
        return "down"
    if configured == "drained":
        return "draining" if pps > 0 else "drained"
    return "active"
