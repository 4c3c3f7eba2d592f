"""`xlb console --web`: read-only unless asked, operator rights only behind a secret,
loopback unless asked, and textual-serve as the optional extra `xlb[web]`.

The gate is tested on textual-serve's real aiohttp application (aiohttp's test server);
one test drives a served console over its websocket, against the agent double.
"""

from __future__ import annotations

import asyncio
import base64
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp import WSServerHandshakeError, web
from aiohttp.test_utils import TestClient, TestServer
from textual_serve.server import Server

from console.link import AgentLink
from tests.agent_double import AgentDouble
from tests.helpers import REPO
from xlb import cli
from xlb.errors import ReadOnlyError, UsageError

SECRET = "s3cret-for-the-test"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The textual-serve servers `xlb console --web` would serve (none is started)."""
    servers: list[Any] = []
    monkeypatch.setattr(Server, "serve", lambda self, debug=False: servers.append(self))
    return servers


@pytest.fixture
def sock(tmp_path: Path) -> str:
    path = tmp_path / "lb1.sock"
    path.touch()
    return str(path)


def served_command(server: Any) -> list[str]:
    return shlex.split(server.command)


# -- the command line ------------------------------------------------------------------------

def test_the_web_view_is_read_only_by_default(served: list[Any], sock: str) -> None:
    assert cli.main(["console", "--web", "--socket", sock]) == 0
    (server,) = served
    assert "--read-only" in served_command(server)
    assert getattr(server, "secret", None) is None


def test_operator_rights_need_the_flag_and_the_secret(served: list[Any], sock: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["console", "--web", "--web-operator", "--socket", sock]) == 0
    (server,) = served
    assert "--read-only" not in served_command(server)
    secret = server.secret
    assert isinstance(secret, str) and len(secret) >= 32
    assert secret in capsys.readouterr().out, "the operator is told the secret"
    assert secret not in server.command, "never on a command line (/proc shows those)"
    cli.main(["console", "--web", "--web-operator", "--socket", sock])
    assert served[1].secret != secret, "a new secret each time"


@pytest.mark.parametrize("args,why", [
    (["--host", "0.0.0.0"], "not a loopback address"),
    (["--host", "192.0.2.1"], "not a loopback address"),
    (["--web-operator", "--web-remote", "--host", "0.0.0.0"], "loopback addresses only"),
    (["--web-operator", "--read-only"], "contradict"),
])
def test_what_the_web_view_refuses(served: list[Any], sock: str, args: list[str], why: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["console", "--web", "--socket", sock, *args])
    assert code == UsageError.exit_code and served == []
    assert why in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--host", "localhost"], ["--host", "::1"],
                                  ["--host", "127.0.0.2"],
                                  ["--web-remote", "--host", "0.0.0.0"]])
def test_what_the_web_view_serves(served: list[Any], sock: str, args: list[str]) -> None:
    assert cli.main(["console", "--web", "--socket", sock, *args]) == 0
    (server,) = served
    assert "--read-only" in served_command(server)


@pytest.mark.parametrize("option", [["--web-operator"], ["--web-remote"], ["--port", "9000"],
                                    ["--host", "127.0.0.1"]])
def test_web_options_without_web_are_usage_errors(sock: str, option: list[str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("console.app.XlbConsole.run", lambda self: None)  # never in a test
    assert cli.main(["console", "--socket", sock, *option]) == UsageError.exit_code
    assert "only with --web" in capsys.readouterr().err


# -- the optional extra ----------------------------------------------------------------------

def test_without_the_web_extra_the_message_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch, sock: str, capsys: pytest.CaptureFixture[str]) -> None:
    for name in [m for m in sys.modules if m == "textual_serve" or m.startswith("textual_serve.")]:
        monkeypatch.setitem(sys.modules, name, None)  # what importing it does when missing
    assert cli.main(["console", "--web", "--socket", sock]) == 1
    err = capsys.readouterr().err
    assert "pip install 'xlb[web]'" in err and "Traceback" not in err


def test_the_web_stack_is_an_optional_extra_the_tests_install() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].strip() for d in project["dependencies"]]
    assert "textual-serve" not in names and "aiohttp" not in names
    web_extra = project["optional-dependencies"]["web"]
    assert any(d.startswith("textual-serve") for d in web_extra)
    assert "xlb[web]" in project["optional-dependencies"]["test"]


# -- the gate --------------------------------------------------------------------------------

def basic(password: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def gated(secret: str | None, command: str = "true", remote: bool = False) -> Any:
    from console import web as console_web  # here: the tests above run without it

    return console_web.GatedServer(command, "127.0.0.1", 8000, secret, remote)


async def client_of(server: Any) -> TestClient[Any, Any]:
    app = await server._make_app()
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_operator_rights_are_behind_the_secret() -> None:
    async def main() -> None:
        client = await client_of(gated(SECRET))
        try:
            for path in ("/", "/static/js/textual.js", "/ws", "/download/x"):
                r = await client.get(path)
                assert r.status == 401, path
                assert r.headers["WWW-Authenticate"].startswith("Basic ")
            for wrong in ("", "s3cret", SECRET + "x", SECRET.upper()):
                assert (await client.get("/", headers=basic(wrong))).status == 401
            r = await client.get("/", headers=basic(SECRET))
            assert r.status == 200
            page = await r.text()
            assert f'data-session-websocket-url="ws://127.0.0.1:{client.port}/ws"' in page
            r = await client.get("/static/js/textual.js", headers=basic(SECRET, user=""))
            assert r.status == 200
            with pytest.raises(WSServerHandshakeError) as e:
                await client.ws_connect("/ws")
            assert e.value.status == 401
        finally:
            await client.close()

    run(main())


@pytest.mark.parametrize("secret", [None, SECRET])
def test_other_sites_get_nothing(secret: str | None) -> None:
    """A page elsewhere cannot drive the console (Origin), nor read it through a name of
    its own resolved to 127.0.0.1 (DNS rebinding: Host)."""
    auth = basic(SECRET) if secret else {}

    async def main() -> None:
        client = await client_of(gated(secret))
        try:
            r = await client.get("/", headers={**auth, "Host": "evil.example"})
            assert r.status == 403
            r = await client.get("/", headers={**auth, "Host": f"localhost:{client.port}"})
            assert r.status == 200
            assert f"ws://localhost:{client.port}/ws" in await r.text()
            with pytest.raises(WSServerHandshakeError) as e:
                await client.ws_connect("/ws", headers={**auth,
                                                        "Origin": "http://evil.example"})
            assert e.value.status == 403
        finally:
            await client.close()

    run(main())


def test_a_remote_web_view_takes_any_host_but_not_other_origins() -> None:
    async def main() -> None:
        client = await client_of(gated(None, remote=True))
        try:
            r = await client.get("/", headers={"Host": "lb1.example:8000"})
            assert r.status == 200 and "ws://lb1.example:8000/ws" in await r.text()
            with pytest.raises(WSServerHandshakeError) as e:
                await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
            assert e.value.status == 403
        finally:
            await client.close()

    run(main())


def test_the_gate_fails_closed() -> None:
    """A textual-serve that built its application without the gate is not served."""
    server = gated(SECRET)

    async def main() -> None:
        app = await Server._make_app(server)  # textual-serve's own: no gate
        with pytest.raises(RuntimeError, match="gate"):
            await server.on_startup(app)
        await server.on_startup(await server._make_app())

    run(main())


def test_a_browser_with_the_secret_drives_the_console(double: AgentDouble) -> None:
    """The whole way: the websocket (with the secret and the page's own Origin) starts the
    console, which draws."""
    from console import web as console_web

    command = shlex.join(console_web.command([double.path], True, None))

    async def main() -> None:
        client = await client_of(gated(SECRET, command))
        try:
            ws = await client.ws_connect("/ws?width=120&height=40", headers={
                **basic(SECRET), "Origin": f"http://127.0.0.1:{client.port}"})
            drawn = b""
            while b"xlb" not in drawn:
                msg = await asyncio.wait_for(ws.receive(), 30)
                assert msg.type in (web.WSMsgType.BINARY, web.WSMsgType.TEXT), msg
                drawn += msg.data if isinstance(msg.data, bytes) else msg.data.encode()
            await ws.close()  # the console is told to quit: wait for it to end
            for _ in range(300):
                if not psutil.Process().children():
                    break
                await asyncio.sleep(0.1)
        finally:
            await client.close()
            for child in psutil.Process().children():
                child.kill()

    run(main())


# -- read-only all the way down --------------------------------------------------------------

def test_a_read_only_console_sends_no_change(double: AgentDouble) -> None:
    """Whatever asks (a key, the command palette), a read-only console's link sends no
    change to the agent: its read-only is not only in the key bindings."""
    link = AgentLink(double.path, lambda m: None, read_only=True)
    vip = double.snapshot()["vips"][0]
    with pytest.raises(ReadOnlyError):
        link.call("drain", address=vip["backends"][0]["address"], vip=vip["name"])
    assert link.call("audit") == []
    assert [name for name, _ in double.calls] == ["audit"], "the drain never left"
