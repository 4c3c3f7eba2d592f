"""The agent's API server: JSON-RPC 2.0 lines on a Unix socket, dispatched from the
method table of xlb.api.protocol.

Everything about the protocol (methods, parameters, who may call what, error codes,
answer shapes) is written in xlb/api/protocol.py; this module only binds each method to
the agent. JSON-RPC 2.0 as written: a request without an id is a notification (run,
never answered); a batch (an array of up to protocol.MAX_BATCH requests) is answered
with an array, written answer by answer, none for its notifications and nothing at all
if they all were. A method marked `operator` is refused for read-only callers before its
handler runs, and the attempt is audited. Errors: an XlbError answers with its rpc_code;
anything else is a bug, logged with its traceback and answered as an internal error
(never as "the data plane refused").

The server is bounded against its clients, hostile ones included:
- connections: at most `max_clients`, an eighth of them kept for operators, at most
  `max_clients_per_user` per read-only uid, and never so many that the agent lacks
  descriptors for its own work (FD_RESERVE, plus two per backend for health checks);
  a connection over a limit gets one OVERLOADED error line and is closed;
- time: a connection silent for `client_idle_timeout` is closed (subscribers excepted);
  one that leaves what it was sent unread for `client_send_timeout` is cut off, so no
  client holds more than one answer (or snapshot) in the agent's memory;
- requests: MAX_LINE bytes, MAX_DEPTH levels of nesting, finite numbers only;
- snapshots: encoded once per tick, the same bytes queued for every subscriber;
- the audit log is read in a thread of its own, never on the event loop, within
  protocol.AUDIT_BYTES.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import math
import os
import pwd
import resource
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from xlb import statefile
from xlb.agent.core import Agent, Caller
from xlb.agent.trace import Watcher
from xlb.api import protocol as P
from xlb.dataplane.config import vip_label
from xlb.dataplane.explain import explain
from xlb.errors import (
    ErrorCode,
    InvalidParams,
    NotLoadedError,
    ReadOnlyError,
    RefusedError,
    XlbError,
)

log = logging.getLogger(__name__)

Handler = Callable[[Agent, Caller, dict[str, Any]], Any]
Send = Callable[[bytes], Awaitable[None]]

FD_RESERVE = 64   # descriptors kept for the agent's own work, plus two per backend
MAX_DEPTH = 32    # levels of nesting a request may have
LOG_EVERY = 60.0  # seconds between two log lines about the same client trouble
QUEUE = 64        # notifications queued for one subscriber (a slow one loses the oldest)


def _status(a: Agent, caller: Caller, _p: dict[str, Any]) -> P.Status:
    # the port as it is now: the last snapshot may predate the exporter
    return {**a.last, "metrics_port": a.metrics_port,
            "caller": {"user": caller.user, "operator": caller.operator}}


def _vips(a: Agent, _c: Caller, _p: dict[str, Any]) -> list[P.VipSummary]:
    return [{"name": v["name"], "vip": v["vip"], "mode": v["mode"], "pps": v["pps"],
             "healthy": v["healthy"],
             "total": v["total"], "panic": v["panic"]} for v in a.last["vips"]]


def _backends(a: Agent, _c: Caller, p: dict[str, Any]) -> list[P.Vip]:
    return [v for v in a.last["vips"] if p["vip"] is None or v["name"] == p["vip"]]


def _audit(a: Agent, _c: Caller, p: dict[str, Any]) -> list[P.AuditEntry]:
    return a.audit.tail(p["n"])


def _subscribe(a: Agent, _c: Caller, _p: dict[str, Any]) -> P.Subscribed:
    return {"subscribed": True, "tick": a.settings.tick}


def _trace_start(a: Agent, c: Caller, p: dict[str, Any]) -> P.TraceStatus:
    return a.trace.start(c.uid, c.user, p["filter"], p["seconds"])


def _explain(a: Agent, _c: Caller, p: dict[str, Any]) -> P.Explain:
    """From the pinned maps, with the agent's VIP names and its word on each backend."""
    if a.dp is None:
        raise NotLoadedError("the agent has not opened its data plane yet")
    names = {vip_label(v.address, v.port, v.protocol): v.name for v in a.desired.vips}
    states = {(v["name"], b["address"]): f"{b['state']}, health {b['health']}"
              for v in a.last["vips"] for b in v["backends"]}
    return explain(a.dp, p["src"], p["sport"], p["dst"], p["dport"], p["protocol"], p["syn"],
                   length=p["length"], names=names, states=states)


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
    "mode": lambda a, c, p: a.set_mode(c, p["vip"], p["mode"]),
    "xdp_mode": lambda a, c, p: a.switch_xdp(c, p["mode"]),
    "probes": lambda a, c, p: [a.probes.describe(n) for n in a.probes.probes],
    "probe_attach": lambda a, c, p: a.probe_change(c, p["name"], True),
    "probe_detach": lambda a, c, p: a.probe_change(c, p["name"], False),
    "trace_start": _trace_start,
    "trace_stop": lambda a, c, p: a.trace.stop(c.uid, c.user),
    "trace_status": lambda a, c, p: a.trace.status(),
    "trace_subscribe": lambda a, c, p: a.trace.status(),  # the watcher: see _serve_client
    "trace_events": lambda a, c, p: a.trace.events(p["n"]),
    "explain": _explain,
    "bgp": lambda a, c, p: a.bgp_status(),
    "bgp_withdraw": lambda a, c, p: a.bgp_change(c, "withdraw", p["vip"], p["all"]),
    "bgp_announce": lambda a, c, p: a.bgp_change(c, "announce", p["vip"], p["all"]),
}
SUBSCRIPTIONS = {"subscribe", "trace_subscribe"}  # answered, then notifications follow
READS_THE_AUDIT_LOG = {"audit"}  # files, not memory: in the audit thread, off the loop
OFF_THE_LOOP = {"explain"}  # reads that may take milliseconds (a Maglev ring): in a thread


