"""`xlb console --web`: the console served to a browser (textual-serve), behind a gate.

The served console is read-only unless operator rights are asked for, and then every
request must carry a secret. textual-serve (1.1) has no authentication of its own and
no hook for it; it is an aiohttp application, so GatedServer puts a middleware in front
of all of its routes (the page, its static files, downloads and the websocket that
drives the console), and refuses to serve if that middleware is not in place (a
textual-serve that builds its application another way): the gate fails closed.

The gate, for every request:
- on a loopback address, the Host header must name a loopback address or localhost, so
  a page of another site resolved to 127.0.0.1 (DNS rebinding) gets nothing;
- an Origin header, which browsers send with every websocket handshake, must be the
  console's own, so no other site can drive or read the console;
- with operator rights, the secret as the password of HTTP Basic authentication (any
  user name). Browsers keep such credentials per origin (scheme, host and port), unlike
  cookies, which every server on the same host would receive.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from textual_serve.server import Server

from xlb.errors import UsageError

REALM = "xlb console (operator)"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_secret() -> str:
    """A secret for one run of the web view (never on a command line: /proc shows those)."""
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """Whether every address `host` stands for is a loopback address (a name is
    resolved: `localhost` usually stands for 127.0.0.1 and ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(ipaddress.ip_address(str(a[4][0]).split("%")[0]).is_loopback
                               for a in found)


def check(host: str, remote: bool, operator: bool, read_only: bool) -> None:
    """Refuse what the web view must not do, with what to do instead (UsageError)."""
    if operator and read_only:
        raise UsageError("--web-operator and --read-only contradict each other: choose one")
    if is_loopback(host):
        return
    if operator:
        raise UsageError(f"--web-operator serves operator rights on loopback addresses only, "
                         f"not on {host}: the web view has no TLS, so the secret would cross "
                         "the network in the clear. From another machine, tunnel to it: "
                         "ssh -L 8000:127.0.0.1:8000 THIS-HOST")
    if not remote:
        raise UsageError(f"--host {host} is not a loopback address: anyone who reaches it "
                         "would see the console. Add --web-remote to serve it there anyway "
                         "(read-only), or tunnel: ssh -L 8000:127.0.0.1:8000 THIS-HOST")


def command(paths: list[str], operator: bool, theme: str | None) -> list[str]:
    """The console each browser session runs: read-only unless operator rights were asked
    for (with the secret in front of it)."""
    args = [sys.executable, "-m", "xlb", "console"]
    for p in paths:
        args += ["--socket", p]
    if not operator:
        args.append("--read-only")
    if theme:
        args += ["--theme", theme]
    return args


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class GatedServer(Server):
    """textual-serve's server with the gate in front of every route."""

    def __init__(self, command: str, host: str, port: int, secret: str | None, remote: bool):
        super().__init__(command, host=host, port=port, title="xlb console",
                         public_url=url(host, port))
        self.secret = secret
        self.remote = remote

    async def _make_app(self) -> web.Application:
        app: web.Application = await super()._make_app()
        app.middlewares.append(self.gate)
        return app

    async def on_startup(self, app: web.Application) -> None:
        if self.gate not in app.middlewares:
            raise RuntimeError("the web view's gate is not in front of textual-serve's "
                               "routes (another version of textual-serve?): not serving")

    @web.middleware  # a method: its bound form is the middleware (aiohttp's new style)
    async def gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = self.refusal(request)
        if refused is not None:
            return refused
        if request.path == "/":  # the page's links: the address the browser used
            self.public_url = f"{request.scheme}://{request.host}"
        return await handler(request)

    def refusal(self, request: web.Request) -> web.Response | None:
        """Why this request gets nothing (a 4xx answer), or None to serve it."""
        name = request.url.host or ""
        if not self.remote and not _loopback_name(name):
            return web.Response(status=403, text=f"this console answers on loopback names "
                                f"only, not {name!r}\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != f"{request.scheme}://{request.host}".lower():
            return web.Response(status=403, text="requests from other sites are refused\n")
        if self.secret is not None and not self._authorized(request):
            return web.Response(status=401, text="this console has operator rights: give the "
                                "secret printed when it was started as the password (any "
                                "user name)\n",
                                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'})
        return None

    def _authorized(self, request: web.Request) -> bool:
        assert self.secret is not None
        kind, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if kind.lower() != "basic":
            return False
        try:
            _user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), self.secret.encode())


def _loopback_name(name: str) -> bool:
    """A Host a browser on this machine uses for a loopback address (never resolved: the
    name in the header is what a rebinding page controls)."""
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(server: Any, operator: bool) -> None:
    """Say where the console is (and the secret), then serve until Ctrl-C."""
    where = server.public_url + "/"
    if operator:
        print(f"xlb console WITH OPERATOR RIGHTS on {where}: the browser asks for a user name "
              f"(any) and a password, which is\n\n    {server.secret}\n\nvalid until this "
              "server stops. Ctrl-C stops serving; the load balancer keeps running.",
              flush=True)
    else:
        print(f"xlb console (read-only) on {where} (Ctrl-C stops serving; the load balancer "
              "keeps running)", flush=True)
    server.serve()
