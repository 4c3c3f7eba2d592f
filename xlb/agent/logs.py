"""The agent's log: what it did and why, for the people who run it.

INFO: start and stop, every change (who, what, before and after), every health
transition, attach and re-attach, every client or request refused; WARNING and
ERROR: problems, each with its cause. Nothing per tick or per packet at INFO (DEBUG
adds each request and what was skipped). Lines go to stderr, timestamped; under
systemd, whose journal collects stderr, they go to the journal itself instead, with
their priority (so `journalctl -p warning` works) and without a second timestamp.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error")


def under_journal(env: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """Whether `fd` is the journal's stream: systemd sets JOURNAL_STREAM to its
    device:inode (a redirected stderr no longer matches)."""
    try:
        dev, ino = (int(x) for x in env.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def handler() -> logging.Handler:
    if under_journal():
        try:
            from systemd.journal import JournalHandler
        except ImportError:  # stderr reaches the journal all the same
            pass
        else:
            h: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="xlb-agent")
            h.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            return h
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter(LOG_FORMAT))
    return h


def setup(level: str = "info") -> None:
    root = logging.getLogger("xlb")
    root.addHandler(handler())
    root.setLevel(level.upper())
