"""Is what the agent owns still in place? Checked once per tick, restored where it can be.

Two things can be taken from under a running agent without it being asked: its XDP
program (`ip link set dev IF xdp off`: every VIP packet then goes to the host's stack and
fails) and its pins (`rm -rf /sys/fs/bpf/xlb/<instance>`: harmless until the next start,
which would build fresh maps and lose every established flow). Either is an alarm: logged,
raised as an event and listed in every snapshot until it is over. With `tamper =
"restore"` (the default) the agent puts things back: it re-attaches the same program (only
onto an empty hook, with XDP_FLAGS_UPDATE_IF_NOEXIST: a program someone else attached is
theirs and stays, even one attached between the look and the re-attach, which the kernel
refuses; that is an alarm, never a takeover) and re-pins the maps and the program it still
holds open, so nothing is lost.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xlb.api import protocol as P
from xlb.dataplane import bpfsys, loader, xdp
from xlb.dataplane.maps import SPECS, InstanceMaps, pin_dir
from xlb.errors import ForeignProgramError, XlbError
from xlb.paths import PIN_ROOT

log = logging.getLogger(__name__)
KEEP = 600.0  # seconds an alarm that is over stays in the snapshots


@dataclass(frozen=True)
class Owned:
    """What the agent attached and pinned: checked against the kernel every tick."""

    instance: str
    interface: str
    netns: str
    mode: str        # native | generic, as attached
    prog_id: int
    prog_fd: int     # held open by the agent: re-attach and re-pin need no compiler
    maps: InstanceMaps
    pin_root: str = PIN_ROOT


class Watch:
    """Compares what is in place with `owned` once per tick; alarms and restores."""

    def __init__(self, owned: Owned, restore: bool,
                 emit: Callable[[str, Any], None]) -> None:
        self.owned = owned
        self.restore = restore
        self.emit = emit
        self.alarms: dict[str, P.Alarm] = {}  # what -> the alarm, shown for KEEP seconds
        # kept open, as opening one in a namespace costs ~10 ms: pyroute2's to re-attach,
        # and a bare socket for the look of every tick (~0.02 ms, pyroute2's ~1 ms)
        self._netlink: Any = xdp.open_netlink(owned.netns)
        self._look: xdp.Look | None = xdp.Look(owned.netns)

    def close(self) -> None:
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None
        if self._look is not None:
            self._look.close()
            self._look = None

    def check(self) -> list[P.Alarm]:
        """One look (well under a millisecond); the alarms to show: those in force, and those
        restored in the last KEEP seconds (an operator must learn it happened)."""
        self._check("attach", self._attachment)
        self._check("pins", self._pins)
        now = time.time()
        for what, alarm in list(self.alarms.items()):
            if not alarm["active"] and now - alarm["since"] > KEEP:
                del self.alarms[what]
        return list(self.alarms.values())

    # -- what is looked at: (the problem or None, whether it is put right now) -------------
    def _attachment(self) -> tuple[str | None, bool]:
        o = self.owned
        if self._netlink is None or self._look is None:
            return f"lost sight of {o.interface}: restart the agent to look again", False
        try:
            now = xdp.query(o.interface, o.netns, self._look)
        except (XlbError, OSError) as e:  # the interface went away (its namespace may have too)
            return f"cannot see {o.interface}: {e}", False
        if now.prog_id == o.prog_id:
            return None, False
        where = f"{o.interface}" + (f" (netns {o.netns})" if o.netns else "")
        if now.programs:
            mode, prog_id = now.programs[0]
            return (f"another XDP program ({xdp.program(prog_id, mode).describe()}) replaced "
                    f"xlb's on {where}: left in place; VIP traffic is not balanced by xlb"
                    ), False
        problem = f"xlb's XDP program was detached from {where}"
        if not self.restore:
            return problem + ": VIP traffic fails (tamper = \"alarm\": not re-attached)", False
        try:  # onto the empty hook only: never in place of a program attached meanwhile
            xdp.attach(o.interface, o.prog_fd, o.mode, o.netns, self._netlink)
        except ForeignProgramError as e:
            what = xdp.Program(**e.program).describe() if e.program else "unknown"
            return (f"another XDP program ({what}) was attached to {where} before xlb's "
                    "could be re-attached: left in place; VIP traffic is not balanced by "
                    "xlb"), False
        except XlbError as e:
            return f"{problem}: VIP traffic fails; re-attaching failed: {e}", False
        return f"{problem}: re-attached ({o.mode} XDP, prog {o.prog_id})", True

    def _pins(self) -> tuple[str | None, bool]:
        o = self.owned
        folder = pin_dir(o.instance, o.pin_root)
        missing = [n for n in (*SPECS, loader.PROG_PIN)
                   if not os.path.exists(os.path.join(folder, n))]
        if not missing:
            return None, False
        problem = f"pins removed from {folder} ({', '.join(missing)})"
        if not self.restore:
            return (problem + ": a restart would lose every established flow (tamper = "
                    "\"alarm\": not re-pinned)"), False
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            for name in missing:
                fd = o.prog_fd if name == loader.PROG_PIN else o.maps[name].fd
                bpfsys.obj_pin(fd, os.path.join(folder, name))
        except (OSError, XlbError) as e:
            return f"{problem}: re-pinning failed ({e}); a restart would lose every " \
                "established flow", False
        return f"{problem}: re-pinned from the maps the agent holds", True

    # -- alarms ---------------------------------------------------------------------------
    def _check(self, what: str, look: Callable[[], tuple[str | None, bool]]) -> None:
        """Raise the alarm `what` when look() finds a problem: once, not every tick; a
        problem put right at once is raised and cleared in one event."""
        problem, fixed = look()
        current = self.alarms.get(what)
        if problem is None:
            if current is not None and current["active"]:
                current["active"] = False
                log.warning("alarm over: %s", current["message"])
                self._event(what, f"over: {current['message']}", cleared=True)
            return
        if current is not None and current["active"] and not fixed:
            return  # already raised
        self.alarms[what] = {"what": what, "since": time.time(), "message": problem,
                             "active": not fixed}
        log.error("ALARM %s", problem)
        self._event(what, problem, cleared=fixed)

    def _event(self, what: str, message: str, cleared: bool) -> None:
        event: P.AlarmEvent = {"kind": "alarm", "time": time.time(), "what": what,
                               "message": message, "cleared": cleared}
        self.emit("event", event)
