"""The console's connection to one agent: a subscription that reconnects by itself.

The subscription reads a blocking socket, so it runs in its own thread and
posts each thing it hears to the app as a typed message (console.messages;
post_message is thread-safe); the UI thread never waits on the network.
Changes (drain, weight, ...) open a short-lived connection of their own from a
worker, so a slow change never stalls the stream. Everything goes through
AgentClient, the one API client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from textual.message import Message

from console.messages import AgentHello, EventArrived, LinkLost, SnapshotArrived
from xlb.api.client import AgentClient
from xlb.api.protocol import METHODS
from xlb.errors import ReadOnlyError, XlbError

RETRY_FIRST, RETRY_MAX = 0.5, 5.0
READ_TIMEOUT = 10.0   # no snapshot for this long: the agent is hung, reconnect


def notification(path: str, method: str, params: Any) -> Message | None:
    """The message for one notification (protocol.NOTIFICATIONS gives its shape), or None
    for one this console does not know: a newer agent may send more."""
    if method == "snapshot":
        return SnapshotArrived(path, params)
    if method == "event":
        return EventArrived(path, params)
    return None


class AgentLink:
    """Follows one agent socket; `post`s AgentHello, SnapshotArrived, EventArrived and
    LinkLost messages from its thread (the app's post_message)."""

    def __init__(self, path: str, post: Callable[[Message], object], read_only: bool = False):
        self.path = path
        self.post = post
        self.read_only = read_only  # then no change leaves it, whatever asks (the web view)
        self._stop = threading.Event()
        self._client: AgentClient | None = None
        self._thread = threading.Thread(target=self._run, name=f"xlb-link {path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            try:
                client.sock.shutdown(2)  # wakes the blocked read
            except OSError:
                pass

    def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            try:
                client = AgentClient(self.path, timeout=READ_TIMEOUT)
            except XlbError as e:
                self.post(LinkLost(self.path, str(e)))
            else:
                self._client = client
                try:
                    self.post(AgentHello(self.path, client.call("status")))
                    delay = RETRY_FIRST
                    for method, params in client.subscribe():
                        if self._stop.is_set():
                            break
                        message = notification(self.path, method, params)
                        if message is not None:
                            self.post(message)
                except XlbError as e:
                    if not self._stop.is_set():
                        self.post(LinkLost(self.path, str(e)))
                finally:
                    self._client = None
                    client.close()
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX)

    def call(self, method: str, **params: Any) -> Any:
        """One request on a connection of its own (blocking: run it in a worker)."""
        if self.read_only and METHODS[method].operator:
            raise ReadOnlyError(f"{method}: this console is read-only (--read-only)")
        with AgentClient(self.path, timeout=READ_TIMEOUT) as client:
            return client.call(method, **params)
