"""The agent's BGP side: the route health injection rule applied to the Speaker, the
operators' withdrawals and maintenance (kept across restarts), and the event log.

The agent's tick calls `update` with the intent and the backends found down; the rule
(xlb/bgp/rhi.py) decides every prefix and the Speaker (ExaBGP, supervised in threads of
its own) is given the whole desired set. Nothing here waits for ExaBGP: the Speaker's
calls only take its lock, so a tick never blocks on BGP, and an exception from it is
logged, never raised into the tick (BGP trouble must not stop the load balancer).

Operator state lives in run_dir(instance)/bgp.json, written before the change is made:
an agent restarted (SIGTERM, SIGKILL, a crash) in maintenance stays out of rotation, and a
prefix withdrawn by an operator stays withdrawn, until an operator says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from xlb import statefile
from xlb.agent.audit import AuditLog
from xlb.api import protocol as P
from xlb.bgp.rhi import Mark, Operator, Route, find_prefix, routes
from xlb.bgp.settings import BgpSettings
from xlb.dataplane.config import Config
from xlb.errors import ApplyError, InvalidParams, RefusedError
from xlb.paths import run_dir

log = logging.getLogger(__name__)
STATE_FILE = "bgp.json"


class Who(Protocol):
    """The caller of a change (xlb.agent.core.Caller)."""

    @property
    def uid(self) -> int: ...
    @property
    def user(self) -> str: ...


class Speaker(Protocol):
    """What BgpControl needs of the ExaBGP supervisor (xlb/bgp/speaker.py)."""

    def start(self) -> None: ...
    def close(self) -> None: ...
    def set_routes(self, routes: Mapping[str, bool]) -> None: ...
    def neighbors(self) -> list[P.BgpNeighbor]: ...
    def state(self) -> tuple[P.BgpSpeakerState, int, int, str]: ...
    def carried(self) -> dict[str, list[str]]: ...


SpeakerFactory = Callable[[BgpSettings, str, "str | None", Callable[[P.BgpEvent], None]],
                          Speaker]


def default_speaker(settings: BgpSettings, instance: str, netns: str | None,
                    on_event: Callable[[P.BgpEvent], None]) -> Speaker:
    """The real one: ExaBGP in the instance's namespace."""
    from xlb.bgp.speaker import Speaker as ExaBgp  # late: only agents with [bgp] need it

    return ExaBgp(settings, instance, netns, on_event)


