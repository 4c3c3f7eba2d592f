"""The console's connection to one agent: a subscription that reconnects by itself.

The subscription reads a blocking socket, so it runs in its own thread and
hands each message to the app with post_message (thread-safe); the UI thread
never waits on the network. Changes (drain, weight, ...) open a short-lived
connection of their own from a worker, so a slow change never stalls the
stream. Everything goes through AgentClient, the one API client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from xlb.api.client import AgentClient
from xlb.errors import XlbError

RETRY_FIRST, RETRY_MAX = 0.5, 5.0
READ_TIMEOUT = 10.0   # no snapshot for this long: the agent is hung, reconnect


class AgentLink:
    """Follows one agent socket; calls `deliver(path, kind, doc)` from its thread.

    kind is "hello" (status after connecting), "snapshot", "event", or "lost"
    (doc = {"error": ...}) when the connection fails or ends.
    """

    def __init__(self, path: str, deliver: Callable[[str, str, dict[str, Any]], None]):
        self.path = path
        self.deliver = deliver
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
                self.deliver(self.path, "lost", {"error": str(e)})
            else:
                self._client = client
                try:
                    self.deliver(self.path, "hello", client.call("status"))
                    delay = RETRY_FIRST
                    for kind, doc in client.subscribe():
                        if self._stop.is_set():
                            break
                        self.deliver(self.path, kind, doc)
                except XlbError as e:
                    if not self._stop.is_set():
                        self.deliver(self.path, "lost", {"error": str(e)})
                finally:
                    self._client = None
                    client.close()
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX)

    def call(self, method: str, **params: Any) -> Any:
        """One request on a connection of its own (blocking: run it in a worker)."""
        with AgentClient(self.path, timeout=READ_TIMEOUT) as client:
            return client.call(method, **params)
