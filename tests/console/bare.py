"""The console with no agent: tests post what a link would post, and nothing else arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from console.app import XlbConsole
from tests.agent_double import AgentDouble
from xlb.api.protocol import Snapshot, Status

PATH = "/run/xlb/lb1.sock"   # never opened: no link follows it


def snapshot(instance: str = "lb1", **double: Any) -> Snapshot:
    """A snapshot as the agent sends it (the double's figures; its socket is not opened)."""
    return AgentDouble("/nonexistent", instance=instance, **double).snapshot()


def status(operator: bool = True, **double: Any) -> Status:
    return {**snapshot(**double), "caller": {"user": "tester", "operator": operator}}


def run_bare(scenario: Callable[[XlbConsole, Any], Awaitable[None]],
             app: XlbConsole | None = None, size: tuple[int, int] = (120, 40)) -> None:
    console = app or XlbConsole([])

    async def main() -> None:
        async with console.run_test(size=size) as pilot:
            await scenario(console, pilot)

    asyncio.run(main())
