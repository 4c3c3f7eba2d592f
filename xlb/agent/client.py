"""AgentClient: the one way consoles and CLI commands talk to an agent."""

from __future__ import annotations

import glob
import itertools
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

from xlb.dataplane.manager import RUN_ROOT

REFUSED = -32002  # the agent's error code for an operation it will not do as asked


class AgentError(Exception):
    """The agent answered with an error (code and message from JSON-RPC)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def find_sockets(root: str = RUN_ROOT) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "*.sock")))


def default_socket() -> str:
    found = find_sockets()
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no agent is running (no socket in {RUN_ROOT}): start one "
                                "with `xlb agent --config FILE`")
    raise FileNotFoundError(f"several agents run ({', '.join(found)}): choose with --socket")


class AgentClient:
    def __init__(self, path: str | None = None, timeout: float = 10.0):
        self.path = path or default_socket()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(self.path)
        except PermissionError:
            raise PermissionError(f"cannot open {self.path}: not in the agent's socket group "
                                  "(or run as root)") from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise FileNotFoundError(f"no agent answers on {self.path}") from None
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
        line = self.reader.readline()
        if not line:
            raise ConnectionError(f"the agent on {self.path} closed the connection")
        return json.loads(line)  # type: ignore[no-any-return]

    def call(self, method: str, **params: Any) -> Any:
        rid = next(self.ids)
        req = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self._read()
            if msg.get("id") != rid:
                continue  # a notification of an earlier subscription
            if "error" in msg:
                raise AgentError(msg["error"]["code"], msg["error"]["message"])
            return msg["result"]

    def subscribe(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(kind, doc) for every snapshot and event, as they come."""
        self.call("subscribe")
        while True:
            msg = self._read()
            if "method" in msg:
                yield msg["method"], msg["params"]
