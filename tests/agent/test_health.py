"""Health checks against real servers on loopback (and one in a network namespace).

No pytest-asyncio: every test drives its own loop with asyncio.run().
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from xlb.agent.health import CheckSpec, HealthChecker, probe

FAST: dict[str, Any] = {"interval": 0.05, "timeout": 0.04}
Event = tuple[str, bool, str]


async def until(cond: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


class Recorder:
    """on_change that also notes the counters at the moment of each transition."""

    def __init__(self, initial_healthy: bool = True) -> None:
        self.events: list[Event] = []
        self.at: list[dict[str, Any]] = []
        self.checker = HealthChecker(self, initial_healthy=initial_healthy)

    def __call__(self, addr: str, healthy: bool, reason: str) -> None:
        self.events.append((addr, healthy, reason))
        self.at.append(dict(self.checker.state()[addr]))


async def tcp_server(host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return await asyncio.start_server(handle, host, port)


def port_of(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


class HttpServer:
    """Answers each request with the next scripted status (the last one repeats)."""

    def __init__(self, *statuses: int | bytes) -> None:
        self.script: list[int | bytes] = list(statuses)
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1") -> int:
        self.server = await asyncio.start_server(self.handle, host, 0)
        return port_of(self.server)

    def set(self, *statuses: int | bytes) -> None:
        self.script = list(statuses)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        status = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(status, bytes):
            writer.write(status)
        else:
            writer.write(b"HTTP/1.0 %d X\r\nContent-Length: 0\r\n\r\n" % status)
        await writer.drain()
        writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one test's coroutine; a hang (e.g. a timeout that does not fire) fails it."""

    async def guarded() -> None:
        async with asyncio.timeout(10):  # same task, so other_tasks() stays exact
            await main()

    asyncio.run(guarded())


# --- CheckSpec ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "udp"}, "kind"),
    ({"port": 0}, "port"),
    ({"port": 65536}, "port"),
    ({"port": True}, "port"),
    ({"interval": 0}, "interval"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": 2.0, "interval": 1.0}, "timeout"),
    ({"rise": 0}, "rise"),
    ({"fall": 0}, "fall"),
    ({"path": "healthz"}, "path"),
    ({"path": "/a b"}, "path"),
    ({"netns": "../x"}, "netns"),
])
def test_spec_rejects(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"kind": "tcp", "port": 80, **kwargs}
    with pytest.raises(ValueError, match=match):
        CheckSpec(**args)


def test_spec_defaults_and_equality() -> None:
    s = CheckSpec("http", 8080)
    assert (s.path, s.interval, s.timeout, s.rise, s.fall, s.netns) == ("/", 1.0, 0.5, 2, 2, "")
    assert s == CheckSpec("http", 8080) and s != CheckSpec("http", 8081)


# --- fall / rise -------------------------------------------------------------------------


def test_tcp_falls_after_fall_failures_and_rises_after_rise_successes() -> None:
    async def main() -> None:
        server = await tcp_server()
        port = port_of(server)
        r = Recorder()
        r.checker.set_targets({"127.0.0.1": CheckSpec("tcp", port, rise=3, fall=2, **FAST)})
        await until(lambda: r.checker.state()["127.0.0.1"]["checks"] >= 3, "3 checks")
        st = r.checker.state()["127.0.0.1"]
        assert st["healthy"] is True and st["last_error"] is None
        assert st["consecutive_ok"] >= 3 and st["consecutive_fail"] == 0
        assert r.events == []

        server.close()
        await server.wait_closed()
        await until(lambda: len(r.events) == 1, "the fall")
        addr, healthy, reason = r.events[0]
        assert (addr, healthy) == ("127.0.0.1", False)
        assert reason == f"tcp connect 127.0.0.1:{port}: Connection refused"
        assert r.at[0]["consecutive_fail"] == 2 and r.at[0]["healthy"] is False
        assert r.checker.state()["127.0.0.1"]["last_error"] == reason

        server = await tcp_server(port=port)
        await until(lambda: len(r.events) == 2, "the rise")
        assert r.events[1][:2] == ("127.0.0.1", True)
        assert r.at[1]["consecutive_ok"] == 3
        checks = r.checker.state()["127.0.0.1"]["checks"]
        await until(lambda: r.checker.state()["127.0.0.1"]["checks"] >= checks + 3, "more")
        assert len(r.events) == 2, "on_change must fire only on transitions"
        await r.checker.close()
        server.close()

    run(main)


def test_initial_unhealthy_needs_rise_successes() -> None:
    async def main() -> None:
        server = await tcp_server()
        r = Recorder(initial_healthy=False)
        r.checker.set_targets({"127.0.0.1": CheckSpec("tcp", port_of(server), rise=3, **FAST)})
        assert r.checker.state()["127.0.0.1"]["healthy"] is False
        await until(lambda: r.checker.state()["127.0.0.1"]["checks"] >= 2, "2 checks")
        assert r.events == [] and r.checker.state()["127.0.0.1"]["healthy"] is False
        await until(lambda: len(r.events) == 1, "the rise")
        assert r.events[0] == ("127.0.0.1", True, "3 consecutive checks passed")
        assert r.at[0]["checks"] == 3
        await r.checker.close()
        server.close()

    run(main)