def peer_uid(sock: socket.socket) -> int:
    """The uid on the other end (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", raw)[1])


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


class SlowReader(Exception):
    """A client left what it was sent unread for longer than client_send_timeout."""


class Server:
    def __init__(self, agent: Agent):
        self.agent = agent
        self.subscribers: set[asyncio.Queue[bytes]] = set()
        agent.listeners.append(self._notify)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.audit_thread = ThreadPoolExecutor(1, thread_name_prefix="xlb-audit")
        self.open_by_uid: Counter[int] = Counter()  # connections per peer uid
        self.open_operators = 0
        self.baseline_fds = 0       # descriptors in use before the first client
        self._sized: Any = None     # the intent the reserve was sized for, and the reserve
        self._reserve = FD_RESERVE
        self._logged: dict[tuple[str, int], tuple[float, int]] = {}
        self.listener: socket.socket | None = None
        self.accepting: asyncio.Task[None] | None = None
        self.clients: set[asyncio.Task[None]] = set()  # referenced while they run

    def _notify(self, kind: str, doc: Any) -> None:
        """Encode the notification once (in the thread that emits it: the tick's, for
        snapshots) and queue the same bytes for every subscriber."""
        subscribers = list(self.subscribers)
        if self.loop is None or not subscribers:
            return
        data = _encode({"jsonrpc": P.JSONRPC, "method": kind, "params": doc})
        for q in subscribers:
            self.loop.call_soon_threadsafe(_offer, q, data)

    async def serve(self) -> None:
        """Listen on the socket and take connections, one decision at a time."""
        self.loop = asyncio.get_running_loop()
        path = self.agent.settings.socket
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a stale socket of a previous agent of this instance
        self.baseline_fds = _open_fds()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(128)
        listener.setblocking(False)
        self.listener = listener
        statefile.share_with_group(path, self.agent.settings.socket_group
                                   or self.agent.settings.operator_group)
        if self.capacity() < self.agent.settings.max_clients:
            log.warning("only %d API connections fit in the descriptor limit (%d), not "
                        "max_clients (%d): raise the limit (LimitNOFILE=) to allow more",
                        self.capacity(), _nofile(), self.agent.settings.max_clients)
        self.accepting = asyncio.create_task(self._accept(listener))

    def close(self) -> None:
        if self.accepting is not None:
            self.accepting.cancel()
        if self.listener is not None:
            self.listener.close()
        self.audit_thread.shutdown(wait=False, cancel_futures=True)

    async def _accept(self, listener: socket.socket) -> None:
        """Accept one connection, decide on it, then the next: a flood never holds more
        descriptors than the connections taken, plus one. (asyncio's own server accepts
        a whole backlog before its handlers run.)"""
        assert self.loop is not None
        while True:
            try:
                conn, _ = await self.loop.sock_accept(listener)
            except OSError as e:  # EMFILE/ENFILE/ENOBUFS: the reserve is for the agent
                self._note(("accept", 0), f"accepting API connections: {e}; trying again "
                           "every second")
                await asyncio.sleep(1)
                continue
            try:
                self._take(conn)
            except Exception:
                log.exception("an API connection could not be set up")
                conn.close()

    def _take(self, conn: socket.socket) -> None:
        """Serve the connection, or turn it away with one error line."""
        assert self.loop is not None
        try:
            uid = peer_uid(conn)
            if conn.fileno() >= _nofile() - self._reserve and uid != 0:
                caller = Caller(uid, f"uid{uid}", False)  # turned away: spare the lookups
            else:
                caller = peer(conn, self.agent.settings.operator_group)
        except OSError as e:  # the peer went away already
            log.debug("connection lost before it was read: %s", e)
            conn.close()
            return
        why = self._turned_away(conn.fileno(), caller)
        if why is not None:
            self._note(("turned away", caller.uid), f"turned away a connection of "
                       f"{caller.user} (uid {caller.uid}): {why}")
            try:  # one short line fits the socket's buffer: never waits
                conn.send(_encode(_error(None, ErrorCode.OVERLOADED, f"connection refused: "
                                         f"{why}; try again later")))
            except OSError:
                pass
            conn.close()
            return
        self.open_by_uid[caller.uid] += 1
        self.open_operators += caller.operator
        task = self.loop.create_task(self._client(conn, caller))
        self.clients.add(task)
        task.add_done_callback(self.clients.discard)

    # -- admission -------------------------------------------------------------------------
    def capacity(self) -> int:
        """Connections the agent takes now: max_clients, or fewer if the descriptor
        limit leaves less after the reserve (the limit is read each time: it can change)."""
        desired = self.agent.desired
        if desired is not self._sized:
            self._sized = desired
            self._reserve = FD_RESERVE + 2 * len(desired.backend_addresses())
        fit = _nofile() - self.baseline_fds - self._reserve
        return max(0, min(self.agent.settings.max_clients, fit))

    def _turned_away(self, fd: int, caller: Caller) -> str | None:
        """Why this connection is one too many, or None to take it."""
        st = self.agent.settings
        total = sum(self.open_by_uid.values())
        cap = self.capacity()
        kept = cap // 8  # for operators
        if fd >= _nofile() - self._reserve or total >= cap:
            return f"the agent is at its limit of {cap} connections"
        if caller.operator:
            return None
        if total - self.open_operators >= cap - kept:
            return (f"read-only connections are at their limit of {cap - kept} "
                    f"(the other {kept} are kept for operators)")
        if self.open_by_uid[caller.uid] >= st.max_clients_per_user:
            return (f"{caller.user} (uid {caller.uid}) has {st.max_clients_per_user} "
                    "connections open, the limit per user (max_clients_per_user)")
        return None

    async def _client(self, conn: socket.socket, caller: Caller) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=P.MAX_LINE)
            await self._serve_client(reader, writer, caller)
        except SlowReader:
            self._cut_off(caller)
        except (ConnectionError, BrokenPipeError):
            pass
        except Exception:
            log.exception("connection of %s (uid %d) failed", caller.user, caller.uid)
        finally:
            self.open_by_uid[caller.uid] -= 1
            if not self.open_by_uid[caller.uid]:
                del self.open_by_uid[caller.uid]
            self.open_operators -= caller.operator
            if writer is not None:
                writer.transport.abort()  # whatever is still buffered for it goes
            else:
                conn.close()

    def _cut_off(self, caller: Caller) -> None:
        self._note(("slow", caller.uid), f"cut off {caller.user} (uid {caller.uid}): it left what "
                   f"it was sent unread for {self.agent.settings.client_send_timeout:g} s "
                   "(client_send_timeout)")

    def _note(self, key: tuple[str, int], text: str) -> None:
        """Log client trouble at most once per LOG_EVERY per kind and user, counting the
        rest, so a flood cannot flood the log too."""
        now = time.monotonic()
        last, quiet = self._logged.get(key, (-LOG_EVERY, 0))
        if now - last < LOG_EVERY:
            self._logged[key] = (last, quiet + 1)
            return
        self._logged[key] = (now, 0)
        more = f" ({quiet} more like it in the last {LOG_EVERY:g} s)" if quiet else ""
        log.warning("%s%s", text, more)

    # -- one connection -------------------------------------------------------------------
    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            caller: Caller) -> None:
        st = self.agent.settings
        queue: asyncio.Queue[bytes] | None = None
        pump: asyncio.Task[None] | None = None
        watcher: Watcher | None = None
        snapshots = False
        writing = asyncio.Lock()  # a batch's answer is written in pieces: never cut

        async def send(data: bytes) -> None:
            await self._send(writer, data)

        try:
            while True:
                try:
                    if queue is None:
                        line = await asyncio.wait_for(reader.readline(), st.client_idle_timeout)
                    else:  # a subscriber only reads: the pump watches its pace
                        line = await reader.readline()
                except TimeoutError:
                    log.debug("closed the idle connection of %s (uid %d)", caller.user,
                              caller.uid)
                    break
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(writer, _encode(_error(None, ErrorCode.INVALID_REQUEST,
                                                            "request line too long")))
                    break
                if not line:
                    break
                async with writing:  # the snapshots wait (a slow one loses old ones)
                    subscribed = await self._handle(line, caller, send)
                if subscribed and queue is None:
                    queue = asyncio.Queue(maxsize=QUEUE)
                    pump = asyncio.create_task(self._pump(queue, writer, writing, caller))
                if queue is not None and "subscribe" in subscribed and not snapshots:
                    snapshots = True
                    self.subscribers.add(queue)
                if queue is not None and "trace_subscribe" in subscribed and watcher is None:
                    watcher = self.agent.trace.watch(self._trace_sender(queue),
                                                     subscribed["trace_subscribe"])
        finally:
            if queue is not None:
                self.subscribers.discard(queue)
            if watcher is not None:
                self.agent.trace.unwatch(watcher)
            if pump is not None:
                pump.cancel()

    def _trace_sender(self, queue: asyncio.Queue[bytes]) -> Callable[[P.TraceBatch], bool]:
        """How the trace's thread sends one watcher its batches: encoded there, queued on
        the loop; refused (False: the trace counts them as skipped) while the watcher has
        half a queue unread."""
        loop = self.loop
        assert loop is not None

        def send(batch: P.TraceBatch) -> bool:
            if queue.qsize() >= QUEUE // 2:
                return False
            data = _encode({"jsonrpc": P.JSONRPC, "method": "trace", "params": batch})
            try:
                loop.call_soon_threadsafe(_offer, queue, data)
            except RuntimeError:  # the loop is closed: the agent is stopping
                return False
            return True
        return send

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write encoded bytes; SlowReader if the client does not take them in time."""
        writer.write(data)
        try:
            await asyncio.wait_for(writer.drain(), self.agent.settings.client_send_timeout)
        except TimeoutError:
            raise SlowReader() from None

    async def _pump(self, q: asyncio.Queue[bytes], writer: asyncio.StreamWriter,
                    writing: asyncio.Lock, caller: Caller) -> None:
        try:
            while True:
                data = await q.get()
                async with writing:
                    await self._send(writer, data)
        except SlowReader:
            self._cut_off(caller)
            writer.transport.abort()  # its reading loop ends with the connection
        except (ConnectionError, BrokenPipeError, asyncio.CancelledError):
            pass

    async def _handle(self, line: bytes, caller: Caller, send: Send) -> dict[str, Any]:
        """Answer one request line through `send` (a batch's answers one by one, so that
        the agent never holds more than one of them); the subscriptions it made (method ->
        its history parameter)."""
        batch, items = _requests(line)
        if not batch:
            reply, made = await self._run(items[0], caller)
            if reply is not None:
                await send(_encode(reply))
            return made
        answered = any(not isinstance(i, _Request) or not i.notification for i in items)
        subscribed: dict[str, Any] = {}
        opened = False
        for item in items:
            reply, sub = await self._run(item, caller)
            subscribed.update(sub)
            if reply is not None:
                await send((b"," if opened else b"[") + _encode(reply, end=b""))
                opened = True
        if answered:
            await send(b"]\n")
        return subscribed

    async def _run(self, item: _Request | dict[str, Any],
                   caller: Caller) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Run one request of a line -> (its answer, None for a notification; the
        subscription it made, {} or {method: history}). A request found invalid already is
        its error answer."""
        if not isinstance(item, _Request):
            return item, {}
        reply = item.error or await self._execute(item, caller)
        subscribed: dict[str, Any] = {}
        if item.name in SUBSCRIPTIONS and "result" in reply:
            subscribed[item.name] = P.METHODS[item.name].check(item.params).get("history")
        return (None if item.notification else reply), subscribed

    async def _execute(self, req: _Request, caller: Caller) -> dict[str, Any]:
        rid, name = req.rid, req.name
        method = P.METHODS.get(name)
        if method is None:
            return _error(rid, ErrorCode.NO_METHOD, f"unknown method {name!r}")
        log.debug("%s from %s (uid %d)", name, caller.user, caller.uid)
        try:
            result = await self._call(method, req.params, caller)
        except XlbError as e:
            _log_refusal(method, req.params, caller, e)
            return _error(rid, e.rpc_code, str(e))
        except Exception:
            log.exception("%s from %s failed", name, caller.user)
            return _error(rid, ErrorCode.INTERNAL, f"internal error in {name}: the agent "
                          "logged it; nothing was applied")
        return {"jsonrpc": P.JSONRPC, "id": rid, "result": result}

    async def _call(self, method: P.Method, params: dict[str, Any], caller: Caller) -> Any:
        checked = method.check(params)
        loop = asyncio.get_running_loop()
        if method.operator and not caller.operator:
            await loop.run_in_executor(self.audit_thread, self._refused, method.name,
                                       checked, caller)
            raise ReadOnlyError(f"{caller.user} (uid {caller.uid}) is read-only: only root and "
                                f"members of group {self.agent.settings.operator_group!r} may "
                                "change the load balancer")
        handler = HANDLERS[method.name]
        if method.operator:  # changes take the agent's lock and write maps: off the loop
            run: Awaitable[Any] = asyncio.to_thread(handler, self.agent, caller, checked)
            return await run
        if method.name in OFF_THE_LOOP:
            return await asyncio.to_thread(handler, self.agent, caller, checked)
        if method.name in READS_THE_AUDIT_LOG:
            return await loop.run_in_executor(self.audit_thread, handler, self.agent, caller,
                                              checked)
        return handler(self.agent, caller, checked)

    def _refused(self, name: str, params: dict[str, Any], caller: Caller) -> None:
        """Audit (and log) a read-only caller's attempt to change something."""
        entry = self.agent.audit.refused(uid=caller.uid, user=caller.user, action=name,
                                         params=params, why="read-only")
        if entry is not None:  # the audit log's per-user pace bounds the log's too
            log.info("refused %s from %s (uid %d): %s", name, caller.user, caller.uid,
                     entry["result"].removeprefix("refused: "))