class BgpControl:
    def __init__(self, settings: BgpSettings, instance: str, netns: str | None, audit: AuditLog,
                 speaker: SpeakerFactory = default_speaker, state_dir: str | None = None):
        self.settings = settings
        self.instance = instance
        self.audit = audit
        self.path = os.path.join(state_dir or run_dir(instance), STATE_FILE)
        self.lock = threading.Lock()  # operator state, routes, events
        self._pushing = threading.Lock()  # one set_routes at a time (see _push)
        self.events: deque[P.BgpEvent] = deque(maxlen=P.MAX_BGP_EVENTS)
        self.routes: dict[str, Route] = {}
        self.since: dict[str, float] = {}
        self._inputs: tuple[Config | None, frozenset[str]] = (None, frozenset())
        self._speaker_failed = False  # logged once per streak
        self._started = False
        self.op = self._restore()
        self.speaker = speaker(settings, instance, netns, self._event)

    # -- life ------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    def holding(self, seconds: float) -> None:
        """Say why ExaBGP is not started yet (the agent waits for its first checks)."""
        message = (f"ExaBGP starts in {seconds:g} s, after the first health checks: no VIP "
                   "is announced before its backends were checked")
        log.info("BGP: %s", message)
        with self.lock:
            self._add("speaker", "", message, time.time())

    def start(self) -> None:
        """Start ExaBGP (returns at once: the Speaker supervises it)."""
        n = len(self.settings.neighbors)
        log.info("BGP: AS %d, router id %s, %d neighbor(s); starting ExaBGP",
                 self.settings.local_asn, self.settings.router_id, n)
        self.speaker.start()
        self._started = True

    def close(self) -> None:
        """Stop ExaBGP: it sends the routers a Cease, they withdraw this LB at once."""
        if self._started:
            self._started = False
            self.speaker.close()

    # -- the rule ---------------------------------------------------------------------------
    def update(self, cfg: Config, down: Collection[str]) -> None:
        """The tick's call: decide every prefix again if the intent, the health or the
        operators' state changed, and give the Speaker the desired set (it sends only what
        changed, and everything again after ExaBGP restarts)."""
        key = (cfg, frozenset(down))
        with self.lock:
            if key[0] is not self._inputs[0] or key[1] != self._inputs[1]:
                self._inputs = key
                self._decide()
        self._push()

    def _decide(self) -> None:
        """Apply the rule to the last inputs; record what changed. Lock held."""
        cfg, down = self._inputs
        if cfg is None:
            return
        now = time.time()
        new = {r.prefix: r for r in routes(cfg, down, self.settings.announce, self.op)}
        for prefix, r in new.items():
            old = self.routes.get(prefix)
            if old is not None and (old.announced, old.cause) == (r.announced, r.cause):
                continue
            self.since[prefix] = now
            verb = "announced" if r.announced else f"withdrawn ({r.cause})"
            log.info("BGP %s %s: %s", prefix, verb, r.reason)
            self._add("announce" if r.announced else "withdraw", "",
                      f"{prefix} {verb}: {r.reason}", now)
        for prefix in set(self.routes) - set(new):
            self.since.pop(prefix, None)
            log.info("BGP %s withdrawn: no VIP has that address any more", prefix)
            self._add("withdraw", "", f"{prefix} withdrawn: no VIP has that address any more",
                      now)
        self.routes = new

    def _push(self) -> None:
        """Give the Speaker the latest decision. One push at a time, each reading the
        decision when it runs: a tick's push cannot overtake an operator's newer one."""
        with self._pushing:
            with self.lock:
                desired = {p: r.announced for p, r in self.routes.items()}
            self._send(desired)

    def _send(self, desired: dict[str, bool]) -> None:
        try:
            self.speaker.set_routes(desired)
        except Exception as e:  # the Speaker promises not to raise; BGP never stops a tick
            if not self._speaker_failed:
                log.error("BGP: the speaker refused the routes: %s", e, exc_info=e)
            self._speaker_failed = True
        else:
            self._speaker_failed = False

    # -- events -----------------------------------------------------------------------------
    def _event(self, event: P.BgpEvent) -> None:
        """The Speaker's events (sessions, notifications, ExaBGP's life), any thread."""
        with self.lock:
            self.events.append(event)

    def _add(self, kind: P.BgpEventKind, peer: str, message: str, now: float) -> None:
        self.events.append({"time": now, "kind": kind, "peer": peer, "message": message})

    # -- reading ----------------------------------------------------------------------------
    def status(self) -> P.Bgp:
        """The BGP document of the snapshot and of the `bgp` method."""
        speaker, pid, restarts, error = self.speaker.state()
        neighbors = self.speaker.neighbors()
        carried = self.speaker.carried()
        with self.lock:
            prefixes = [self._prefix(r, carried) for r in self.routes.values()]
            events = list(self.events)
            mark = self.op.maintenance
        return {"enabled": True, "speaker": speaker, "pid": pid, "restarts": restarts,
                "last_error": error, "local_asn": self.settings.local_asn,
                "router_id": self.settings.router_id, "maintenance": mark is not None,
                "maintenance_by": "" if mark is None else str(mark),
                "neighbors": neighbors, "prefixes": prefixes, "events": events}

    def _prefix(self, r: Route, carried: Mapping[str, list[str]]) -> P.BgpPrefix:
        return {"prefix": r.prefix, "vips": list(r.vips), "announced": r.announced,
                "cause": r.cause, "reason": r.reason, "since": self.since.get(r.prefix, 0.0),
                "peers": list(carried.get(r.prefix, [])) if r.announced else []}

    # -- operators ---------------------------------------------------------------------------
    def change(self, caller: Who, action: str, vip: str | None, every: bool) -> P.BgpChange:
        """bgp_withdraw / bgp_announce by an operator (the API lets no one else call it).
        Audited before it is made; refused attempts are audited too."""
        if (vip is None) == (not every):
            raise InvalidParams("give either vip (a VIP name or address) or all=true")
        params = {"vip": vip, "all": every}
        name = f"bgp_{action}"
        try:
            with self.lock:
                mark = Mark(caller.user, caller.uid, time.time())
                new, subject = self._plan(action, vip, every, mark)
                changed = self._make(caller, name, params, new, subject)
        except RefusedError as e:
            self.audit.refused(uid=caller.uid, user=caller.user, action=name, params=params,
                               why=str(e))
            raise
        self._push()
        carried = self.speaker.carried()  # never called under our lock: it takes its own
        with self.lock:
            prefixes = [self._prefix(self.routes[p], carried) for p in subject
                        if p in self.routes]
        return {"changed": changed, "maintenance": new.maintenance is not None,
                "prefixes": prefixes}

    def _plan(self, action: str, vip: str | None, every: bool,
              mark: Mark) -> tuple[Operator, list[str]]:
        """The operators' state after the change (`mark`: who, now) and the prefixes it
        names. Lock held."""
        cfg, op = self._inputs[0], self.op
        if every:
            if action == "withdraw":
                return Operator(op.maintenance or mark, op.withdrawn), list(self.routes)
            return Operator(None, {}), list(self.routes)
        assert vip is not None
        prefix = find_prefix(cfg, vip) if cfg is not None else None
        if prefix is None:
            names = ", ".join(r.prefix for r in self.routes.values()) or "none"
            raise RefusedError(f"no VIP of {self.instance} is named or at {vip[:80]!r} "
                               f"(prefixes: {names})")
        withdrawn = dict(op.withdrawn)
        if action == "withdraw":
            withdrawn[prefix] = withdrawn.get(prefix) or mark
        elif op.maintenance is not None:
            raise RefusedError(f"{self.instance} is in maintenance (since "
                               f"{op.maintenance}): `xlb bgp announce --all` ends it")
        else:
            withdrawn.pop(prefix, None)
        return Operator(op.maintenance, withdrawn), [prefix]

    def _make(self, caller: Who, name: str, params: dict[str, Any], new: Operator,
              subject: list[str]) -> bool:
        """Audit, save, apply; whether it changed anything. Lock held."""
        old_op = self.op
        changed = _key(new) != _key(old_op)
        before, after = self._view(old_op, subject), self._view(new, subject, preview=True)
        with self.audit.change(uid=caller.uid, user=caller.user, action=name, params=params,
                               before=before, after=after):
            if changed:
                try:
                    statefile.write_json(self.path, _dump(new))
                except OSError as e:
                    raise ApplyError(f"not changed: the BGP state could not be saved in "
                                     f"{self.path} ({e.strerror or e})") from e
        self.op = new
        self._decide()
        if changed:
            what = _describe(name, params, subject)
            log.info("%s (uid %d) %s", caller.user, caller.uid, what)
            self._add("operator", "", f"{caller.user} {what}", time.time())
        else:
            log.info("%s (uid %d) %s: it was so already", caller.user, caller.uid, name)
        return changed

    def _view(self, op: Operator, subject: list[str], preview: bool = False) -> dict[str, Any]:
        """The audit's before/after: per prefix, or "maintenance" for the whole LB."""
        out: dict[str, Any] = {"maintenance": {"maintenance": op.maintenance is not None}}
        cfg, down = self._inputs
        decided = ({r.prefix: r for r in routes(cfg, down, self.settings.announce, op)}
                   if preview and cfg is not None else self.routes)
        for p in subject:
            r = decided.get(p)
            if r is not None:
                out[p] = {"announced": r.announced, "cause": r.cause,
                          "operator": p in op.withdrawn}
        return out

    # -- bgp.json -----------------------------------------------------------------------------
    def _restore(self) -> Operator:
        """The operators' state the last agent left (nothing withdrawn if there is none)."""
        try:
            with open(self.path) as f:
                op = _load(json.load(f))
        except FileNotFoundError:
            return Operator()
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("BGP: %s cannot be read (%s): starting with nothing withdrawn by "
                      "operators", self.path, e)
            return Operator()
        if op.maintenance is not None or op.withdrawn:
            what = (f"maintenance (by {op.maintenance})" if op.maintenance is not None
                    else f"{len(op.withdrawn)} prefix(es) withdrawn by operators: "
                         f"{', '.join(sorted(op.withdrawn))}")
            log.info("BGP: restored from %s: %s", self.path, what)
            self._add("operator", "", f"restored after a restart: {what}", time.time())
        return op


