"""AgentClient: the one way the console and the CLI talk to an agent.

Blocking, one socket per client: the console runs it in threads and workers, the
CLI in its one thread. An error answer becomes the matching XlbError (RefusedError,
ReadOnlyError, InvalidParams, ApplyError, AuditError, else AgentError); a missing or
vanished agent is AgentUnavailable, one that turns the connection away AgentBusy, a
socket this user may not open PrivilegeError (not permitted, like a read-only caller).

Every way an agent can fail to answer (no socket, a full listen queue, a hung or
stopped agent, a closed connection) is an AgentUnavailable whose text is one line
for people: the CLI prints it, never a traceback. A call waits at most `timeout`
seconds in all, even while notifications of an earlier subscription keep coming.
"""

from __future__ import annotations

import errno
import glob
import itertools
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from xlb.api.protocol import JSONRPC, METHODS
from xlb.errors import AgentUnavailable, PrivilegeError, XlbError, from_rpc
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
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except PermissionError:
            self.sock.close()
            raise PrivilegeError(f"cannot open {self.path}: not in the agent's socket group "
                                 "(or run as root)") from None
        except OSError as e:
            self.sock.close()
            raise AgentUnavailable(self._connect_failed(e)) from None
        self.reader = self.sock.makefile("rb")
        self.ids = itertools.count(1)

    def _connect_failed(self, e: OSError) -> str:
        if e.errno == errno.EAGAIN:  # a Unix socket's listen queue is full
            return (f"the agent on {self.path} accepts no connections (its queue is full: "
                    "it is hung or overloaded)")
        if isinstance(e, TimeoutError):
            return f"the agent on {self.path} did not accept within {self.timeout:g} s"
        return f"no agent answers on {self.path} ({e.strerror or e})"

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
            raise AgentUnavailable(f"no answer from the agent on {self.path} within "
                                   f"{self.timeout:g} s (it is hung or overloaded)") from None
        except OSError as e:
            raise AgentUnavailable(f"the connection to {self.path} failed: "
                                   f"{e.strerror or e}") from None
        if not line:
            raise AgentUnavailable(f"the agent on {self.path} closed the connection")
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
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
        deadline = time.monotonic() + self.timeout
        try:
            self.sock.sendall(json.dumps(req).encode() + b"\n")
        except TimeoutError:
            raise AgentUnavailable(f"the agent on {self.path} took no request within "
                                   f"{self.timeout:g} s (it is hung or overloaded)") from None
        except OSError as e:
            raise AgentUnavailable(f"the connection to {self.path} failed: "
                                   f"{e.strerror or e}") from None
        try:
            while True:  # the whole call within `timeout`, notifications or not
                self.sock.settimeout(max(deadline - time.monotonic(), 1e-3))
                msg = self._read()
                if isinstance(msg.get("error"), dict) and msg.get("id") is None:
                    raise _error(msg)  # not tied to a request: turned away
                if msg.get("id") != rid:
                    continue  # a notification of an earlier subscription
                return self._result(msg)
        finally:
            if self.sock.fileno() != -1:
                self.sock.settimeout(self.timeout)

    def _result(self, msg: dict[str, Any]) -> Any:
        """The answer's result, or its error as an XlbError."""
        if isinstance(msg.get("error"), dict):
            raise _error(msg)
        if "result" not in msg:
            raise AgentUnavailable(f"the agent on {self.path} answered neither a result nor "
                                   "an error")
        return msg["result"]

    def subscribe(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Subscribe, then (method, params) of every notification (protocol.NOTIFICATIONS)."""
        self.call("subscribe")
        yield from self.notifications()

    def notifications(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(method, params) of every notification, as they come, on a connection that has
        subscribed already."""
        while True:
            msg = self._read()
            if "method" in msg:
                yield msg["method"], msg.get("params") or {}
            elif "error" in msg:
                raise _error(msg)


def _error(msg: dict[str, Any]) -> XlbError:
    """An error answer {"code", "message"} as the XlbError it stands for."""
    err = msg["error"] if isinstance(msg["error"], dict) else {}
    code = err.get("code")
    return from_rpc(code if isinstance(code, int) else 0, str(err.get("message", "")))