def _log_refusal(method: P.Method, params: dict[str, Any], caller: Caller,
                 e: XlbError) -> None:
    """A change an operator asked for and did not get: refused (INFO) or failed (ERROR,
    with the cause). A read-only caller's attempts are logged with their audit record,
    at its pace; anything else a client gets wrong is only for DEBUG, so no client can
    fill the log."""
    if isinstance(e, ReadOnlyError):
        return
    subject = params.get("address") or params.get("name") or params.get("vip") or ""
    what = f"{method.name} {str(subject)[:80]}".rstrip()
    if not (method.operator and caller.operator):
        log.debug("%s from %s (uid %d) answered with an error: %s", what, caller.user,
                  caller.uid, e)
    elif isinstance(e, RefusedError | InvalidParams):
        log.info("refused %s from %s (uid %d): %s", what, caller.user, caller.uid, e)
    else:
        log.error("%s from %s (uid %d) failed: %s", what, caller.user, caller.uid, e)


_SHAPE = 'expected {"jsonrpc": "2.0", "method": ..., "params": {...}, "id": ...}'


@dataclass(frozen=True)
class _Request:
    """A well-formed request, to run; a notification (no id) is run but not answered."""

    rid: Any
    name: str
    params: dict[str, Any]
    notification: bool
    error: dict[str, Any] | None = None  # its answer, found without running it