def _key(op: Operator) -> tuple[bool, frozenset[str]]:
    """What decides routes: whether in maintenance, which prefixes withdrawn."""
    return op.maintenance is not None, frozenset(op.withdrawn)


def _describe(name: str, params: dict[str, Any], subject: list[str]) -> str:
    if params["all"]:
        return ("put the LB in maintenance: every prefix withdrawn" if name == "bgp_withdraw"
                else "ended maintenance: every prefix announced again where it serves")
    verb = "withdrew" if name == "bgp_withdraw" else "announced again"
    return f"{verb} {subject[0]} ({params['vip']})"


def _dump(op: Operator) -> dict[str, Any]:
    def mark(m: Mark) -> dict[str, Any]:
        return {"user": m.user, "uid": m.uid, "time": m.time}
    return {"maintenance": mark(op.maintenance) if op.maintenance else None,
            "withdrawn": {p: mark(m) for p, m in op.withdrawn.items()}}


def _load(doc: dict[str, Any]) -> Operator:
    def mark(d: dict[str, Any]) -> Mark:
        return Mark(str(d["user"]), int(d["uid"]), float(d["time"]))
    m = doc["maintenance"]
    return Operator(mark(m) if m else None,
                    {str(p): mark(d) for p, d in dict(doc["withdrawn"]).items()})
