"""The agent's API server: JSON-RPC 2.0 lines on a Unix socket, dispatched from the
method table of xlb.api.protocol.

Everything about the protocol (methods, parameters, who may call what, error
codes, answer shapes) is written in xlb/api/protocol.py; this module only binds
each method to the agent. A method marked `operator` is refused for read-only
callers before its handler runs. Errors: an XlbError answers with its rpc_code;
anything else is a bug, logged with its traceback and answered as an internal
error (never as "the data plane refused").
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from xlb.agent.core import Agent, Caller
from xlb.api import protocol as P
from xlb.errors import ErrorCode, ReadOnlyError, XlbError

log = logging.getLogger(__name__)

Handler = Callable[[Agent, Caller, dict[str, Any]], Any]


def _status(a: Agent, caller: Caller, _p: dict[str, Any]) -> P.Status:
    return {**a.last, "caller": {"user": caller.user, "operator": caller.operator}}


def _vips(a: Agent, _c: Caller, _p: dict[str, Any]) -> list[P.VipSummary]:
    return [{"name": v["name"], "vip": v["vip"], "pps": v["pps"], "healthy": v["healthy"],
             "total": v["total"], "panic": v["panic"]} for v in a.last["vips"]]


def _backends(a: Agent, _c: Caller, p: dict[str, Any]) -> list[P.Vip]:
    return [v for v in a.last["vips"] if p["vip"] is None or v["name"] == p["vip"]]


def _audit(a: Agent, _c: Caller, p: dict[str, Any]) -> list[P.AuditEntry]:
    return a.audit.tail(p["n"])


def _subscribe(a: Agent, _c: Caller, _p: dict[str, Any]) -> P.Subscribed:
    return {"subscribed": True, "tick": a.settings.tick}


def _backend_change(action: str) -> Handler:
    def handler(a: Agent, caller: Caller, p: dict[str, Any]) -> P.ChangeResult:
        return a.change_backend(caller, action, p["address"], p["vip"], p.get("weight"),
                                p["force"])
    return handler


# what each method does; a method of the protocol without a handler here is a test failure
HANDLERS: dict[str, Handler] = {
    "status": _status,
    "vips": _vips,
    "backends": _backends,
    "audit": _audit,
    "subscribe": _subscribe,
    "drain": _backend_change("drain"),
    "undrain": _backend_change("undrain"),
    "weight": _backend_change("weight"),
    "add_backend": lambda a, c, p: a.add_backend(c, p["vip"], p["address"], p["weight"],
                                                 p["state"]),
    "remove_backend": lambda a, c, p: a.remove_backend(c, p["vip"], p["address"], p["force"]),
    "add_vip": lambda a, c, p: a.add_vip(c, p["name"], p["address"], p["port"], p["protocol"],
                                         p["backends"]),
    "remove_vip": lambda a, c, p: a.remove_vip(c, p["name"]),
}


def peer(sock: socket.socket, operator_group: str) -> Caller:
    """Who is on the other end (SO_PEERCRED), and whether they may change things."""
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


class Server:
    def __init__(self, agent: Agent):
        self.agent = agent
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        agent.listeners.append(self._notify)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _notify(self, kind: str, doc: Any) -> None:
        if self.loop is None:
            return
        msg = {"jsonrpc": P.JSONRPC, "method": kind, "params": doc}
        for q in list(self.subscribers):
            self.loop.call_soon_threadsafe(_offer, q, msg)

    async def serve(self) -> asyncio.AbstractServer:
        self.loop = asyncio.get_running_loop()
        path = self.agent.settings.socket
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket of a previous agent of this instance
        server = await asyncio.start_unix_server(self._client, path=path, limit=P.MAX_LINE)
        group = self.agent.settings.socket_group or self.agent.settings.operator_group
        try:
            os.chown(path, 0, grp.getgrnam(group).gr_gid)
        except KeyError:
            log.warning("socket group %r does not exist: only root can open %s", group, path)
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
                    await _send(writer, _error(None, ErrorCode.INVALID_REQUEST,
                                               "request line too long"))
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
        """One request line -> (the answer, whether it subscribed)."""
        try:
            req = json.loads(line)
        except ValueError as e:
            return _error(None, ErrorCode.PARSE_ERROR, f"not JSON: {e}"), False
        if not isinstance(req, dict) or req.get("jsonrpc") != P.JSONRPC or not isinstance(
                req.get("method"), str):
            return _error(req.get("id") if isinstance(req, dict) else None,
                          ErrorCode.INVALID_REQUEST,
                          'expected {"jsonrpc": "2.0", "method": ..., "params": {...}, "id": ...}'
                          ), False
        rid, name = req.get("id"), req["method"]
        params = req.get("params", {})
        if not isinstance(params, dict):
            return _error(rid, ErrorCode.INVALID_PARAMS, "params must be an object"), False
        method = P.METHODS.get(name)
        if method is None:
            return _error(rid, ErrorCode.NO_METHOD, f"unknown method {name!r}"), False
        try:
            result = await self._call(method, params, caller)
        except XlbError as e:
            if isinstance(e, ReadOnlyError):
                log.info("refused %s from %s (uid %d): read-only", name, caller.user, caller.uid)
            return _error(rid, e.rpc_code, str(e)), False
        except Exception:
            log.exception("%s from %s failed", name, caller.user)
            return _error(rid, ErrorCode.INTERNAL, f"internal error in {name}: the agent "
                          "logged it; nothing was applied"), False
        return {"jsonrpc": P.JSONRPC, "id": rid, "result": result}, name == "subscribe"

    async def _call(self, method: P.Method, params: dict[str, Any], caller: Caller) -> Any:
        checked = method.check(params)
        if method.operator and not caller.operator:
            raise ReadOnlyError(f"{caller.user} (uid {caller.uid}) is read-only: only root and "
                                f"members of group {self.agent.settings.operator_group!r} may "
                                "change the load balancer")
        handler = HANDLERS[method.name]
        if method.operator:  # changes take the agent's lock and write maps: off the loop
            run: Awaitable[Any] = asyncio.to_thread(handler, self.agent, caller, checked)
            return await run
        return handler(self.agent, caller, checked)


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": P.JSONRPC, "id": rid, "error": {"code": int(code), "message": message}}


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