def _requests(line: bytes) -> tuple[bool, list[_Request | dict[str, Any]]]:
    """One line -> (whether it is a batch, and per request what to run or, for a request
    that is not one, its error answer). Per JSON-RPC 2.0, a line that is no JSON, or an
    empty or oversized batch, is answered with one error, never as a batch."""
    try:
        doc, odd = _parse(line)
    except RecursionError:
        return False, [_error(None, ErrorCode.PARSE_ERROR, f"not JSON: nested deeper than "
                              f"{MAX_DEPTH} levels")]
    except ValueError as e:
        return False, [_error(None, ErrorCode.PARSE_ERROR, f"not JSON: {e}")]
    if _depth_over(doc, line, MAX_DEPTH):
        return False, [_error(None, ErrorCode.PARSE_ERROR, f"not JSON: nested deeper than "
                              f"{MAX_DEPTH} levels")]
    if not isinstance(doc, list):
        return False, [_request(doc, odd)]
    if not doc:
        return False, [_error(None, ErrorCode.INVALID_REQUEST, "an empty batch: send one "
                              "request or an array of them")]
    if len(doc) > P.MAX_BATCH:
        return False, [_error(None, ErrorCode.INVALID_REQUEST, f"a batch of {len(doc)} "
                              f"requests: at most {P.MAX_BATCH} in one")]
    return True, [_request(r, odd and _not_finite_in(r)) for r in doc]


