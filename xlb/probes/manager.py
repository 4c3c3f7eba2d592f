"""The probe manager: attaches the probes the settings ask for and the running kernel
supports, says plainly why not for the rest, reads their maps once per tick, and works
out what each probe costs from the kernel's run-time statistics.

It belongs to the agent (the probes outlive any console, like the data plane); the API's
probe_attach/probe_detach come here through the agent. Every method is thread-safe: the
tick reads while an operator attaches or detaches."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from xlb.api import protocol as P
from xlb.dataplane import bpfsys
from xlb.errors import BpfError, RefusedError
from xlb.probes.base import Probe, Unavailable
from xlb.probes.drops import DropsProbe
from xlb.probes.napi import NapiProbe
from xlb.probes.runtime import RuntimeProbe
from xlb.probes.settings import ProbeSettings
from xlb.probes.softirq import SoftirqProbe
from xlb.probes.tcp import TcpProbe
from xlb.probes.xdp import XdpProbe

log = logging.getLogger(__name__)


def all_probes() -> dict[str, Probe]:
    """One of each, in protocol.PROBES order."""
    probes: list[Probe] = [DropsProbe(), XdpProbe(), NapiProbe(), SoftirqProbe(), TcpProbe(),
                           RuntimeProbe()]
    out = {p.spec.name: p for p in probes}
    assert tuple(out) == P.PROBES
    return out


@dataclass
class _Cost:
    """A probe's programs' run time and runs at the last tick (for rates)."""

    at: float = 0.0
    run_ns: int = 0
    runs: int = 0
    events: int = 0
    figures: tuple[float, float | None, float | None] = (0.0, None, None)  # events/s, ns, %


class ProbeManager:
    def __init__(self, settings: ProbeSettings | None = None,
                 probes: dict[str, Probe] | None = None):
        self.settings = settings or ProbeSettings()
        self.probes = probes if probes is not None else all_probes()
        self.state: dict[str, P.ProbeState] = dict.fromkeys(self.probes, "off")
        self.reason: dict[str, str] = dict.fromkeys(self.probes, "")
        self.costs: dict[str, _Cost] = {n: _Cost() for n in self.probes}
        self.lock = threading.RLock()
        self._busy: set[str] = set()  # being attached
        self.addresses: set[str] = set()
        self.own_program: tuple[int, str] | None = None  # (prog id, "interface@netns")
        self.last: P.Kernel = P.empty_kernel()

    # -- attach and detach ---------------------------------------------------------------
    def start(self) -> None:
        """Attach what the settings turn on (on or auto); log one line per probe."""
        for name in self.probes:
            if self.settings.wanted.get(name, "on") in ("on", "auto"):
                self.try_attach(name)
            else:
                self.reason[name] = "off in the [probes] settings"
        self._sync_owners()
        self.last = {**self.last, "probes": [self.describe(n) for n in self.probes]}

    def attach(self, name: str) -> bool:
        """Attach a probe; False if it was attached already (or is being attached).
        Unavailable: this kernel cannot run it (its state says why from then on). The
        compile runs outside the lock: the tick goes on reading the other probes."""
        probe = self.probes[name]
        with self.lock:
            if self.state[name] == "attached" or name in self._busy:
                return False
            self._busy.add(name)
        t0 = time.monotonic()
        try:
            probe.attach()
        except Unavailable as e:
            with self.lock:
                self.state[name], self.reason[name] = "unavailable", str(e)
                self._busy.discard(name)
            log.warning("probe %s unavailable: %s", name, e)
            raise
        except BaseException:
            with self.lock:
                self._busy.discard(name)
            raise
        with self.lock:
            self._busy.discard(name)
            self.state[name], self.reason[name] = "attached", probe.note
            self.costs[name] = _Cost(at=time.monotonic())
            if isinstance(probe, DropsProbe):
                probe.watch(self.addresses)
            self._sync_owners()
        log.info("probe %s attached (%s %s) in %.2f s%s", name, probe.kind, probe.target,
                 time.monotonic() - t0, f"; {probe.note}" if probe.note else "")
        return True

    def detach(self, name: str, why: str = "detached by an operator") -> bool:
        """Detach a probe; False if it was not attached."""
        with self.lock:
            if self.state[name] != "attached":
                return False
            self.probes[name].detach()
            self.state[name], self.reason[name] = "off", why
            self._sync_owners()
            log.info("probe %s detached: %s", name, why)
            return True

    def try_attach(self, name: str) -> None:
        """attach() for start-up: a probe that cannot attach is noted (and logged), never
        the end of the others (a failure other than Unavailable is a bug: logged with its
        traceback, and the probe says so)."""
        try:
            self.attach(name)
        except Unavailable:
            pass
        except Exception as e:
            log.exception("probe %s failed to attach", name)
            with self.lock:
                self.state[name] = "unavailable"
                self.reason[name] = f"failed to attach (a bug, logged by the agent): {e}"

    def close(self) -> None:
        for name in self.probes:
            try:
                self.detach(name, "the agent stopped")
            except Exception as e:  # stopping: say so, go on with the others
                log.warning("probe %s did not detach cleanly: %s", name, e)

    # -- what the agent tells it ---------------------------------------------------------------
    def watch(self, addresses: set[str]) -> None:
        """The instance's VIP and backend addresses, for the drops' attribution."""
        with self.lock:
            if addresses == self.addresses:
                return
            self.addresses = set(addresses)
            probe = self.probes.get("drops")
            if isinstance(probe, DropsProbe) and self.state["drops"] == "attached":
                probe.watch(self.addresses)

    def own(self, prog_id: int, interface: str) -> None:
        """The instance's XDP program (so its errors name its interface, its run time
        says xlb)."""
        with self.lock:
            self.own_program = (prog_id, interface)
            self._sync_owners()

    def _sync_owners(self) -> None:
        runtime = self.probes.get("runtime")
        xdp = self.probes.get("xdp")
        owners: dict[int, str] = {}
        if self.own_program is not None:
            owners[self.own_program[0]] = "xlb"
            if isinstance(xdp, XdpProbe):
                xdp.known = {self.own_program[0]: self.own_program[1]}
        for name, probe in self.probes.items():
            if self.state[name] == "attached":
                for fd in probe.prog_fds():
                    try:
                        owners[int(bpfsys.prog_info(fd).id)] = f"probe {name}"
                    except BpfError:
                        pass
        if isinstance(runtime, RuntimeProbe):
            runtime.owners = owners

    # -- reading ------------------------------------------------------------------------------
    def tick(self) -> P.Kernel:
        """Read every attached probe (a probe whose read fails is logged and left out of
        this tick), then their costs; auto probes that cost too much are detached."""
        now = time.monotonic()
        with self.lock:
            doc = P.empty_kernel()
            for name, probe in self.probes.items():
                if self.state[name] != "attached":
                    continue
                try:
                    doc.update(probe.read(now))  # type: ignore[typeddict-item]
                except (OSError, BpfError) as e:
                    log.warning("probe %s: reading its maps failed: %s", name, e)
            self._costs(now)
            self._auto_limit()
            doc["probes"] = [self.describe(n) for n in self.probes]
            self.last = doc
            return doc

    def _costs(self, now: float) -> None:
        stats = self.state.get("runtime") == "attached"
        for name, probe in self.probes.items():
            c = self.costs[name]
            if self.state[name] != "attached":
                c.figures = (0.0, None, None)
                continue
            run_ns = runs = 0
            for fd in probe.prog_fds():
                try:
                    info = bpfsys.prog_info(fd)
                except BpfError:
                    continue
                run_ns, runs = run_ns + int(info.run_time_ns), runs + int(info.run_cnt)
            events = probe.events()
            dt = now - c.at
            if dt > 0 and c.at:
                if stats and probe.prog_fds():
                    d_ns, d_runs = max(0, run_ns - c.run_ns), max(0, runs - c.runs)
                    ns = d_ns / d_runs if d_runs else (run_ns / runs if runs else 0.0)
                    c.figures = (d_runs / dt, ns, d_ns / dt / 1e7)  # ns: since attach if idle
                else:
                    c.figures = (max(0, events - c.events) / dt, None, None)
            c.at, c.run_ns, c.runs, c.events = now, run_ns, runs, events

    def _auto_limit(self) -> None:
        limit = self.settings.auto_cpu_percent
        for name, want in self.settings.wanted.items():
            cpu = self.costs[name].figures[2] if name in self.costs else None
            if want == "auto" and self.state.get(name) == "attached" and cpu is not None \
                    and cpu > limit:
                self.detach(name, f"detached: it took {cpu:.2f} % of a CPU, above "
                                  f"[probes] auto_cpu_percent ({limit:g} %)")

    def describe(self, name: str) -> P.Probe:
        """One probe as `xlb probes` shows it."""
        p, c = self.probes[name], self.costs[name]
        attached = self.state[name] == "attached"
        events, ns, cpu = c.figures
        return {"name": name, "kind": p.kind, "target": p.target, "state": self.state[name],
                "reason": self.reason[name], "doc": p.spec.doc, "needs": p.spec.needs,
                "feeds": p.spec.feeds, "events_per_s": round(events, 1) if attached else 0.0,
                "ns_per_run": round(ns, 1) if attached and ns is not None else None,
                "cpu_percent": round(cpu, 4) if attached and cpu is not None else None}

    def change(self, name: str, attach: bool) -> P.ProbeChange:
        """probe_attach / probe_detach: RefusedError if this kernel cannot run it."""
        if attach:
            try:
                changed = self.attach(name)
            except Unavailable as e:
                raise RefusedError(f"probe {name} cannot attach here: {e}") from None
        else:
            changed = self.detach(name)
        with self.lock:
            self.last = {**self.last, "probes": [self.describe(n) for n in self.probes]}
        return {"probe": self.describe(name), "changed": changed}
