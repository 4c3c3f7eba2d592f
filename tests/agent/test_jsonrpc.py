"""JSON-RPC 2.0 as written: notifications are never answered, batches are answered with
an array; and the fan-out: a snapshot is encoded once for all its subscribers.

Real agent processes (tests/agent/test_agent.py's fixture) in private namespaces, and
an in-process Server for counting encodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.test_agent import (
    AgentProc,
    as_nobody,
    backends,
    config,
    running_agent,
    strict_json,
)
from xlb.api import protocol as P


class Conn:
    """A raw connection to the agent: lines out, lines in (strict JSON)."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.reader = self.sock.makefile("rb")

    def send(self, doc: Any) -> None:
        self.sock.sendall((doc if isinstance(doc, bytes) else json.dumps(doc).encode())
                          + b"\n")

    def read(self) -> Any:
        line = self.reader.readline()
        assert line, "the agent closed the connection"
        return strict_json(line)

    def next_answer_after(self, doc: Any) -> Any:
        """Send `doc`, then a marker request: the first line back must be the answer to
        `doc` or, when `doc` gets none, the marker's."""
        self.send(doc)
        self.send({"jsonrpc": "2.0", "id": "marker", "method": "vips"})
        return self.read()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def agent(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """An agent without health checks (every backend healthy, whatever the pace)."""
    yield from running_agent(roots, "none")


@pytest.fixture
def conn(agent: AgentProc) -> Iterator[Conn]:
    c = Conn(agent.socket)
    yield c
    c.close()


def req(method: str, rid: Any = None, **params: Any) -> dict[str, Any]:
    """A request; without `rid`, a notification (no id member at all)."""
    doc: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if rid is not None:
        doc["id"] = rid
    return doc


def is_marker(reply: Any) -> bool:
    return isinstance(reply, dict) and reply.get("id") == "marker" and "result" in reply


# -- notifications ---------------------------------------------------------------------------

@pytest.mark.parametrize("notification", [
    req("vips"),
    req("reboot"),                                   # unknown method
    req("drain"),                                    # invalid params
    {"jsonrpc": "2.0", "method": "weight", "params": [1]},
    b'{"jsonrpc": "2.0", "method": "weight", "params": {"address": "10.0.1.2", '
    b'"weight": NaN}}',
])
def test_a_notification_gets_no_answer(agent: AgentProc, conn: Conn, notification: Any) -> None:
    assert is_marker(conn.next_answer_after(notification))
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["weight"] == 3


def test_id_null_is_a_request_not_a_notification(conn: Conn) -> None:
    reply = conn.next_answer_after({**req("vips"), "id": None})
    assert reply["id"] is None and "result" in reply


def test_a_notification_runs_and_is_audited(agent: AgentProc, conn: Conn) -> None:
    assert is_marker(conn.next_answer_after(req("drain", address="10.0.1.2", vip="web")))
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["state"] in ("draining", "drained")
        (entry,) = c.call("audit")
    assert (entry["user"], entry["action"]) == ("root", "drain")


NOBODY_NOTIFIES = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(json.dumps({"jsonrpc": "2.0", "method": "drain",
                      "params": {"address": "10.0.1.2", "vip": "web"}}).encode() + b"\n")
s.sendall(json.dumps({"jsonrpc": "2.0", "method": "vips", "id": "marker"}).encode() + b"\n")
print(s.makefile("rb").readline().decode().strip())
"""


def test_a_read_only_notification_is_refused_and_audited(agent: AgentProc) -> None:
    """No answer tells a read-only peer its change was refused; the audit log does."""
    first = json.loads(as_nobody(agent, NOBODY_NOTIFIES).stdout)
    assert first["id"] == "marker", first
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["state"] == "active"
        (entry,) = c.call("audit")
    assert (entry["user"], entry["action"], entry["result"]) == (
        "nobody", "drain", "refused: read-only")


# -- batches ---------------------------------------------------------------------------------

def test_a_batch_is_answered_with_an_array_in_order(agent: AgentProc, conn: Conn) -> None:
    batch = [req("vips", 1), req("weight", address="10.0.1.2", vip="web", weight=5),
             {"foo": "bar"}, req("reboot", 3), req("drain", 4), req("audit", "a", n=5),
             req("reboot")]
    reply = conn.next_answer_after(batch)
    assert isinstance(reply, list), reply
    assert [r["id"] for r in reply] == [1, None, 3, 4, "a"]
    assert {r["name"] for r in reply[0]["result"]} == {"web", "dns"}
    assert [r.get("error", {}).get("code") for r in reply] == [None, -32600, -32601, -32602,
                                                               None]
    (entry,) = reply[4]["result"]  # the notification before it ran, and was audited
    assert (entry["action"], entry["params"]["weight"]) == ("weight", 5)
    assert is_marker(conn.read())
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["weight"] == 5


def test_a_batch_of_notifications_gets_no_answer(agent: AgentProc, conn: Conn) -> None:
    batch = [req("weight", address="10.0.1.2", vip="web", weight=4), req("vips")]
    assert is_marker(conn.next_answer_after(batch))
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["weight"] == 4


@pytest.mark.parametrize("batch,why", [
    (b"[]", "empty batch"),
    (json.dumps([req("vips", i) for i in range(P.MAX_BATCH + 1)]).encode(),
     f"at most {P.MAX_BATCH}"),
], ids=["empty", "oversized"])
def test_an_empty_or_oversized_batch_is_one_error(agent: AgentProc, conn: Conn, batch: bytes,
                                                  why: str) -> None:
    reply = conn.next_answer_after(batch)
    assert isinstance(reply, dict), reply
    assert reply["id"] is None and reply["error"]["code"] == -32600
    assert why in reply["error"]["message"]
    assert is_marker(conn.read())


NOBODY_BATCH = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(json.dumps([
    {"jsonrpc": "2.0", "method": "vips", "id": 1},
    {"jsonrpc": "2.0", "method": "drain", "id": 2,
     "params": {"address": "10.0.1.2", "vip": "web"}}]).encode() + b"\n")
print(s.makefile("rb").readline().decode().strip())
"""


def test_a_batch_keeps_the_operator_rule_per_request(agent: AgentProc) -> None:
    vips, drain = json.loads(as_nobody(agent, NOBODY_BATCH).stdout)
    assert vips["id"] == 1 and "result" in vips
    assert drain["id"] == 2 and drain["error"]["code"] == -32001
    with agent.client() as c:
        assert backends(c)["10.0.1.2"]["state"] == "active"
        (entry,) = c.call("audit")
    assert (entry["user"], entry["result"]) == ("nobody", "refused: read-only")


def test_subscribing_in_a_batch_starts_the_stream_after_its_answer(conn: Conn) -> None:
    conn.send([req("subscribe", 1), req("vips", 2)])
    reply = conn.read()
    assert [r["id"] for r in reply] == [1, 2] and reply[0]["result"]["subscribed"]
    note = conn.read()
    assert note["method"] in P.NOTIFICATIONS and "id" not in note


# -- the fan-out -----------------------------------------------------------------------------

def test_a_snapshot_is_encoded_once_for_all_subscribers(tmp_path: Any,
                                                         monkeypatch: Any) -> None:
    """Ten subscribers, one snapshot: one encoding, the same bytes to each of them."""
    from xlb.agent import core, server
    from xlb.agent.settings import load

    monkeypatch.setattr(core, "run_dir", lambda name: str(tmp_path))
    path = tmp_path / "agent.toml"
    path.write_text(config(str(tmp_path), "none"))
    agent = core.Agent(load(str(path)))
    encoded: list[str] = []
    real = server._encode

    def counting(msg: dict[str, Any], *args: Any, **kw: Any) -> bytes:
        if msg.get("method") == "snapshot":
            encoded.append(msg["method"])
        return real(msg, *args, **kw)

    monkeypatch.setattr(server, "_encode", counting)
    srv = server.Server(agent)
    snapshot = {"tick": 1, "pad": "x" * 1000}

    async def main() -> list[bytes]:
        await srv.serve()
        subs = [await asyncio.open_unix_connection(agent.settings.socket) for _ in range(10)]
        for r, w in subs:
            w.write(json.dumps(req("subscribe", 1)).encode() + b"\n")
            assert "result" in json.loads(await r.readline())
        for _ in range(500):  # the server adds each one right after its answer
            if len(srv.subscribers) == 10:
                break
            await asyncio.sleep(0.01)
        agent.emit("snapshot", snapshot)
        lines = [await asyncio.wait_for(r.readline(), 10) for r, _ in subs]
        for _, w in subs:
            w.close()
        return lines

    try:
        lines = asyncio.run(main())
    finally:
        srv.close()
        if os.path.exists(agent.settings.socket):
            os.unlink(agent.settings.socket)
    assert [json.loads(line)["params"] for line in lines] == [snapshot] * 10
    assert len(encoded) == 1, f"the snapshot was encoded {len(encoded)} times for 10 subscribers"


def test_a_subscriber_s_batch_answer_is_never_cut_by_a_snapshot(conn: Conn) -> None:
    """A batch is written answer by answer; the snapshots of a subscribed connection
    wait until its array is whole, so every line stays one JSON document."""
    conn.send(req("subscribe", 0))
    batch = [req("status", i) for i in range(P.MAX_BATCH)]
    arrays, snapshots = 0, 0
    end = time.monotonic() + 3  # a dozen ticks (0.25 s apart), batches back to back
    while time.monotonic() < end:
        conn.send(batch)
        while True:
            doc = conn.read()  # strict JSON, or the test fails
            if isinstance(doc, list):
                assert [r["id"] for r in doc] == list(range(P.MAX_BATCH))
                arrays += 1
                break
            snapshots += doc.get("method") == "snapshot"
    assert arrays > 10 and snapshots > 5, (arrays, snapshots)