def _request(req: Any, odd: bool) -> _Request | dict[str, Any]:
    """One request object -> what to run, or its error answer."""
    if not isinstance(req, dict):
        return _error(None, ErrorCode.INVALID_REQUEST, _SHAPE)
    rid = req.get("id")
    if not _valid_id(rid):
        return _error(None, ErrorCode.INVALID_REQUEST, "the id must be a string, a finite "
                      "number or null")
    if req.get("jsonrpc") != P.JSONRPC or not isinstance(req.get("method"), str):
        return _error(rid, ErrorCode.INVALID_REQUEST, _SHAPE)
    name, notification, params = req["method"], "id" not in req, req.get("params", {})
    if odd:  # never run with a number JSON cannot carry
        return _Request(rid, name, {}, notification, _error(
            rid, ErrorCode.INVALID_PARAMS, "numbers must be finite: NaN, Infinity and "
            "numbers too large for a double are refused"))
    if not isinstance(params, dict):
        return _Request(rid, name, {}, notification, _error(
            rid, ErrorCode.INVALID_PARAMS, "params must be an object"))
    return _Request(rid, name, params, notification)


class _NotFinite:
    """Where a request had NaN, Infinity or a number too large for a double."""

    def __repr__(self) -> str:
        return "a non-finite number"


