"""The console's connection to one agent: a subscription that reconnects by itself.

The subscription reads a blocking socket, so it runs in its own thread and
posts each thing it hears to the app as a typed message (console.messages;
post_message is thread-safe); the UI thread never waits on the network.
The flow trace has a link of its own (TraceLink), alive only while the Flows
view is shown. Changes (drain, weight, ...) open a short-lived connection of their own from a
worker, so a slow change never stalls the stream. Everything goes through
AgentClient, the one API client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from textual.message import Message

from console.messages import AgentHello, EventArrived, LinkLost, SnapshotArrived, TraceArrived
from console.tracefeed import TraceFeed
from xlb.api.client import AgentClient
from xlb.api.protocol import METHODS
from xlb.errors import ReadOnlyError, XlbError

RETRY_FIRST, RETRY_MAX = 0.5, 5.0
READ_TIMEOUT = 10.0   # no snapshot for this long: the agent is hung, reconnect
HISTORY = 500         # recent trace events asked for when the Flows view subscribes


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
        self._delay = RETRY_FIRST
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
        """Follow the socket until stopped: connect, run a session, wait, again (waiting
        twice as long after each failure, up to RETRY_MAX; a session that got going starts
        the wait over)."""
        self._delay = RETRY_FIRST
        while not self._stop.is_set():
            try:
                client = AgentClient(self.path, timeout=READ_TIMEOUT)
            except XlbError as e:
                self._failed(e)
            else:
                self._client = client
                try:
                    self._session(client)
                except XlbError as e:
                    if not self._stop.is_set():
                        self._failed(e)
                finally:
                    self._client = None
                    client.close()
            self._stop.wait(self._delay)
            self._delay = min(self._delay * 2, RETRY_MAX)

    def _session(self, client: AgentClient) -> None:
        """Hello, then every notification of the subscription, until it ends."""
        self.post(AgentHello(self.path, client.call("status")))
        self._delay = RETRY_FIRST
        for method, params in client.subscribe():
            if self._stop.is_set():
                break
            message = notification(self.path, method, params)
            if message is not None:
                self.post(message)

    def _failed(self, e: XlbError) -> None:
        self.post(LinkLost(self.path, str(e)))

    def call(self, method: str, **params: Any) -> Any:
        """One request on a connection of its own (blocking: run it in a worker)."""
        if self.read_only and METHODS[method].operator:
            raise ReadOnlyError(f"{method}: this console is read-only (--read-only)")
        with AgentClient(self.path, timeout=READ_TIMEOUT) as client:
            return client.call(method, **params)


class TraceLink(AgentLink):
    """Follows one agent's flow trace, while the Flows view is shown: `trace_subscribe` on
    a connection of its own (the snapshots never wait behind a burst of events), every
    batch into the feed, and a TraceArrived to wake the app only when the feed was read
    since the last one. The snapshot link reports the agent's comings and goings."""

    def __init__(self, path: str, post: Callable[[Message], object], feed: TraceFeed,
                 history: int = HISTORY):
        super().__init__(path, post)
        self.feed, self.history = feed, history

    def _session(self, client: AgentClient) -> None:
        status = client.call("trace_subscribe", history=self.history)
        self._delay = RETRY_FIRST
        self.feed.subscribed(self.path, status)
        self.post(TraceArrived(self.path))
        client.sock.settimeout(None)  # no trace may run for hours: silence is no hang here
        for method, params in client.notifications():
            if self._stop.is_set():
                break
            if method == "trace" and self.feed.add(self.path, params):  # type: ignore[arg-type]
                self.post(TraceArrived(self.path))

    def _failed(self, e: XlbError) -> None:
        if self.feed.failed(self.path, str(e)):
            self.post(TraceArrived(self.path))
