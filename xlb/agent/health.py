"""Backend health checks: one asyncio task per backend, TCP connect or HTTP GET.

A backend flips to unhealthy after `fall` consecutive failed checks and back after
`rise` consecutive good ones, so one lost SYN or slow reply does not reshuffle the
Maglev table. The owner hears only about transitions, through `on_change`.

Backends behind the load balancer are often reachable only from a network namespace
(the lab, a VRF-like setup), so a check can open its socket inside a named namespace
(`ip netns add NAME`, i.e. /run/netns/NAME) without moving the whole agent there.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from xlb.addresses import host_port
from xlb.netns import CLONE_NEWNET, NETNS_DIR, NetnsError, socket_in_netns
from xlb.schema import AGENT

log = logging.getLogger(__name__)

KINDS = ("tcp", "http")


@dataclass(frozen=True)
class CheckSpec:
    """How to check one backend; equal specs mean "keep the running check"."""

    kind: str
    port: int
    path: str = AGENT.default("health_path")  # defaults: the [agent] table's
    interval: float = AGENT.default("health_interval")
    timeout: float = AGENT.default("health_timeout")
    rise: int = AGENT.default("health_rise")
    fall: int = AGENT.default("health_fall")
    netns: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"health check kind must be one of {', '.join(KINDS)}, "
                             f"not {self.kind!r}")
        if not _is_int(self.port) or not 1 <= self.port <= 65535:
            raise ValueError(f"health check port must be an integer 1..65535, not {self.port!r}")
        if not self.path.startswith("/") or any(c.isspace() for c in self.path):
            raise ValueError(f"health check path must start with '/' and contain no "
                             f"whitespace, not {self.path!r}")
        if not isinstance(self.interval, int | float) or not self.interval > 0:
            raise ValueError(f"health check interval must be > 0 s, not {self.interval!r}")
        if not isinstance(self.timeout, int | float) or not 0 < self.timeout <= self.interval:
            raise ValueError(f"health check timeout must be > 0 s and <= the interval "
                             f"({self.interval} s), not {self.timeout!r}")
        for name in ("rise", "fall"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"health check {name} must be an integer >= 1, not {value!r}")
        if self.netns and ("/" in self.netns or self.netns in (".", "..")):
            raise ValueError(f"health check netns must be a name under {NETNS_DIR}, "
                             f"not {self.netns!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _connect(
    addr: str, spec: CheckSpec
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if not spec.netns:
        return await asyncio.open_connection(addr, spec.port)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise NetnsError(errno.EINVAL, f"not an IP address (needed with netns): {addr!r}") from None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket_in_netns(spec.netns, family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (addr, spec.port))
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


def _describe(e: OSError) -> str:
    # asyncio's connect errors read "Connect call failed (...)": the errno says it better.
    if isinstance(e, NetnsError) or not e.errno:
        return str(e)
    return os.strerror(e.errno)


async def probe(addr: str, spec: CheckSpec) -> str | None:
    """Run one check: None if it passed, else why it failed (one line, for operators)."""
    phase = "connect"
    where = host_port(addr, spec.port)
    try:
        async with asyncio.timeout(spec.timeout):
            reader, writer = await _connect(addr, spec)
            try:
                if spec.kind == "tcp":
                    return None
                phase = "request"
                host = f"[{addr}]" if ":" in addr else addr
                writer.write(f"GET {spec.path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
                await writer.drain()
                phase = "read"
                line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return f"{spec.kind} {phase} {where}: timeout after {spec.timeout:g} s"
    except OSError as e:
        return f"{spec.kind} {phase} {where}: {_describe(e)}"
    except ValueError:  # a line longer than the stream limit: not an HTTP server
        return f"http bad status line from {where} (too long)"
    if not line:
        return f"http no response from {where} (connection closed)"
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return f"http bad status line from {where}: {line[:60]!r}"
    status = int(parts[1])
    return None if 200 <= status < 400 else f"http status {status}"


class BackendHealth(TypedDict):
    """One backend in HealthChecker.state()."""

    healthy: bool
    since: float  # time.time() of the last transition (or of being added)
    last_error: str | None  # the latest failure, kept after recovery for the record
    consecutive_ok: int
    consecutive_fail: int
    checks: int


@dataclass
class _Target:
    """One backend's running check; replaced (not mutated) when its spec changes."""

    spec: CheckSpec
    healthy: bool
    since: float
    last_error: str | None = None
    ok: int = 0
    fail: int = 0
    checks: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class HealthChecker:
    """Checks a set of backends and reports healthy/unhealthy transitions."""

    def __init__(
        self, on_change: Callable[[str, bool, str], None], initial_healthy: bool = True
    ) -> None:
        # Starting healthy means a freshly started agent keeps serving through the
        # first `fall` intervals instead of draining everything until checks pass.
        self._on_change = on_change
        self._initial = initial_healthy
        self._targets: dict[str, _Target] = {}
        self._retired: set[asyncio.Task[None]] = set()

    def set_targets(self, targets: dict[str, CheckSpec]) -> None:
        """Check exactly `targets` (address -> spec) from now on; needs a running loop.

        Unchanged specs keep their task and counters. A changed spec restarts the
        counting but keeps the current verdict, so reconfiguring does not flap.
        """
        loop = asyncio.get_running_loop()
        for addr in list(self._targets):
            if addr not in targets:
                self._retire(self._targets.pop(addr))
        for addr, spec in targets.items():
            old = self._targets.get(addr)
            if old is not None and old.spec == spec:
                continue
            if old is None:
                new = _Target(spec, self._initial, time.time())
            else:
                self._retire(old)
                new = _Target(spec, old.healthy, old.since, old.last_error, checks=old.checks)
            self._targets[addr] = new
            new.task = loop.create_task(self._run(addr, new), name=f"health {addr}")

    def state(self) -> dict[str, BackendHealth]:
        """A snapshot per address: verdict, when it last changed, and the counters."""
        return {
            addr: {
                "healthy": t.healthy,
                "since": t.since,
                "last_error": t.last_error,
                "consecutive_ok": t.ok,
                "consecutive_fail": t.fail,
                "checks": t.checks,
            }
            for addr, t in self._targets.items()
        }

    async def close(self) -> None:
        """Stop every check and wait until the tasks are really gone."""
        for t in self._targets.values():
            self._retire(t)
        self._targets.clear()
        tasks = list(self._retired)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._retired.difference_update(tasks)

    def _retire(self, target: _Target) -> None:
        task = target.task
        if task is not None and not task.done():
            task.cancel()
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def _run(self, addr: str, target: _Target) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            reason = await probe(addr, target.spec)
            if self._targets.get(addr) is not target:  # replaced while probing
                return
            self._record(addr, target, reason)
            await asyncio.sleep(max(0.0, target.spec.interval - (loop.time() - started)))

    def _record(self, addr: str, t: _Target, reason: str | None) -> None:
        t.checks += 1
        if reason is None:
            t.ok, t.fail = t.ok + 1, 0
            if not t.healthy and t.ok >= t.spec.rise:
                self._flip(addr, t, True, f"{t.ok} consecutive checks passed")
        else:
            t.ok, t.fail, t.last_error = 0, t.fail + 1, reason
            if t.healthy and t.fail >= t.spec.fall:
                self._flip(addr, t, False, reason)

    def _flip(self, addr: str, t: _Target, healthy: bool, reason: str) -> None:
        t.healthy, t.since = healthy, time.time()
        try:
            self._on_change(addr, healthy, reason)
        except Exception:  # a broken listener must not stop the checks
            log.exception("health on_change(%s, %s) failed", addr, healthy)


__all__ = ["CLONE_NEWNET", "BackendHealth", "CheckSpec", "HealthChecker", "NetnsError", "probe",
           "socket_in_netns"]