def _parse(line: bytes) -> tuple[Any, bool]:
    """The request, and whether it held numbers JSON cannot carry back (they become
    _NotFinite, so they are never echoed, stored or computed with)."""
    odd: list[str] = []

    def constant(text: str) -> _NotFinite:
        odd.append(text)
        return _NotFinite()

    def number(text: str) -> float | _NotFinite:
        value = float(text)
        return value if math.isfinite(value) else constant(text)

    return json.loads(line, parse_constant=constant, parse_float=number), bool(odd)


def _not_finite_in(doc: Any) -> bool:
    """Whether a _NotFinite is anywhere in `doc` (nesting is bounded by MAX_DEPTH)."""
    if isinstance(doc, _NotFinite):
        return True
    if isinstance(doc, dict):
        return any(_not_finite_in(v) for v in doc.values())
    if isinstance(doc, list):
        return any(_not_finite_in(v) for v in doc)
    return False


def _valid_id(rid: Any) -> bool:
    """JSON-RPC ids are strings, numbers or null (and a number must be one JSON can carry)."""
    if rid is None or isinstance(rid, str):
        return True
    return isinstance(rid, int | float) and not isinstance(rid, bool) and math.isfinite(rid)


def _depth_over(doc: Any, line: bytes, limit: int) -> bool:
    """Whether `doc` nests deeper than `limit`; lines with few brackets are not walked."""
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    level: list[tuple[Any, int]] = [(doc, 1)]
    while level:
        node, depth = level.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            level.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            level.extend((v, depth + 1) for v in node)
    return False


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": P.JSONRPC, "id": rid, "error": {"code": int(code), "message": message}}


def _encode(msg: dict[str, Any], end: bytes = b"\n") -> bytes:
    """One line of JSON; never NaN or Infinity (which are not JSON): a bug answers as one."""
    try:
        return json.dumps(msg, allow_nan=False).encode() + end
    except ValueError:
        log.exception("an answer held a number JSON cannot carry")
        return json.dumps(_error(msg.get("id"), ErrorCode.INTERNAL, "internal error: the "
                                 "agent logged it")).encode() + end


def _offer(q: asyncio.Queue[bytes], msg: bytes) -> None:
    if q.full():  # a slow subscriber loses old snapshots, never blocks the agent
        q.get_nowait()
    q.put_nowait(msg)


def _nofile() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
