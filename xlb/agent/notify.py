"""systemd's service protocol (sd_notify), through Debian's python3-systemd.

Under a `Type=notify` unit, systemd sets NOTIFY_SOCKET and waits for READY=1: the
agent sends it once its program is attached and its API listens, so units ordered
after it (and `systemctl start`) wait for a working load balancer. With WatchdogSec=
it also sets WATCHDOG_USEC, and the tick loop sends WATCHDOG=1 every tick: an agent
whose tick hangs is restarted. STOPPING=1 on shutdown. Outside systemd (no
NOTIFY_SOCKET) every call does nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from xlb.errors import XlbError

log = logging.getLogger(__name__)


class Notifier:
    """`env`: os.environ, whose NOTIFY_SOCKET python3-systemd uses; {} for a notifier
    that says nothing."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._send: Callable[[str], object] | None = None
        self.watchdog: float | None = None  # seconds systemd waits for WATCHDOG=1
        if not env.get("NOTIFY_SOCKET"):
            return
        try:
            from systemd.daemon import notify
        except ImportError:
            raise XlbError("NOTIFY_SOCKET is set (a Type=notify unit) but python3-systemd is "
                           "missing: install it (apt install python3-systemd) where the "
                           "agent's Python finds it") from None
        self._send = notify
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog = int(usec) / 1e6

    def send(self, *fields: str) -> None:
        if self._send is not None:
            self._send("\n".join(fields))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def alive(self) -> None:
        """From the tick loop: the agent is not hung (only with WatchdogSec=)."""
        if self.watchdog is not None:
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping; the data plane keeps running")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def check_tick(self, tick: float) -> None:
        """Say so when ticks are too far apart for the watchdog to see them in time."""
        if self.watchdog is not None and tick * 2 > self.watchdog:
            log.warning("the watchdog (WatchdogSec=%g) expects a sign of life more often "
                        "than every other tick (tick = %g s): raise WatchdogSec=",
                        self.watchdog, tick)
