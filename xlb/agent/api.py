"""The agent's API: JSON-RPC 2.0, one JSON object per line, on a Unix socket.

Who may change things is decided by the peer's credentials (SO_PEERCRED):
root and members of the operator group are operators; anyone else who can
open the socket (mode 0660, group `socket_group`) is read-only.

Methods, read:  status, vips, backends {vip?}, audit {n?}, subscribe
        change: drain / undrain {address, vip?, force?}, weight {address, weight, vip?, force?}
                add_backend {vip, address, weight?, state?}, remove_backend {vip, address, force?}
                add_vip {name, address, port, protocol, backends?: [{address, weight?, state?}]}
                remove_vip {name}
A change answers {"vips": [names], "before": {name: ...}, "after": {name: ...}} (a
backend's or a VIP's table, null where there is none). Errors: -32602 for bad parameters,
including a change the config rules reject (a bad address, an existing backend or VIP
name, too many VIPs); -32002 for a refusal (an unknown VIP or backend, the last healthy
backend without force); -32001 for a read-only caller; -32003 when the data plane refused,
and then nothing was applied.
`subscribe` answers once, then streams notifications: {"method": "snapshot",
"params": {...}} every tick and {"method": "event", ...} on every change.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import socket
import struct
from typing import Any

from xlb.agent.client import REFUSED
from xlb.agent.core import Agent, Caller, Refused
from xlb.dataplane.config import ConfigError

PARSE_ERROR, INVALID_REQUEST, NO_METHOD, INVALID_PARAMS = -32700, -32600, -32601, -32602
PERMISSION, FAILED = -32001, -32003  # REFUSED (-32002) is shared with the client

CHANGES = {"drain", "undrain", "weight"}
MAX_LINE = 1 << 16


def peer(sock: socket.socket, operator_group: str) -> Caller:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, gid = struct.unpack("3i", raw)
    try:
        user = pwd.getpwuid(uid).pw_name
        groups = set(os.getgrouplist(user, gid))
    except KeyError:
        user, groups = f"uid{uid}", {gid}
    try:
        operator_gid = grp.getgrnam(operator_group).gr_gid
    except KeyError:
        operator_gid = None
    return Caller(uid, user, uid == 0 or (operator_gid is not None and operator_gid in groups))


class ApiError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Server:
    def __init__(self, agent: Agent):
        self.agent = agent
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        agent.listeners.append(self._notify)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _notify(self, kind: str, doc: dict[str, Any]) -> None:
        if self.loop is None:
            return
        msg = {"jsonrpc": "2.0", "method": kind, "params": doc}
        for q in list(self.subscribers):
            self.loop.call_soon_threadsafe(_offer, q, msg)

    async def serve(self) -> asyncio.AbstractServer:
        self.loop = asyncio.get_running_loop()
        path = self.agent.settings.socket
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket of a previous agent of this instance
        server = await asyncio.start_unix_server(self._client, path=path, limit=MAX_LINE)
        group = self.agent.settings.socket_group or self.agent.settings.operator_group
        try:
            os.chown(path, 0, grp.getgrnam(group).gr_gid)
        except KeyError:
            pass  # no such group: root-only socket
        os.chmod(path, 0o660)
        return server

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        caller = peer(writer.get_extra_info("socket"), self.agent.settings.operator_group)
        queue: asyncio.Queue[dict[str, Any]] | None = None
        pump: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, _error(None, INVALID_REQUEST, "request line too long"))
                    break
                if not line:
                    break
                reply, subscribe = await self._handle(line, caller)
                if reply is not None:
                    await _send(writer, reply)
                if subscribe and queue is None:
                    queue = asyncio.Queue(maxsize=64)
                    self.subscribers.add(queue)
                    pump = asyncio.create_task(_pump(queue, writer))
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            if queue is not None:
                self.subscribers.discard(queue)
            if pump is not None:
                pump.cancel()
            writer.close()

    async def _handle(self, line: bytes, caller: Caller) -> tuple[dict[str, Any] | None, bool]:
        try:
            req = json.loads(line)
        except ValueError as e:
            return _error(None, PARSE_ERROR, f"not JSON: {e}"), False
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(
                req.get("method"), str):
            return _error(req.get("id") if isinstance(req, dict) else None, INVALID_REQUEST,
                          'expected {"jsonrpc": "2.0", "method": ..., "params": {...}, "id": ...}'
                          ), False
        rid = req.get("id")
        params = req.get("params", {})
        if not isinstance(params, dict):
            return _error(rid, INVALID_PARAMS, "params must be an object"), False
        try:
            result = await self._dispatch(req["method"], params, caller)
        except ApiError as e:
            return _error(rid, e.code, str(e)), False
        except PermissionError as e:
            return _error(rid, PERMISSION, str(e)), False
        except (Refused, KeyError) as e:
            text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            return _error(rid, REFUSED, str(text)), False
        except ConfigError as e:
            return _error(rid, INVALID_PARAMS, str(e)), False
        except Exception as e:  # the data plane refused: nothing was applied
            return _error(rid, FAILED, f"{type(e).__name__}: {e}"), False
        return {"jsonrpc": "2.0", "id": rid, "result": result}, req["method"] == "subscribe"

    async def _dispatch(self, method: str, params: dict[str, Any], caller: Caller) -> Any:
        a = self.agent
        if method in ("status", "snapshot"):
            return {**a.last, "caller": {"user": caller.user, "operator": caller.operator}}
        if method == "vips":
            return [{k: v[k] for k in ("name", "vip", "pps", "healthy", "total")}
                    for v in a.last.get("vips", [])]
        if method == "backends":
            vip = _opt(params, "vip", str)
            return [v for v in a.last.get("vips", []) if vip is None or v["name"] == vip]
        if method == "audit":
            n = _opt(params, "n", int) or 50
            return a.audit.tail(n)
        if method == "subscribe":
            return {"subscribed": True, "tick": a.settings.tick}
        if method in CHANGES:
            address = _req(params, "address", str)
            vip = _opt(params, "vip", str)
            force = bool(_opt(params, "force", bool))
            weight = _req(params, "weight", int) if method == "weight" else None
            return await asyncio.to_thread(a.change_backend, caller, method, address, vip,
                                           weight, force)
        if method == "add_backend":
            return await asyncio.to_thread(
                a.add_backend, caller, _req(params, "vip", str), _req(params, "address", str),
                _default(params, "weight", int, 1), _default(params, "state", str, "active"))
        if method == "remove_backend":
            return await asyncio.to_thread(
                a.remove_backend, caller, _req(params, "vip", str),
                _req(params, "address", str), bool(_opt(params, "force", bool)))
        if method == "add_vip":
            return await asyncio.to_thread(
                a.add_vip, caller, _req(params, "name", str), _req(params, "address", str),
                _req(params, "port", int), _req(params, "protocol", str),
                _default(params, "backends", list, []))
        if method == "remove_vip":
            return await asyncio.to_thread(a.remove_vip, caller, _req(params, "name", str))
        raise ApiError(NO_METHOD, f"unknown method {method!r}")


def _req(params: dict[str, Any], key: str, kind: type) -> Any:
    if params.get(key) is None:
        raise ApiError(INVALID_PARAMS, f"missing parameter {key!r}")
    return _opt(params, key, kind)


def _opt(params: dict[str, Any], key: str, kind: type) -> Any:
    value = params.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int
                                                                and isinstance(value, bool))):
        raise ApiError(INVALID_PARAMS, f"parameter {key!r} must be {kind.__name__}")
    return value


def _default(params: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = _opt(params, key, kind)
    return default if value is None else value


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


async def _send(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    writer.write(json.dumps(msg).encode() + b"\n")
    await writer.drain()


def _offer(q: asyncio.Queue[dict[str, Any]], msg: dict[str, Any]) -> None:
    if q.full():  # a slow subscriber loses old snapshots, never blocks the agent
        q.get_nowait()
    q.put_nowait(msg)


async def _pump(q: asyncio.Queue[dict[str, Any]], writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await _send(writer, await q.get())
    except (ConnectionError, BrokenPipeError, asyncio.CancelledError):
        pass
