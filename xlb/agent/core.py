"""The agent's state and operations: the only writer of one instance's data plane.

The operator's intent (the desired Config: VIPs, backends, weights, drained
states) is kept apart from what is applied (intent minus backends found down),
so a backend that comes back healthy returns to exactly the weight it had
(xlb/agent/applied.py: what a down verdict does, and the fail-open rule). Intent
survives restarts in /run/xlb/<instance>/agent.json as long as the config file
means the same (xlb/agent/intent.py); a changed file wins.

Health verdicts arrive one by one but are applied once per tick, together, so a
thousand backends failing at once cost one apply, not a thousand.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import psutil

from xlb import __version__, statefile
from xlb.addresses import canonical_address
from xlb.agent import intent
from xlb.agent.applied import Applied, Rules, applied, text
from xlb.agent.audit import AuditLog
from xlb.agent.audit import takeover as audit_takeover
from xlb.agent.health import CheckSpec
from xlb.agent.metrics import Counted, Published
from xlb.agent.rates import (
    SNAT_NO_PORT,
    SNAT_PACKETS,
    SNAT_REPLY_PACKETS,
    SNAT_TRANSLATIONS,
    Rates,
    RateTracker,
)
from xlb.agent.settings import AgentConfig
from xlb.agent.trace import Trace
from xlb.agent.trace_source import DataplaneSource
from xlb.agent.watch import Owned, Watch
from xlb.api import protocol as P
from xlb.bgp.control import BgpControl
from xlb.dataplane import bpfsys, lifecycle, loader, xdp
from xlb.dataplane import structs as S
from xlb.dataplane.config import Config, ConfigError, IPAddress, vip_label
from xlb.dataplane.manager import ApplyResult, Dataplane, key_label
from xlb.dataplane.owner import Ownership
from xlb.errors import ApplyError, AttachError, RefusedError, XlbError
from xlb.paths import run_dir
from xlb.probes.manager import ProbeManager

HOST = socket.gethostname()
LOGGED_TRANSITIONS = 20  # health transitions logged one by one per tick; the rest summed up
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
        self.base = ac.config  # the file's config: intent starts from it
        self.audit = AuditLog(ac.settings.audit_log)
        self.desired = intent.restore(self._state_path(), ac, self.audit) or ac.config
        self.rules = Rules(ac.settings.health_down_flows, ac.settings.health_panic_threshold)
        self.down: dict[str, str] = {}  # backend address -> why it is out (health)
        self.down_since: dict[str, int] = {}  # backend address -> tick it went down in
        self.panic: dict[str, tuple[int, int]] = {}  # VIP -> (healthy, serving), failing open
        self.ticks = 0
        self._due: int | None = None  # the tick that must commit again: flows may move
        self._pending: dict[str, tuple[bool, str]] = {}  # verdicts the next tick commits
        self._pending_lock = threading.Lock()
        self._purge: set[tuple[str, str]] = set()   # (VIP, address): flows to drop
        self._purger: threading.Thread | None = None  # drops them, started when needed
        self._purge_asked = threading.Event()       # a tick found flows to drop
        self._clean: set[tuple[str, str]] = set()   # (VIP, address): flows dropped
        self._present_of: tuple[Config | None, set[str]] = (None, set())
        self.stopping = threading.Event()            # set on SIGTERM: long work gives up
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
        self.no_port_totals = np.zeros(0, dtype=np.uint64)  # per VIP row, from the last tick
        self.xdp_lock = threading.Lock()  # an XDP mode switch and the watch's look: never
        self.xdp_native: bool | None = None  # at once; can the driver run native XDP
        self.changed_at: dict[str, float] = {}  # backend address -> last state/health change
        self.metrics_port = 0
        self.tick_failures = 0  # counted by the tick loop (main.Ticker)
        self.active = np.zeros(0, dtype=np.uint64)  # per backend id, from the last tick
        self.cpus: list[P.Cpu] = []                  # per-CPU load over the last tick
        self.counted: Counted | None = None  # the last tick's counters, for the metrics
        self.since = 0.0  # when the data plane's maps (and so its counters) were made
        self.probes = ProbeManager(ac.probes)        # attached by start(), read by tick()
        self.kernel: P.Kernel = P.empty_kernel()     # what they saw at the last tick
        self._probes_starting: threading.Thread | None = None
        self._watched: Config | None = None          # the intent the drops probe watches
        self.trace_source = DataplaneSource(self)
        self.trace = Trace(ac.trace, self.trace_source, self.audit)  # opened by start()
        self.bgp: BgpControl | None = (  # started by start(), after the data plane
            BgpControl(ac.bgp, self.name, ac.config.instance.netns or None, self.audit)
            if ac.bgp is not None else None)
        self._bgp_at = 0.0  # monotonic time ExaBGP may start (see _bgp_hold)
        # (intent, ids, shares) -> per VIP, the snapshot rows' parts that rarely change
        self._layout_cache: tuple[tuple[Any, ...], list[_Layout]] | None = None
        self.last: P.Snapshot = self._snapshot(None)  # what readers see until the first tick

    # -- start and intent ---------------------------------------------------------
    def _state_path(self) -> str:
        return os.path.join(run_dir(self.name), "agent.json")

    def _save_intent(self) -> None:
        statefile.write_json(self._state_path(),
                             {"meaning": intent.meaning(self.base), "file": self.digest,
                              "base": self.base.to_dict(), "desired": self.desired.to_dict()})

    def start(self, force: bool = False) -> dict[str, Any]:
        """Become the instance's one writer, then load or adopt the data plane and apply
        the intent (all-or-nothing). A second agent of the instance stops here; so does
        one that finds another XDP program on its interface, unless `force` (the audit
        log records what it replaced)."""
        self.owner.acquire("agent")
        self.load_result = lifecycle.load_instance(
            self.effective(), force=force, takeover=audit_takeover(self.audit))
        self.dp = Dataplane(self.name)
        self.since = os.stat(os.path.join(self.dp.maps.dir, "meta")).st_mtime  # pinned then
        self.watch = self._watch(self.dp)
        self.xdp_native = self._native()
        self.dp.stage(self.effective())  # nothing to write: reads what is applied, once
        self._read_layout()
        self._save_intent()
        self.last = self._snapshot(None)
        self._start_probes()
        self.trace.open()
        if self.bgp is not None:
            self._bgp_at = time.monotonic() + self._bgp_hold()
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

    def _native(self) -> bool | None:
        """Whether the interface's driver runs native XDP (None: the kernel cannot say)."""
        r = self.load_result
        try:
            return xdp.native_supported(r["interface"], r.get("netns") or "")
        except XlbError:  # the interface went away: the watch says so
            return None

    def _start_probes(self) -> None:
        """Attach the probes the [probes] settings ask for, in the background: compiling
        them takes seconds, and the API answers meanwhile (they show as off until then)."""
        r = self.load_result
        where = f"{r['interface']}@{r['netns']}" if r.get("netns") else str(r["interface"])
        self.probes.own(int(r["prog_id"]), where)
        for name, want in self.probes.settings.wanted.items():
            if want != "off":
                self.probes.reason[name] = "being attached (the agent is starting)"
        self.kernel = {**self.kernel, "probes": [self.probes.describe(n)
                                                 for n in self.probes.probes]}
        self.last = {**self.last, "kernel": self.kernel}  # listed from the first answer
        self._probes_starting = threading.Thread(target=self.probes.start, daemon=True,
                                                 name="xlb-probes")
        self._probes_starting.start()

    def probe_change(self, caller: Caller, name: str, attach: bool) -> P.ProbeChange:
        """probe_attach / probe_detach (operators only): audited like every change; a
        probe this kernel cannot run is refused, and the attempt is in the audit log."""
        action = "probe_attach" if attach else "probe_detach"
        subject = f"probe {name}"
        before = {subject: {"state": self.probes.state[name]}}
        want: P.ProbeState = "attached" if attach else "off"
        try:
            with self.audit.change(uid=caller.uid, user=caller.user, action=action,
                                   params={"name": name}, before=before,
                                   after={subject: {"state": want}}):
                result = self.probes.change(name, attach)
        except RefusedError as e:
            self.audit.refused(uid=caller.uid, user=caller.user, action=action,
                               params={"name": name}, why=str(e))
            raise
        log.info("%s (uid %d) %s: %s", caller.user, caller.uid, action,
                 "done" if result["changed"] else f"it was {result['probe']['state']} already")
        return result

    def close(self) -> None:
        self.stopping.set()
        if self.bgp is not None:  # first: the routers move traffic to the other LBs at once
            self.bgp.close()
        if self._probes_starting is not None:
            self._probes_starting.join(timeout=60)  # a compile cannot be cut short
        self.probes.close()
        self.trace.close()  # a running trace is turned off: nobody would stop it
        self.trace_source.close()
        self._stop_purger()  # before the maps it reads are closed
        if self.watch:
            self.watch.close()
            os.close(self.watch.owned.prog_fd)
        if self.dp:
            self.dp.close()
        self.owner.release()

    # -- what is applied -------------------------------------------------------------
    def effective(self) -> Config:
        """The intent with backends found down taken out of Maglev (see xlb/agent/applied.py:
        which flows move, and the fail-open rule)."""
        return self._applied(self.desired, self.down, self.down_since).config

    def _applied(self, desired: Config, down: dict[str, str],
                 since: dict[str, int]) -> Applied:
        settled = {a for a, t in since.items() if t < self.ticks}
        return applied(desired, down, settled, self.rules, held=self.panic)

    def _read_layout(self) -> None:
        """Ids and Maglev shares as applied, read from the maps (at start only)."""
        assert self.dp is not None
        ids = {i: str(S.unpack_addr(b.addr, b.family)) for i, b in
               self.dp.backend_entries().items()}
        self.backend_ids = {addr: i for i, addr in ids.items()}
        self.vip_ids, self.shares = {}, {}
        for key, meta in self.dp.vip_entries().values():
            label = key_label(key)
            self.vip_ids[label] = meta.vip_id
            self.shares[label] = _shares(self.dp.ring(meta.ring_slot), ids)

    def _layout_applied(self, result: ApplyResult) -> None:
        """Ids and shares after an apply, from what it wrote: nothing is read back, and
        only the rings that changed are counted."""
        ids = {i: a for a, i in result.backend_ids.items()}
        shares = {label: s for label, s in self.shares.items() if label in result.vip_ids}
        for label, ring in result.rings.items():
            shares[label] = _shares(ring, ids)
        self.backend_ids, self.vip_ids, self.shares = result.backend_ids, result.vip_ids, shares

    def _commit(self, desired: Config, down: dict[str, str],
                changed: set[str] | None = None, snapshot: bool = True,
                plan: Applied | None = None) -> None:
        """Apply new intent and/or health verdicts together; on failure keep the old ones.
        `changed`: the backends whose state changed, if the caller knows (else they are
        found by comparing). `snapshot`: rebuild the readers' snapshot now (the tick
        builds its own). `plan`: what to apply, if the caller worked it out already for
        exactly these. Call with the lock held."""
        assert self.dp is not None
        since = self._since(down)
        if plan is None:
            plan = self._applied(desired, down, since)
        before = self._backend_states() if changed is None else {}
        intent_changed = desired is not self.desired
        old = self.desired
        try:
            result = self.dp.apply(plan.config)  # ApplyError: nothing changed
            if intent_changed:
                self.desired = desired
                self._save_intent()
        except Exception as e:
            self.desired = old
            if isinstance(e, OSError) and not isinstance(e, XlbError):
                # the maps were written, but a state file (applied.json, agent.json) was
                # not, say on a full disk: put the maps back, say what happened
                self._put_back()
                where = run_dir(self.name)
                raise ApplyError(f"not applied: the state could not be saved in {where} "
                                 f"({e.strerror or e}); the data plane is as it was") from e
            raise  # ApplyError: the data plane put itself back; anything else: a bug
        self.desired, self.down, self.down_since = desired, down, since
        now = time.time()
        if changed is None:
            changed = {a for a, st in self._backend_states().items() if before.get(a) != st}
        for addr in changed:
            self.changed_at[addr] = now
        self._layout_applied(result)
        # flows to move whose backend stays valid (another VIP keeps it) are found in the
        # connection table and dropped (_purge_flows), once while that lasts
        needs = {(v, a) for v, a in plan.moved if a in result.backend_ids}
        self._clean &= needs
        self._purge = needs - self._clean
        calmed = set(self.panic) - set(plan.panic)
        self._panic_changed(plan.panic)
        fresh = any(t == self.ticks for t in since.values())
        self._due = self.ticks + 1 if fresh or calmed else None  # flows to move then
        if snapshot:
            self.last = self._snapshot(self.rates.last)  # readers see the change at once

    def _panic_changed(self, panic: dict[str, tuple[int, int]]) -> None:
        """Raise the alarm when a VIP starts failing open, and say when it stops."""
        old, self.panic = self.panic, panic
        for name in dict.fromkeys([*old, *panic]):
            if (name in old) == (name in panic):
                continue
            healthy, serving = panic.get(name) or self._health_of(name)
            if name in panic:
                message = (f"VIP {name} in panic: only {healthy} of {serving} serving backends "
                           f"pass their checks (below {self.rules.panic_threshold} %), so new "
                           "flows go to all of them as if healthy; check the health-check "
                           "path from this host")
                log.warning("%s", message)
            else:
                message = (f"VIP {name} out of panic: {healthy} of {serving} serving backends "
                           "healthy; backends found down take no new flows again")
                log.warning("%s", message)
            event: P.PanicEvent = {"kind": "panic", "time": time.time(), "vip": name,
                                   "panic": name in panic, "healthy": healthy,
                                   "serving": serving, "message": message}
            self.emit("event", event)

    def _health_of(self, name: str) -> tuple[int, int]:
        """(healthy, serving) backends of a VIP of the intent ((0, 0) if it is gone)."""
        try:
            vip = self.desired.vip(name)
        except KeyError:
            return 0, 0
        serving = [str(b.address) for b in vip.backends if b.effective_weight]
        return sum(1 for a in serving if a not in self.down), len(serving)

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

    def set_mode(self, caller: Caller, vip: str, mode: str) -> P.ChangeResult:
        """How a VIP forwards its NEW flows (dsr | snat). A connection entry records the
        mode its flow started in and keeps it, so no established flow is reset or moved,
        either way. Refused (and the attempt audited) where the config's rules forbid it,
        in their words: no SNAT pool of the VIP's family, backends of the other family."""
        def plan(cfg: Config) -> tuple[Config, View]:
            try:
                new = cfg.with_vip_mode(vip, mode)
            except ConfigError as e:
                raise RefusedError(f"VIP {vip} cannot use {mode}: {e}") from None
            return new, lambda c: {vip: _vip_in(c, vip)}

        params = {"vip": vip, "mode": mode}
        try:
            return self._change(caller, "mode", params, plan)
        except RefusedError as e:
            self.audit.refused(uid=caller.uid, user=caller.user, action="mode", params=params,
                               why=str(e))
            raise

    def switch_xdp(self, caller: Caller, mode: str) -> P.XdpModeChange:
        """Re-attach the agent's program in the other XDP mode (lifecycle.switch_xdp_mode:
        detach, attach, the gap measured; native refused before anything is detached
        where the driver has none; the old mode put back if the attach fails). Every map
        stays, so connections survive. Audited; the watch expects the new mode from now
        on, and the choice is kept over restarts (the intent's instance.xdp_mode). The
        mode in effect again: answered with before == after and gap 0, nothing touched."""
        assert self.watch is not None
        r = self.load_result
        params = {"mode": mode}
        hook = f"XDP on {r['interface']}" + (f" (netns {r['netns']})" if r.get("netns") else "")
        with self.xdp_lock:  # the watch must not re-attach in the old mode meanwhile
            before = r["mode"]
            if before == mode:
                same: P.XdpModeChange = {"interface": r["interface"], "before": before,
                                         "after": before, "gap_seconds": 0.0}
                return same
            try:
                with self.audit.change(uid=caller.uid, user=caller.user, action="xdp_mode",
                                       params=params, before={hook: {"mode": before}},
                                       after={hook: {"mode": mode}}) as entry:
                    done = lifecycle.switch_xdp_mode(self.name, mode)
            except (RefusedError, AttachError) as e:
                self.audit.refused(uid=caller.uid, user=caller.user, action="xdp_mode",
                                   params=params, why=str(e))
                raise
            self.watch.owned = replace(self.watch.owned, mode=done["after"])
            self.load_result = {**r, "mode": done["after"]}
        log.info("%s (uid %d) xdp_mode: %s switched from %s to %s XDP (%.1f ms without a "
                 "program)", caller.user, caller.uid, hook, before, done["after"],
                 done["gap_seconds"] * 1000)
        with self.lock:
            self.desired = self.desired.with_xdp_mode(done["after"])
            try:
                self._save_intent()
            except OSError as e:  # in effect now; only a restart would not know it
                log.error("XDP mode %s not saved in %s (%s): a restart attaches in %s mode",
                          done["after"], run_dir(self.name), e, before)
            self.last = self._snapshot(self.rates.last)
        event: P.ChangeEvent = {"kind": "change", **entry}  # type: ignore[typeddict-item]
        self.emit("event", event)
        return {"interface": done["interface"], "before": done["before"],
                "after": done["after"], "gap_seconds": done["gap_seconds"]}

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
        self._prepare(plan)
        with self.lock:
            try:
                new, view = plan(self.desired)
            except KeyError as e:  # Config's lookups: no such VIP or backend
                raise RefusedError(str(e.args[0]) if e.args else str(e)) from None
            kept = {v.name for v in self.desired.vips} & {v.name for v in new.vips}
            for name in (v.name for v in new.vips if v.name in kept):
                if (self._healthy_active(self.desired, name)
                        and not self._healthy_active(new, name) and not force):
                    subject = params.get("address") or params.get("name") or params.get("vip")
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
                 params.get("address") or params.get("name") or params.get("vip"),
                 P.change_text(before, after))
        event: P.ChangeEvent = {"kind": "change", **entry}  # type: ignore[typeddict-item]
        self.emit("event", event)
        return {"vips": list(dict.fromkeys([*before, *after])), "before": before,
                "after": after}

    def _prepare(self, plan: Callable[[Config], tuple[Config, View]]) -> None:
        """Before a change takes the lock: build and write ahead the rings it will most
        likely need (a guess on the intent as it is now; whatever the guess misses, the
        apply under the lock does itself). So the lock is held for milliseconds even
        when a change touches many VIPs. A plan that fails is left to the real run."""
        if self.dp is None:
            return
        try:
            new, _ = plan(self.desired)
        except Exception:  # the run under the lock says what is wrong
            return
        try:
            self.dp.stage(self._applied(new, self.down, self.down_since).config)
        except (OSError, XlbError) as e:  # the apply under the lock writes them, or says
            log.debug("rings not staged ahead: %s", e)  # why not

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

    def report_health(self, address: str, healthy: bool, reason: str) -> None:
        """A verdict of the health loop. It is kept (the latest per backend) until the
        next tick commits every verdict that arrived meanwhile in one apply: cheap, so
        the health loop calls it on the event loop, however many backends flip at once."""
        with self._pending_lock:
            self._pending[address] = (healthy, reason)

    def commit_health(self) -> None:
        """Apply the verdicts that arrived since the last tick, all together, and let the
        flows of backends down for a whole tick move. Everything slow happens before the
        lock is taken: the new config is worked out and the rings that change are built
        and written ahead (into free slots); under the lock the VIPs are only switched
        over. A failed apply keeps the verdicts for the next tick. Gives up when the
        agent is stopping."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        due = self._due is not None and self.ticks >= self._due  # flows may move now
        if not pending and not due:
            self._purge_flows()
            return
        assert self.dp is not None
        with self.lock:
            desired, old_down = self.desired, self.down
        down, flips = self._verdicts(pending, desired, old_down)
        plan: Applied | None = self._applied(desired, down, self._since(down))
        assert plan is not None
        try:
            self.dp.stage(plan.config, stop=self.stopping.is_set)
        except (OSError, XlbError) as e:  # the apply below writes them, or says why not
            log.debug("rings not staged ahead: %s", e)
        if self.stopping.is_set():
            return
        with self.lock:
            if self.desired is not desired or self.down is not old_down:  # a change came in
                down, flips = self._verdicts(pending, self.desired, self.down)
                plan = None
            try:
                if flips or due:
                    self._commit(self.desired, down, changed={a for a, *_ in flips},
                                 snapshot=False, plan=plan)  # the tick's snapshot follows
            except Exception as e:
                with self._pending_lock:  # newer verdicts win; these are tried again
                    self._pending = {**pending, **self._pending}
                log.error("%d health verdict(s) not applied (tried again next tick): %s",
                          len(flips), e)
                error: P.ErrorEvent = {"kind": "error", "time": time.time(),
                                       "message": f"{len(flips)} health verdict(s) not "
                                                  f"applied: {e}"}
                self.emit("event", error)
                return
        self._announce(flips)
        self._purge_flows()

    def _verdicts(self, pending: dict[str, tuple[bool, str]], desired: Config,
                  down: dict[str, str]) -> tuple[dict[str, str], list[tuple[str, bool, str]]]:
        """`down` with `pending` applied, and the transitions (address, healthy, reason).
        A verdict on a backend that `desired` does not have is dropped."""
        present = self._present(desired)
        out = dict(down)
        flips: list[tuple[str, bool, str]] = []
        for addr, (healthy, reason) in pending.items():
            if healthy == (addr not in out) or not (healthy or addr in present):
                continue
            if healthy:
                del out[addr]
            else:
                out[addr] = reason or "down"
            flips.append((addr, healthy, reason))
        return out, flips

    def _since(self, down: dict[str, str]) -> dict[str, int]:
        """The tick each backend of `down` went down in (this one, for the new ones)."""
        return {a: self.down_since.get(a, self.ticks) for a in down}

    def _present(self, desired: Config) -> set[str]:
        """The backend addresses of `desired` (worked out once per intent)."""
        if self._present_of[0] is not desired:
            self._present_of = (desired, {text(a) for a in desired.backend_addresses()})
        return self._present_of[1]

    def _announce(self, flips: list[tuple[str, bool, str]]) -> None:
        """Log and tell the listeners about each transition (the log: the first few)."""
        flows = ("its flows move to healthy backends" if self.rules.tcp_flows == "move"
                 else "its UDP flows move, its TCP flows stay")
        for i, (address, healthy, reason) in enumerate(flips):
            if i < LOGGED_TRANSITIONS:
                if healthy:
                    log.info("backend %s is up again: back in Maglev at its configured weight",
                             address)
                else:
                    log.warning("backend %s is down (%s): no new flows; %s", address, reason,
                                flows)
            else:  # the INFO log sums these up below
                log.debug("backend %s is %s%s", address, "up again" if healthy else "down",
                          "" if healthy else f" ({reason})")
            event: P.HealthEvent = {"kind": "health", "time": time.time(), "address": address,
                                    "healthy": healthy, "reason": reason}
            self.emit("event", event)
        if len(flips) > LOGGED_TRANSITIONS:
            down = sum(1 for _, healthy, _ in flips if not healthy)
            log.warning("... and %d more health transitions at once (%d down, %d up in all); "
                        "the snapshot lists every backend", len(flips) - LOGGED_TRANSITIONS,
                        down, len(flips) - down)

    def _purge_flows(self) -> None:
        """Flows to move whose backend another VIP keeps valid (so it is not invalidated)
        must be found in the connection table: a pass over all of it (about a second at a
        million entries), so the purge thread does it and the tick never waits for it."""
        if not self._purge:
            return
        self._purge_asked.set()
        if self._purger is None:
            self._purger = threading.Thread(target=self._purging, name="xlb-purge",
                                            daemon=True)
            self._purger.start()

    def _purging(self) -> None:
        """The purge thread: a pass whenever a tick asks, until the agent stops."""
        while not self.stopping.is_set():
            if not self._purge_asked.wait(timeout=1.0):
                continue
            self._purge_asked.clear()
            try:
                self._purge_pass()
            except Exception as e:  # a bug: logged, and the next tick asks again
                log.error("moving the flows of down backends failed: %s", e, exc_info=e)

    def _stop_purger(self) -> None:
        """Stop the purge thread (a pass gives up between batches) and wait for it."""
        self.stopping.set()
        self._purge_asked.set()
        if self._purger is not None:
            self._purger.join(timeout=30)
            self._purger = None

    def _purge_pass(self) -> None:
        """The flows to move are dropped; their next packet asks Maglev. One pass over the
        table, in batches, outside the lock; given up when stopping."""
        assert self.dp is not None
        with self.lock:
            labels = {v.name: vip_label(v.address, v.port, v.protocol) for v in self.desired.vips}
            todo = {(v, a): (self.vip_ids[labels[v]], self.backend_ids[a])
                    for v, a in self._purge
                    if labels.get(v) in self.vip_ids and a in self.backend_ids}
        try:
            dropped = self.dp.drop_flows(set(todo.values()), stop=self.stopping.is_set)
        except OSError as e:  # tried again next tick
            log.error("moving the flows of down backends failed (tried again next tick): %s",
                      e)
            return
        if self.stopping.is_set():
            return
        with self.lock:
            done = set(todo) & self._purge
            self._purge -= done
            self._clean |= done
        for (vip, address), n in sorted((k, dropped.get(ids, 0)) for k, ids in todo.items()):
            log.info("VIP %s: %d flow(s) of backend %s (down) moved to healthy backends",
                     vip, n, address)

    # -- BGP ---------------------------------------------------------------------------------
    def _bgp_hold(self) -> float:
        """Seconds before ExaBGP starts: until the first health checks could find every
        dead backend down (fall checks, then a tick to commit them). Every backend counts
        as healthy until then; announcing meanwhile would draw traffic to backends
        nobody checked, while the other LBs carry it."""
        st = self.settings
        if not self.health_targets():
            return 0.0
        hold = st.health_fall * st.health_interval + st.health_timeout + st.tick
        assert self.bgp is not None
        self.bgp.holding(hold)
        return hold

    def _bgp_tick(self) -> None:
        """RHI, once per tick (never waits for ExaBGP: see xlb/bgp/control.py); starts
        ExaBGP once the hold after start is over."""
        if self.bgp is None:
            return
        if not self.bgp.started and time.monotonic() < self._bgp_at:
            return
        self.bgp.update(self.desired, self.down)
        if not self.bgp.started:
            self.bgp.start()

    def bgp_status(self) -> P.Bgp:
        """The BGP speaker's state (an instance without a [bgp] table runs none)."""
        return P.empty_bgp() if self.bgp is None else self.bgp.status()

    def bgp_change(self, caller: Caller, action: str, vip: str | None,
                   every: bool) -> P.BgpChange:
        """bgp_withdraw / bgp_announce (xlb/bgp/control.py); refused where no BGP speaker
        runs. Decided on the intent and health as they are now, not at the last tick."""
        if self.bgp is None:
            raise RefusedError(f"bgp_{action}: instance {self.name} has no [bgp] table, so "
                               "it announces nothing; its VIPs reach it by static routes")
        with self.lock:
            desired, down = self.desired, self.down
        self.bgp.update(desired, down)
        return self.bgp.change(caller, action, vip, every)

    # -- reading ---------------------------------------------------------------------------
    def emit(self, kind: str, doc: Any) -> None:
        """Tell the listeners (the API server, the health loop): a notification of
        protocol.NOTIFICATIONS by name."""
        for listener in list(self.listeners):
            listener(kind, doc)

    def tick(self) -> P.Snapshot:
        """Commit the health verdicts that arrived, read counters (batch calls, never the
        connection table) and build a snapshot; first, look that our program is still
        attached and pinned (and put it back)."""
        assert self.dp is not None
        if self.watch is not None:
            with self.xdp_lock:  # never in the middle of a mode switch
                self.alarms = self.watch.check()
        self.ticks += 1
        self.commit_health()
        self._bgp_tick()
        # only the tick reads counters and keeps rates; backend rows up to the ids in use
        counters = self.dp.counters(backend_rows=_rows_in_use(self.backend_ids))
        rates = self.rates.update(counters)
        self.active = counters.active
        self.reason_totals = counters.reasons[:, 0].copy()
        self.no_port_totals = counters.snat[:, SNAT_NO_PORT].copy()
        self.cpus = cpu_load()  # once per tick: each call measures since the last one
        if self._watched is not self.desired:  # drops from or to these are the LB's
            self._watched = self.desired
            self.probes.watch({str(a) for a in self.desired.backend_addresses()}
                              | {str(v.address) for v in self.desired.vips})
        self.kernel = self.probes.tick()
        self.trace.add(self.trace_source.kernel_events(self.kernel))  # drops of traced flows
        with self.lock:  # intent, health and layout as one consistent view
            snap = self._snapshot(rates)
            vips = {v.name: self.vip_ids[k] for v in self.desired.vips
                    if (k := vip_label(v.address, v.port, v.protocol)) in self.vip_ids}
            counted = Counted(counters, vips, dict(self.backend_ids))
        self.last, self.counted = snap, counted
        return snap

    def published(self) -> Published:
        """What the metrics serve: the last snapshot and the counters the last tick read
        (a scrape never reads the data plane itself)."""
        desired = self.desired
        drained = frozenset((v.name, str(b.address)) for v in desired.vips
                            for b in v.backends if b.state == "drained")
        return Published(self.last, self.counted,
                         {"version": __version__, "kernel": platform.release()},
                         self.since, desired.instance.max_connections,
                         desired.instance.ring_size, drained, self.trace.totals())

    def _snapshot(self, rates: Rates | None) -> P.Snapshot:
        """The typed snapshot of protocol.Snapshot: intent, health and the last rates."""
        vip_ids = self.vip_ids
        vips: list[P.Vip] = []
        for vip, lay in zip(self.desired.vips, self._layout_rows(), strict=True):
            have = lay.ids >= 0
            at = np.where(have, lay.ids, 0)
            if rates is not None:  # per backend, gathered at once from the counter rows
                pps_of = np.where(have, rates.backends[at, 0], 0.0).tolist()
                new_of = np.where(have, rates.backends[at, 2], 0.0).tolist()
            else:
                pps_of = new_of = [0.0] * len(at)
            counted = have & (lay.ids < len(self.active))
            active_of = np.where(counted, self.active[np.where(counted, at, 0)]
                                 if len(self.active) else 0, 0).tolist()
            down, changed = self.down, self.changed_at
            rows: list[P.Backend] = [
                {"address": addr, "weight": weight,
                 "state": _state(configured, addr in down, pps),
                 "health": down.get(addr, "up"), "ring_share": share,
                 "pps": round(pps, 1), "new_connections_per_s": round(new, 1),
                 "active_connections": int(active), "changed": changed.get(addr, 0.0)}
                for addr, weight, configured, share, pps, new, active in zip(
                    lay.addresses, lay.weights, lay.states, lay.shares, pps_of, new_of,
                    active_of, strict=True)]
            key = lay.label
            vid = vip_ids.get(key)
            pps = (round(float(rates.vips[vid, 0]), 1)
                   if rates is not None and vid is not None else 0.0)
            vips.append({"name": vip.name, "vip": key, "mode": vip.mode,
                         "modes": self._modes(rates, vid, pps), "backends": rows, "pps": pps,
                         "active_connections": sum(r["active_connections"] for r in rows),
                         "healthy": sum(1 for r in rows if r["health"] == "up"),
                         "total": len(rows), "panic": vip.name in self.panic})
        q = rates.queues[:, 0] if rates is not None else np.zeros(S.XLB_MAX_QUEUES)
        totals = self.reason_totals
        inst = self.desired.instance
        return {"instance": self.name, "host": HOST, "time": time.time(),
                "lb_mode": "+".join(sorted({v.mode for v in self.desired.vips})) or "dsr",
                "metrics_port": self.metrics_port,
                "uptime": round(time.time() - self.started, 1),
                "xdp_mode": self.load_result.get("mode"), "xdp_native": self.xdp_native,
                "snat": {"pool_v4": str(inst.snat_pool_v4) if inst.snat_pool_v4 else None,
                         "pool_v6": str(inst.snat_pool_v6) if inst.snat_pool_v6 else None,
                         "port_min": inst.snat_port_min, "port_max": inst.snat_port_max,
                         "table_size": inst.snat_entries},
                "interface": self.load_result.get("interface"),
                "totals": {"pps": round(rates.pps, 1) if rates else 0.0,
                           "bps": round(rates.bps, 1) if rates else 0.0,
                           "drop_pps": round(rates.drop_pps, 1) if rates else 0.0},
                "queues": [round(float(x), 1) for x in q[: self._queues_seen(q)]],
                "reasons": {r.label: round(float(rates.reasons[r, 0]), 1) if rates else 0.0
                            for r in S.Reason},
                "reason_totals": {r.label: int(totals[r]) if len(totals) > r else 0
                                  for r in S.Reason},
                "misses": {m.label: round(float(rates.misses[m, 0]), 1) if rates else 0.0
                           for m in S.Miss},
                "cpus": self.cpus,
                "vips": vips,
                "alarms": [P.Alarm(**a) for a in self.alarms],  # copies: alarms change later
                "tick_failures": self.tick_failures,
                "kernel": self.kernel,
                "bgp": self.bgp_status()}

    def _layout_rows(self) -> list[_Layout]:
        """Per VIP of the intent, what its backends' snapshot rows keep from tick to tick
        (addresses as text, weights, shares, counter rows): worked out again only when the
        intent, the ids or the shares changed (each is replaced whole, never changed in
        place), not for every backend at every tick."""
        now = (self.desired, self.backend_ids, self.shares)
        cached = self._layout_cache
        if cached is not None and all(a is b for a, b in zip(cached[0], now, strict=True)):
            return cached[1]
        out: list[_Layout] = []
        for vip in self.desired.vips:
            label = vip_label(vip.address, vip.port, vip.protocol)
            shares = self.shares.get(label, {})
            addrs = [str(b.address) for b in vip.backends]
            out.append(_Layout(label, addrs, [b.weight for b in vip.backends],
                               [b.state for b in vip.backends],
                               [round(shares.get(a, 0.0), 6) for a in addrs],
                               np.array([self.backend_ids.get(a, -1) for a in addrs],
                                        dtype=np.int64)))
        self._layout_cache = (now, out)
        return out

    def _modes(self, rates: Rates | None, vid: int | None, pps: float) -> P.VipModes:
        """A VIP's traffic by forwarding mode: SNAT from its snat_stats row, DSR the rest
        of its client packets (a flow keeps its mode, so both can flow after a switch)."""
        snat = reply = made = 0.0
        if rates is not None and vid is not None and vid < len(rates.snat):
            row = rates.snat[vid]
            snat, reply, made = (float(row[SNAT_PACKETS]), float(row[SNAT_REPLY_PACKETS]),
                                 float(row[SNAT_TRANSLATIONS]))
        no_port = (int(self.no_port_totals[vid])
                   if vid is not None and vid < len(self.no_port_totals) else 0)
        return {"dsr_pps": round(max(0.0, pps - snat), 1), "snat_pps": round(snat, 1),
                "reply_pps": round(reply, 1), "translations_per_s": round(made, 1),
                "no_port": no_port}

    def _queues_seen(self, q: np.ndarray) -> int:
        """Queues up to the highest that ever carried traffic: the list never shrinks."""
        used = np.nonzero(q)[0]
        if len(used):
            self.queue_count = max(self.queue_count, int(used[-1]) + 1)
        return max(self.queue_count, 1)


ROWS_AHEAD = 256  # backend counter rows read past the highest id in use, in steps of this


def _rows_in_use(ids: dict[str, int]) -> int:
    """Backend counter rows the tick reads: past every id in use, rounded up to a step,
    so a backend added while a tick runs (the next free id) is read already."""
    top = max(ids.values(), default=-1) + 1
    return (top // ROWS_AHEAD + 1) * ROWS_AHEAD


@dataclass(frozen=True)
class _Layout:
    """One VIP's backends as its snapshot rows show them, in the intent's order."""

    label: str
    addresses: list[str]
    weights: list[int]
    states: list[str]      # as configured: active, drained
    shares: list[float]    # of the VIP's ring, rounded as shown
    ids: np.ndarray        # counter rows (backend ids); -1 where none is applied yet


def _shares(ring: np.ndarray, ids: dict[int, str]) -> dict[str, float]:
    """Each backend's share of a ring (by address; ids not in `ids` are left out)."""
    counts = np.bincount(ring[ring != S.XLB_NO_BACKEND].astype(np.int64))
    return {ids[int(i)]: float(counts[i]) / len(ring) for i in np.flatnonzero(counts)
            if int(i) in ids}


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
