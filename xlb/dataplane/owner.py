"""One writer per instance: while an agent runs it holds an exclusive lock on
/run/xlb/<instance>/owner.lock, and everything else that would write the instance's
data plane (a second agent, `xlb dataplane load|apply|unload`) refuses, naming it.

The lock is an open-file-description lock (fcntl F_OFD_SETLK) on the whole file: the
kernel drops it when the agent exits, however it exits (SIGKILL included), so a restarted
agent takes over at once and a stale lock file means nothing. Others look with
F_OFD_GETLK, which takes nothing, so looking can never make an agent's start fail. The
file's content says who holds it, for the refusal's message.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import time
from typing import Any

from xlb.errors import OwnedError
from xlb.paths import RUN_ROOT, run_dir

LOCK = "owner.lock"
_HELD: set[int] = set()  # lock descriptors this process holds


def _close_held_in_child() -> None:
    """A forked child (pyroute2's short-lived netns helper) must not share the lock's open
    file description: it could outlive a killed agent by a moment and keep the lock."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)
_FLOCK = "hhqqi4x"  # struct flock: l_type, l_whence, l_start, l_len (0 = to the end), l_pid


def _lock(fd: int, cmd: int, kind: int) -> int:
    """fcntl(fd, cmd) with a whole-file struct flock of `kind`; the l_type it returns."""
    out = fcntl.fcntl(fd, cmd, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
    return int(struct.unpack(_FLOCK, out)[0])


def lock_path(instance: str, run_root: str = RUN_ROOT) -> str:
    return os.path.join(run_dir(instance, run_root), LOCK)


class Ownership:
    """The exclusive right to write one instance's data plane, held until release()."""

    def __init__(self, instance: str, run_root: str = RUN_ROOT):
        self.instance = instance
        self.path = lock_path(instance, run_root)
        self.fd = -1

    def acquire(self, who: str) -> None:
        """Take the lock, or raise OwnedError naming the holder."""
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
        except OSError as e:
            holder = _read(fd)
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise OwnedError(refusal(self.instance, f"start another {who}", holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "who": who,
                                  "since": time.time()}).encode(), 0)
        self.fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        if self.fd >= 0:
            _HELD.discard(self.fd)
            os.close(self.fd)  # closing the descriptor drops the lock
            self.fd = -1


def holder(instance: str, run_root: str = RUN_ROOT) -> dict[str, Any] | None:
    """Who holds the instance's lock (pid, who, since), or None when nobody does. The
    holder may be this very process (an agent loading its own data plane)."""
    try:
        fd = os.open(lock_path(instance, run_root), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if _lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK) == fcntl.F_UNLCK:
            return None  # nobody holds it (a lock file an exited agent left behind)
        return _read(fd) or {"pid": 0, "who": "agent", "since": 0.0}
    finally:
        os.close(fd)


def refuse_if_owned(instance: str, what: str, run_root: str = RUN_ROOT) -> None:
    """OwnedError if another process owns `instance`: `what` would write under its feet."""
    h = holder(instance, run_root)
    if h is not None and h.get("pid") != os.getpid():
        raise OwnedError(refusal(instance, what, h))


def refusal(instance: str, what: str, h: dict[str, Any] | None) -> str:
    h = h or {}
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(h.get("since") or 0)))
    return (f"cannot {what}: instance {instance} is run by its {h.get('who', 'agent')} (pid "
            f"{h.get('pid', '?')}, since {since}), the one writer of its data plane; change "
            "it through the agent (xlb drain, weight, backend, vip), or stop the agent first")


def _read(fd: int) -> dict[str, Any]:
    try:
        doc = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}