def test_on_change_exactly_on_transitions_with_flapping() -> None:
    # fall=2, rise=2: isolated failures/successes must not flip anything.
    script = [200, 503, 200, 503, 503, 200, 503, 200, 200, 200]
    #          1    2    3    4    5↓   6    7    8    9↑

    async def main() -> None:
        http = HttpServer(*script)
        port = await http.start()
        r = Recorder()
        r.checker.set_targets({"127.0.0.1": CheckSpec("http", port, **FAST)})
        await until(lambda: r.checker.state()["127.0.0.1"]["checks"] >= 12, "12 checks")
        await r.checker.close()
        assert [e[1] for e in r.events] == [False, True]
        assert r.events[0][2] == "http status 503"
        assert [a["checks"] for a in r.at] == [5, 9]
        http.close()

    run(main)


# --- HTTP ----------------------------------------------------------------------------------


def test_http_status_handling() -> None:
    async def main() -> None:
        http = HttpServer(200)
        port = await http.start()
        r = Recorder()
        spec = CheckSpec("http", port, path="/healthz", rise=1, fall=1, **FAST)
        r.checker.set_targets({"127.0.0.1": spec})
        await until(lambda: r.checker.state()["127.0.0.1"]["checks"] >= 2, "2 checks")
        assert r.events == []
        assert http.requests[0] == b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"

        http.set(503)
        await until(lambda: len(r.events) == 1, "503 -> unhealthy")
        assert r.events[0] == ("127.0.0.1", False, "http status 503")
        http.set(302)  # redirects count as alive
        await until(lambda: len(r.events) == 2, "302 -> healthy")
        assert r.events[1][1] is True
        http.set(404)
        await until(lambda: len(r.events) == 3, "404 -> unhealthy")
        assert r.events[2] == ("127.0.0.1", False, "http status 404")
        await r.checker.close()
        http.close()

    run(main)


def test_http_garbage_and_empty_replies_fail() -> None:
    async def main() -> None:
        http = HttpServer(b"SSH-2.0-OpenSSH\r\n")
        port = await http.start()
        spec = CheckSpec("http", port, **FAST)
        reason = await probe("127.0.0.1", spec)
        assert reason is not None and reason.startswith("http bad status line")
        http.set(b"")
        reason = await probe("127.0.0.1", spec)
        assert reason is not None and "no response" in reason
        http.set(204)
        assert await probe("127.0.0.1", spec) is None
        http.close()

    run(main)


# --- timeouts ------------------------------------------------------------------------------


def test_timeout_when_server_accepts_but_never_answers() -> None:
    async def main() -> None:
        writers: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await reader.read()  # until the checker hangs up
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = port_of(server)
        loop = asyncio.get_running_loop()
        started = loop.time()
        reason = await probe("127.0.0.1", CheckSpec("http", port, interval=0.2, timeout=0.1))
        elapsed = loop.time() - started
        assert reason == f"http read 127.0.0.1:{port}: timeout after 0.1 s"
        assert 0.09 <= elapsed < 0.5
        # A TCP check only needs the handshake, which the kernel completes.
        assert await probe("127.0.0.1", CheckSpec("tcp", port, interval=0.2, timeout=0.1)) is None

        r = Recorder()
        r.checker.set_targets({"127.0.0.1": CheckSpec("http", port, fall=2, **FAST)})
        await until(lambda: len(r.events) == 1, "timeout -> unhealthy")
        assert r.events[0] == ("127.0.0.1", False,
                               f"http read 127.0.0.1:{port}: timeout after 0.04 s")
        await r.checker.close()
        server.close()
        for w in writers:
            w.close()

    run(main)


# --- set_targets / close -------------------------------------------------------------------


