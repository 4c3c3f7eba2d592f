"""The audit log on its own: records whole or not at all, taken back when the change
fails, torn lines that hide nothing, reading from the end within a budget, refused
attempts at a bounded pace. (tests/agent/test_hostile.py fills a real disk.)"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from xlb.agent import audit as A
from xlb.agent.audit import AuditLog
from xlb.errors import AuditError


def change(log: AuditLog, i: int) -> None:
    with log.change(uid=0, user="root", action="weight", params={"address": "10.0.1.2",
                    "weight": i}, before={"web": None}, after={"web": {"weight": i}}):
        pass


def weights(log: AuditLog, n: int = 50) -> list[int]:
    return [e["params"]["weight"] for e in log.tail(n)]


def test_records_are_read_back_newest_last(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "a" / "audit.jsonl"))
    assert log.tail() == []
    for i in range(5):
        change(log, i)
    assert weights(log) == [0, 1, 2, 3, 4]
    assert weights(log, 2) == [3, 4]
    assert log.tail(0) == []
    assert oct(os.stat(log.path).st_mode & 0o777) == oct(0o640)


def test_a_failed_change_takes_its_record_back(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "audit.jsonl"))
    change(log, 1)
    size = os.path.getsize(log.path)
    with pytest.raises(ZeroDivisionError):
        with log.change(uid=0, user="root", action="drain", params={}, before={}, after={}):
            assert os.path.getsize(log.path) > size, "written before the change is made"
            raise ZeroDivisionError
    assert os.path.getsize(log.path) == size and weights(log) == [1]


def test_a_short_write_leaves_no_torn_line_and_no_change(tmp_path: Path,
                                                         monkeypatch: Any) -> None:
    """A full disk: the first write takes 10 bytes, the next fails with ENOSPC."""
    log = AuditLog(str(tmp_path / "audit.jsonl"))
    change(log, 1)
    size = os.path.getsize(log.path)
    real_write = os.write
    calls: list[int] = []

    def full_disk(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(A.os, "write", full_disk)
    ran = False
    with pytest.raises(AuditError, match=r"^weight 10.0.1.2 not applied: its audit record "
                       r"could not be written to .*audit.jsonl \(No space left on device\); "
                       r"nothing changed$"):
        with log.change(uid=0, user="root", action="weight",
                        params={"address": "10.0.1.2", "weight": 2}, before={}, after={}):
            ran = True
    monkeypatch.undo()
    assert not ran, "the change must not be made without its record"
    assert os.path.getsize(log.path) == size
    change(log, 3)
    assert weights(log) == [1, 3]


def test_torn_lines_hide_nothing(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "audit.jsonl"))
    change(log, 1)
    with open(log.path, "ab") as f:
        f.write(b'{"action": "weight", "aft')  # a crash mid-write
    change(log, 2)
    with open(log.path, "ab") as f:  # an older agent glued its record to a torn line
        f.write(b'{"action": "dra' + json.dumps(
            {"action": "weight", "params": {"weight": 3}}, sort_keys=True).encode() + b"\n")
    change(log, 4)
    assert weights(log) == [1, 2, 3, 4]
    lines = Path(log.path).read_bytes().split(b"\n")
    assert lines[1] == b'{"action": "weight", "aft', "the torn line is left alone"


def test_reading_starts_at_the_end_within_a_budget(tmp_path: Path, monkeypatch: Any) -> None:
    log = AuditLog(str(tmp_path / "audit.jsonl"))
    with open(log.path, "wb") as f:  # as the agent writes them, without 3000 fsyncs
        f.write(b"".join(json.dumps({"action": "weight", "params": {"weight": i}},
                                    sort_keys=True).encode() + b"\n" for i in range(3000)))
    size = os.path.getsize(log.path)
    monkeypatch.setattr(A, "BLOCK", 4096)
    read: list[int] = []
    real_open = open

    class Counting:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.f.close()

        def read(self, n: int) -> bytes:
            read.append(n)
            return bytes(self.f.read(n))

    monkeypatch.setattr("builtins.open", lambda *a, **k: Counting(real_open(*a, **k)))
    assert weights(log, 10) == list(range(2990, 3000))
    assert sum(read) <= 3 * 4096 < size, "only the end of the file is read"
    read.clear()
    few = log.tail(1000, budget=20_000)
    assert sum(read) <= 20_000 and 0 < len(few) < 1000, "the budget bounds the reading"
    assert few[-1]["params"]["weight"] == 2999, "the newest records are the ones kept"


def test_refused_attempts_are_recorded_at_a_bounded_pace(tmp_path: Path,
                                                         monkeypatch: Any) -> None:
    log = AuditLog(str(tmp_path / "audit.jsonl"))
    clock = [1000.0]
    monkeypatch.setattr(A.time, "monotonic", lambda: clock[0])
    kept = [log.refused(uid=65534, user="nobody", action="drain",
                        params={"address": "10.0.1.2"}, why="read-only")
            for _ in range(A.REFUSALS_PER_MINUTE + 5)]
    assert sum(e is not None for e in kept) == A.REFUSALS_PER_MINUTE
    assert log.refused(uid=1000, user="alice", action="drain", params={},
                       why="read-only") is not None, "the pace is per user"
    clock[0] += 60
    entry = log.refused(uid=65534, user="nobody", action="drain", params={}, why="read-only")
    assert entry is not None and entry["result"] == (
        "refused: read-only (5 earlier attempt(s) of this user not recorded)")
    entries = log.tail(100)
    assert len(entries) == A.REFUSALS_PER_MINUTE + 2
    assert all(e["before"] == e["after"] == {} for e in entries)
