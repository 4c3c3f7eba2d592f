"""`xlb console`: find the agents, check the arguments, run the app (or serve it on the web)."""

from __future__ import annotations

import os
import shlex

from xlb.api.client import RUN_ROOT, find_sockets
from xlb.errors import AgentUnavailable, ConsoleError


def sockets(given: list[str] | None) -> list[str]:
    """The agent sockets to follow: the ones given, else every one under /run/xlb. None at
    all is AgentUnavailable, as for every command that asks an agent (exit code 3)."""
    if given:
        given = list(dict.fromkeys(given))
        missing = [p for p in given if not os.path.exists(p)]
        if missing and len(missing) == len(given):
            raise AgentUnavailable(f"no agent socket at {', '.join(missing)} (is `xlb agent` "
                               "running? `xlb lab up` starts the lab's)")
        return given
    found = find_sockets()
    if not found:
        raise AgentUnavailable(f"no agent is running (no socket in {RUN_ROOT}): start the lab with "
                           "`xlb lab up`, or an agent with `xlb agent --config FILE`")
    return found


def run(given: list[str] | None, read_only: bool, theme: str | None, web: bool,
        host: str = "127.0.0.1", port: int = 8000, operator: bool = False,
        remote: bool = False) -> int:
    from console import themes

    paths = sockets(given)
    names = [t.name for t in themes.load_themes()]
    if theme is not None and theme not in names:
        raise ConsoleError(f"unknown theme {theme!r}: choose one of {', '.join(names)}")
    if web:
        return serve_web(paths, read_only, theme, host, port, operator, remote)
    from console.app import XlbConsole

    app = XlbConsole(paths, read_only=read_only, theme=theme)
    app.run()
    return app.return_code or 0


def serve_web(paths: list[str], read_only: bool, theme: str | None, host: str, port: int,
              operator: bool = False, remote: bool = False) -> int:
    """The same console in a browser (textual-serve): read-only and on loopback unless
    asked otherwise; operator rights only behind a secret (console.web)."""
    try:
        import aiohttp  # noqa: F401
        import textual_serve.server  # noqa: F401
    except ImportError as e:
        raise ConsoleError(f"--web needs the web extra, which is not installed ({e.name} is "
                           "missing): pip install 'xlb[web]' (or use the console in a "
                           "terminal: xlb console)") from e
    from console import web

    web.check(host, remote, operator, read_only)
    secret = web.new_secret() if operator else None
    server = web.GatedServer(shlex.join(web.command(paths, operator, theme)), host, port,
                             secret, remote)
    web.serve(server, operator)
    return 0
