"""AgentClient: the one way the console and the CLI talk to an agent.

Blocking, one socket per client: the console runs it in threads and workers, the
CLI in its one thread. An error answer becomes the matching XlbError (RefusedError,
ReadOnlyError, InvalidParams, ApplyError, AuditError, else AgentError); a missing or
vanished agent is AgentUnavailable, one that turns the connection away AgentBusy.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

from xlb.api.protocol import JSONRPC, METHODS
from xlb.errors import AgentUnavailable, XlbError, from_rpc
from xlb.paths import RUN_ROOT

__all__ = ["RUN_ROOT", "AgentClient", "default_socket", "find_sockets"]


def find_sockets(root: str = RUN_ROOT) -> list[str]:
    """Every agent socket under `root` (one per instance)."""
    return sorted(glob.glob(os.path.join(root, "*.sock")))


def default_socket() -> str:
    """The only agent's socket; AgentUnavailable if there is none or more than one."""
    found = find_sockets()
    if len(found) == 1:
        return found[0]
    if not found:
        raise AgentUnavailable(f"no agent is running (no socket in {RUN_ROOT}): start one "
                               "with `xlb agent --config FILE`")
    raise AgentUnavailable(f"several agents run ({', '.join(found)}): choose with --socket")


class AgentClient:
    def __init__(self, path: str | None = None, timeout: float = 10.0):
        self.path = path or default_socket()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except PermissionError:
            self.sock.close()
            raise AgentUnavailable(f"cannot open {self.path}: not in the agent's socket group "
                                   "(or run as root)") from None
        except OSError as e:
            self.sock.close()
            raise AgentUnavailable(f"no agent answers on {self.path} "
                                   f"({e.strerror or e})") from None
        self.reader = self.sock.makefile("rb")
        self.ids = itertools.count(1)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> dict[str, Any]:
        try:
            line = self.reader.readline()
        except TimeoutError:
            raise AgentUnavailable(f"no answer from the agent on {self.path}") from None
        except OSError as e:
            raise AgentUnavailable(f"the connection to {self.path} failed: {e}") from None
        if not line:
            raise AgentUnavailable(f"the agent on {self.path} closed the connection")
        try:
            msg = json.loads(line)
        except ValueError:
            raise AgentUnavailable(f"the agent on {self.path} sent something that is not "
                                   "JSON") from None
        if not isinstance(msg, dict):
            raise AgentUnavailable(f"the agent on {self.path} sent {type(msg).__name__}")
        return msg

    def call(self, method: str, **params: Any) -> Any:
        """Call `method` (a name of protocol.METHODS) and return its result."""
        if method not in METHODS:
            raise ValueError(f"{method!r} is not a method of the agent's API")  # a bug here
        rid = next(self.ids)
        req = {"jsonrpc": JSONRPC, "id": rid, "method": method,
               "params": {k: v for k, v in params.items() if v is not None}}
        try:
            self.sock.sendall(json.dumps(req).encode() + b"\n")
        except OSError as e:
            raise AgentUnavailable(f"the connection to {self.path} failed: {e}") from None
        while True:
            msg = self._read()
            if "error" in msg and msg.get("id") in (rid, None):  # None: not tied to a
                raise _error(msg)                              # request (turned away)
            if msg.get("id") != rid:
                continue  # a notification of an earlier subscription
            return msg["result"]

    def subscribe(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(method, params) of every notification (protocol.NOTIFICATIONS), as they come."""
        self.call("subscribe")
        while True:
            msg = self._read()
            if "method" in msg:
                yield msg["method"], msg["params"]
            elif "error" in msg:
                raise _error(msg)


def _error(msg: dict[str, Any]) -> XlbError:
    err = msg["error"] if isinstance(msg["error"], dict) else {}
    return from_rpc(int(err.get("code", 0)), str(err.get("message", "")))
