"""The audit log: one JSON line per change (who, when, what, before, after).

Appended and fsync'd before the caller is told the change happened, so an
operator's action is on disk even if the agent dies right after.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from xlb.api.protocol import AuditEntry


class AuditLog:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def append(self, *, uid: int, user: str, action: str, params: dict[str, Any],
               before: Any, after: Any, result: str = "ok") -> AuditEntry:
        entry: AuditEntry = {"time": time.time(), "uid": uid, "user": user, "action": action,
                 "params": params, "before": before, "after": after, "result": result}
        line = json.dumps(entry, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def tail(self, n: int = 50) -> list[AuditEntry]:
        try:
            with open(self.path) as f:
                lines = f.readlines()[-n:] if n > 0 else []
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash: skip it, keep the rest
        return out
