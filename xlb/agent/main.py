"""`xlb agent --config FILE`: run one instance's agent in the foreground.

Start: load or adopt the data plane, apply the intent, open the API socket.
Then tick: read counters, compute rates, publish a snapshot. SIGTERM/SIGINT
end the agent and leave the data plane running (nothing is detached or
flushed); a crash leaves it running too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from xlb.agent import metrics
from xlb.agent import settings as agent_settings
from xlb.agent.core import Agent
from xlb.agent.health import HealthChecker
from xlb.agent.server import Server
from xlb.errors import XlbError

log = logging.getLogger("xlb.agent")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def run(agent: Agent) -> None:
    server = Server(agent)
    srv = await server.serve()
    if agent.settings.metrics:
        try:
            agent.metrics_port = metrics.serve(agent.settings.metrics, lambda: agent.last)
        except OSError as e:
            srv.close()
            raise XlbError(f"metrics on {agent.settings.metrics}: {e.strerror}; set [agent] "
                           "metrics to another host:port, or \"\" to turn it off") from e
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping(_signum: int, _frame: object) -> None:
        # A plain handler, not loop.add_signal_handler: that one learns of the signal
        # through a byte in the loop's self-pipe, which is lost when a burst of wake-ups
        # from other threads (thousands of events for subscribers) has filled the pipe.
        # This one runs in the loop's thread at once, whatever the pipe holds.
        agent.stopping.set()  # work in progress in the tick's thread gives up
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
            loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stopping)
    log.info("agent %s running: API on %s%s", agent.name, agent.settings.socket,
             f", metrics on port {agent.metrics_port}" if agent.metrics_port else "")
    # verdicts are only noted here; the tick applies all that arrived, at once
    checker = HealthChecker(agent.report_health)
    checker.set_targets(agent.health_targets())

    def on_event(kind: str, doc: dict[str, Any]) -> None:
        # An operator change may add or remove backends: check exactly the new set. Runs in
        # the changing thread, so the loop does it; unchanged checks keep running untouched.
        if kind == "event" and doc.get("kind") == "change" and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: checker.set_targets(agent.health_targets()))

    agent.listeners.append(on_event)
    try:
        while not stop.is_set():
            snap = await asyncio.to_thread(agent.tick)
            agent.emit("snapshot", snap)
            try:
                await asyncio.wait_for(stop.wait(), agent.settings.tick)
            except TimeoutError:
                pass
    finally:
        agent.listeners.remove(on_event)
        await checker.close()
        srv.close()
        if os.path.exists(agent.settings.socket):
            os.unlink(agent.settings.socket)
        agent.close()
        log.info("agent %s stopped; the data plane keeps running", agent.name)


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped lines on stderr (journald, or the lab's lb1.log, collects them)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger("xlb")
    root.addHandler(handler)
    root.setLevel(level)


def main(config_path: str) -> int:
    setup_logging()
    ac = agent_settings.load(config_path)
    log.info("agent %s starting (pid %d, config %s)", ac.config.instance.name, os.getpid(),
             config_path)
    agent = Agent(ac)
    try:
        agent.start()
    except XlbError as e:
        log.error("agent %s could not start: %s", ac.config.instance.name, e)
        raise
    asyncio.run(run(agent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
