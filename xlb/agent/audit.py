"""The audit log: one JSON line per change (who, when, what, before, after), and per
refused attempt (who tried what).

A change is audited or does not happen: its record is written whole and fsync'd
before the change is made (`AuditLog.change`), and taken back if the change then
fails. A record that cannot be written (a full disk, an I/O error) leaves no partial
line behind and stops the change with AuditError. A line torn by a crash never glues
itself to the next record: the next write starts on a line of its own, and reading
skips what does not parse (recovering a record glued to a torn line by an older agent).

Reading (`tail`) starts at the end of the file and reads only what it returns, within
a byte budget, whatever the size of the log.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from xlb.api.protocol import AUDIT_BYTES, AuditEntry
from xlb.errors import AuditError

log = logging.getLogger(__name__)

BLOCK = 1 << 16              # read backwards in blocks of this size
RECORD_START = b'{"action": '  # every record's first key (sort_keys)
REFUSALS_PER_MINUTE = 10     # refused attempts recorded per user; the rest are counted


class AuditLog:
    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()  # one writer at a time: records and take-backs
        self._refusals: dict[int, tuple[float, int, int]] = {}  # uid: (window, kept, dropped)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    # -- writing ------------------------------------------------------------------------
    @contextmanager
    def change(self, *, uid: int, user: str, action: str, params: dict[str, Any],
               before: Any, after: Any) -> Iterator[AuditEntry]:
        """Record a change durably, then run the body (which makes it). If the record
        cannot be written, AuditError and the body never runs; if the body fails, the
        record is taken back and the error goes on."""
        entry = _entry(uid, user, action, params, before, after, "ok")
        with self.lock:
            start = self._write(entry)
            try:
                yield entry
            except BaseException:
                self._take_back(start)
                raise

    def record(self, *, uid: int, user: str, action: str, params: dict[str, Any],
               before: Any, after: Any) -> AuditEntry:
        """Record what the agent did of its own accord (a discarded intent): durably, or
        AuditError."""
        entry = _entry(uid, user, action, params, before, after, "ok")
        with self.lock:
            self._write(entry)
        return entry

    def refused(self, *, uid: int, user: str, action: str, params: dict[str, Any],
                why: str) -> AuditEntry | None:
        """Record an attempt that was refused (nothing changed). At most
        REFUSALS_PER_MINUTE per user are written; the next written one counts the
        others. A failure to write is logged, never raised: the caller is refused anyway.
        Returns the entry written, if any."""
        with self.lock:
            now = time.monotonic()
            window, kept, dropped = self._refusals.get(uid, (now, 0, 0))
            if now - window >= 60:
                window, kept = now, 0
            if kept >= REFUSALS_PER_MINUTE:
                self._refusals[uid] = (window, kept, dropped + 1)
                return None
            result = f"refused: {why}"
            if dropped:
                result += f" ({dropped} earlier attempt(s) of this user not recorded)"
            self._refusals[uid] = (window, kept + 1, 0)
            entry = _entry(uid, user, action, params, {}, {}, result)
            try:
                self._write(entry)
            except AuditError as e:
                log.error("refused %s from %s not recorded: %s", action, user, e)
                return None
        return entry

    def _write(self, entry: AuditEntry) -> int:
        """Append one record whole and fsync it; the file's size before it. Call with
        the lock held. On failure the file is cut back to that size: no torn line."""
        line = json.dumps(entry, sort_keys=True, allow_nan=False).encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                         0o640)
        except OSError as e:
            raise AuditError(self._failure(entry, e)) from e
        try:
            try:
                start = os.lseek(fd, 0, os.SEEK_END)
                if start and os.pread(fd, 1, start - 1) != b"\n":
                    line = b"\n" + line  # a torn last line (a crash mid-write): end it
            except OSError as e:
                raise AuditError(self._failure(entry, e)) from e
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                if start == 0:
                    _fsync_dir(self.path)  # a new file: its name must survive too
            except OSError as e:
                _cut(fd, start)
                raise AuditError(self._failure(entry, e)) from e
        finally:
            os.close(fd)
        return start

    def _take_back(self, start: int) -> None:
        """Remove the last record (its change failed), cutting the file at `start`."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                _cut(fd, start)
            finally:
                os.close(fd)
        except OSError as e:
            log.error("the audit record of a change that failed could not be taken back "
                      "from %s: %s", self.path, e)

    def _failure(self, entry: AuditEntry, e: OSError) -> str:
        subject = entry["params"].get("address") or entry["params"].get("name") or ""
        what = f"{entry['action']} {subject}".strip()
        return (f"{what} not applied: its audit record could not be written to {self.path} "
                f"({e.strerror or e}); nothing changed")

    # -- reading ------------------------------------------------------------------------
    def tail(self, n: int = 50, budget: int = AUDIT_BYTES) -> list[AuditEntry]:
        """The last `n` records, oldest first, read from the end of the file: at most
        `budget` bytes of it are read (older records beyond are left off)."""
        if n <= 0:
            return []
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return []
        out: list[AuditEntry] = []
        with f:
            for line in _lines_backwards(f, budget):
                entry = _parse(line)
                if entry is not None:
                    out.append(entry)
                    if len(out) == n:
                        break
        out.reverse()
        return out


def takeover(audit: AuditLog) -> Callable[[dict[str, Any]], AbstractContextManager[Any]]:
    """What `load_instance(force=True)` records before it replaces an XDP program xlb does
    not own (lifecycle.Takeover): who forced it, which program went (id, name, tag,
    mode) and which came; written durably first, or the program stays."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid{uid}"

    def record(what: dict[str, Any]) -> AbstractContextManager[Any]:
        hook = f"XDP on {what['interface']}" + (f" (netns {what['netns']})"
                                                if what["netns"] else "")
        return audit.change(uid=uid, user=user, action="xdp_takeover",
                            params={"name": what["instance"], "interface": what["interface"],
                                    "netns": what["netns"], "force": True},
                            before={hook: what["replaced"]}, after={hook: what["by"]})
    return record


def _entry(uid: int, user: str, action: str, params: dict[str, Any], before: Any,
           after: Any, result: str) -> AuditEntry:
    return {"time": time.time(), "uid": uid, "user": user, "action": action,
            "params": params, "before": before, "after": after, "result": result}


def _cut(fd: int, size: int) -> None:
    os.ftruncate(fd, size)  # shrinking needs no space: it works on a full disk
    os.fsync(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines_backwards(f: Any, budget: int) -> Iterator[bytes]:
    """The file's non-empty lines, last first, reading at most `budget` bytes; a line
    that does not fit in what is left of the budget ends the reading."""
    pos = f.seek(0, os.SEEK_END)
    rest = b""
    while pos > 0 and budget > 0:
        size = min(BLOCK, pos, budget)
        pos -= size
        budget -= size
        f.seek(pos)
        parts = (f.read(size) + rest).split(b"\n")
        rest = parts[0]
        for line in reversed(parts[1:]):
            if line:
                yield line
    if pos == 0 and rest:
        yield rest


def _parse(line: bytes) -> AuditEntry | None:
    """A record, or None for a torn line. A record glued to a torn one (written after a
    crash by an agent that did not end the torn line) is found by its first key."""
    for candidate in (line, line[line.rfind(RECORD_START):]):
        try:
            doc = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(doc, dict) and "action" in doc:
            return doc  # type: ignore[return-value]
    return None