def test_set_targets_add_remove_change() -> None:
    async def main() -> None:
        a, b = "127.0.0.1", "127.0.0.2"
        server_a = await tcp_server(a)
        http_b = HttpServer(200)
        port_b = await http_b.start(b)
        spec_a = CheckSpec("tcp", port_of(server_a), **FAST)
        spec_b = CheckSpec("http", port_b, path="/ok", fall=1, **FAST)
        r = Recorder()

        r.checker.set_targets({a: spec_a})
        assert set(r.checker.state()) == {a} and len(other_tasks()) == 1
        await until(lambda: r.checker.state()[a]["checks"] >= 2, "a checked")

        r.checker.set_targets({a: spec_a, b: spec_b})  # add b, a untouched
        tasks = other_tasks()
        assert set(r.checker.state()) == {a, b} and len(tasks) == 2
        await until(lambda: r.checker.state()[b]["checks"] >= 2, "b checked")

        # Equal (not identical) specs keep the running tasks and their counters.
        checks_a = r.checker.state()[a]["checks"]
        r.checker.set_targets({a: CheckSpec("tcp", port_of(server_a), **FAST), b: spec_b})
        assert other_tasks() == tasks
        assert r.checker.state()[a]["checks"] >= checks_a

        r.checker.set_targets({b: spec_b})  # remove a
        assert set(r.checker.state()) == {b}
        await until(lambda: len(other_tasks()) == 1, "a's task to end")
        await asyncio.sleep(0.15)
        assert set(r.checker.state()) == {b}

        # Change b to a path the server fails: a new task, same verdict until it falls.
        http_b.set(200)
        old = other_tasks()
        r.checker.set_targets({b: CheckSpec("http", port_b, path="/missing", fall=1, **FAST)})
        assert r.checker.state()[b]["healthy"] is True
        assert r.checker.state()[b]["consecutive_ok"] == 0
        http_b.set(500)
        await until(lambda: len(r.events) == 1, "b to fall under its new spec")
        assert r.events == [(b, False, "http status 500")]
        assert other_tasks().isdisjoint(old) and len(other_tasks()) == 1
        assert http_b.requests[-1].startswith(b"GET /missing HTTP/1.0\r\nHost: 127.0.0.2\r\n")

        r.checker.set_targets({})
        assert r.checker.state() == {}
        await r.checker.close()
        assert other_tasks() == set()
        server_a.close()
        http_b.close()

    run(main)


def test_close_leaves_no_tasks_and_no_more_events() -> None:
    async def main() -> None:
        r = Recorder()
        # Nothing listens on these: checks keep failing, which must stop at close().
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        r.checker.set_targets({f"127.0.0.{i}": CheckSpec("tcp", port, fall=50, **FAST)
                               for i in range(1, 6)})
        assert len(other_tasks()) == 5
        await asyncio.sleep(0.12)
        await r.checker.close()
        assert other_tasks() == set()
        assert r.checker.state() == {}
        await asyncio.sleep(0.1)
        assert r.events == []

    run(main)


def test_set_targets_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        HealthChecker(lambda *_: None).set_targets({"127.0.0.1": CheckSpec("tcp", 80)})


def test_failing_on_change_does_not_stop_checks() -> None:
    async def main() -> None:
        def boom(addr: str, healthy: bool, reason: str) -> None:
            raise RuntimeError("listener bug")

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        c = HealthChecker(boom)
        c.set_targets({"127.0.0.1": CheckSpec("tcp", port, fall=1, **FAST)})
        await until(lambda: c.state()["127.0.0.1"]["checks"] >= 3, "checks after the error")
        assert c.state()["127.0.0.1"]["healthy"] is False
        await c.close()

    run(main)


# --- network namespaces --------------------------------------------------------------------

LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""


def free_root_port() -> int:
    """A port nothing listens on in the root namespace's 127.0.0.1 (checked by connect)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
    return port


def ns_of_this_thread() -> str:
    return os.readlink("/proc/thread-self/ns/net")


@pytest.mark.root
def test_netns_check_connects_inside_the_namespace() -> None:
    if os.geteuid() != 0:
        pytest.fail("the netns health check test needs root: run scripts/test as root")
    assert shutil.which("ip"), "iproute2 'ip' is needed"
    ns = f"xlbh-{os.getpid()}"
    port = free_root_port()
    root_ns = ns_of_this_thread()
    listener: subprocess.Popen[str] | None = None
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER, str(port)],
            stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready", "listener did not start"
        # Still nothing on that port here: the listener has its own 127.0.0.1.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED

        async def main() -> None:
            inside, outside, missing = Recorder(False), Recorder(True), Recorder(False)
            inside.checker.set_targets(
                {"127.0.0.1": CheckSpec("tcp", port, netns=ns, **FAST)})
            outside.checker.set_targets({"127.0.0.1": CheckSpec("tcp", port, **FAST)})
            missing.checker.set_targets(
                {"127.0.0.1": CheckSpec("tcp", port, netns=f"{ns}-nope", fall=1, **FAST)})
            await until(lambda: inside.events != [] and outside.events != [], "both verdicts")
            await until(lambda: missing.checker.state()["127.0.0.1"]["checks"] >= 1, "missing")
            assert inside.events == [("127.0.0.1", True, "2 consecutive checks passed")]
            assert outside.events == [
                ("127.0.0.1", False, f"tcp connect 127.0.0.1:{port}: Connection refused")]
            err = missing.checker.state()["127.0.0.1"]["last_error"]
            assert err == (f"tcp connect 127.0.0.1:{port}: "
                           f"netns {ns}-nope: No such file or directory")
            for r in (inside, outside, missing):
                await r.checker.close()

        run(main)
        assert ns_of_this_thread() == root_ns, "setns leaked into the test's thread"
    finally:
        if listener is not None:
            os.kill(listener.pid, 9)
            listener.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", ns], check=False)
