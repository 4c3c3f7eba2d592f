"""`xlb agent --config FILE`: run one instance's agent in the foreground.

Start: load or adopt the data plane, apply the intent, open the API socket.
Then tick: read counters, compute rates, publish a snapshot; a tick that fails is
logged and counted, never the end of the agent. SIGTERM/SIGINT
end the agent and leave the data plane running (nothing is detached or
flushed); a crash leaves it running too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from xlb.agent import metrics
from xlb.agent import settings as agent_settings
from xlb.agent.core import Agent
from xlb.agent.health import HealthChecker
from xlb.agent.server import Server
from xlb.api.protocol import ErrorEvent
from xlb.errors import XlbError

log = logging.getLogger("xlb.agent")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def run(agent: Agent) -> None:
    # the exporter first: a client of the API may ask for its port at once
    exporter: metrics.Exporter | None = None
    st = agent.settings
    if st.metrics:
        try:
            exporter = metrics.serve(st.metrics, lambda: agent.last,
                                     st.socket_group or st.operator_group)
        except OSError as e:
            raise XlbError(f"metrics on {st.metrics}: {e.strerror}; set [agent] metrics to "
                           "another host:port or unix:PATH, or \"\" to turn it off") from e
        agent.metrics_port = exporter.port
        agent.last = {**agent.last, "metrics_port": exporter.port}  # before the first tick
    server = Server(agent)
    try:
        await server.serve()
    except BaseException:
        if exporter is not None:
            exporter.close()
        raise
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
    where = (f", metrics on port {exporter.port}" if exporter and exporter.port else
             f", metrics on {st.metrics}" if exporter else "")
    log.info("agent %s running: API on %s%s", agent.name, st.socket, where)
    # verdicts are only noted here; the tick applies all that arrived, at once
    checker = HealthChecker(agent.report_health)
    checker.set_targets(agent.health_targets())

    def on_event(kind: str, doc: dict[str, Any]) -> None:
        # An operator change may add or remove backends: check exactly the new set. Runs in
        # the changing thread, so the loop does it; unchanged checks keep running untouched.
        if kind == "event" and doc.get("kind") == "change" and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: checker.set_targets(agent.health_targets()))

    agent.listeners.append(on_event)
    ticker = Ticker(agent)
    try:
        while not stop.is_set():
            await ticker.tick()
            try:
                await asyncio.wait_for(stop.wait(), st.tick)
            except TimeoutError:
                pass
    finally:
        agent.listeners.remove(on_event)
        await checker.close()
        server.close()
        ticker.close()
        if exporter is not None:
            exporter.close()
        if os.path.exists(st.socket):
            os.unlink(st.socket)
        await asyncio.to_thread(agent.close)  # pyroute2 closes through a loop of its own
        log.info("agent %s stopped; the data plane keeps running", agent.name)


class Ticker:
    """Runs the agent's tick in a thread of its own (a busy pool cannot delay it). A tick
    that fails (a descriptor limit, a map read) is logged, counted and skipped: the agent
    carries on, and readers keep the last snapshot, its `tick_failures` counting on."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="xlb-tick")
        self.streak = 0

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            snap = await loop.run_in_executor(self.thread, self.agent.tick)
            self.agent.emit("snapshot", snap)
        except Exception as e:
            self._failed(e)
            return
        if self.streak:
            log.info("the tick works again after %d failure(s)", self.streak)
            self.streak = 0

    def _failed(self, e: Exception) -> None:
        a = self.agent
        a.tick_failures += 1
        a.last = {**a.last, "tick_failures": a.tick_failures}
        self.streak += 1
        if self.streak == 1:  # the first of a streak in full; then a reminder a minute
            log.error("tick failed, the agent carries on: %s", e, exc_info=e)
            error: ErrorEvent = {"kind": "error", "time": time.time(),
                                 "message": f"the agent's tick failed: {e}"}
            a.emit("event", error)
        elif self.streak % max(1, round(60 / a.settings.tick)) == 0:
            log.error("tick still failing (%d in a row): %s", self.streak, e)

    def close(self) -> None:
        self.thread.shutdown(wait=False, cancel_futures=True)


def raise_descriptor_limit() -> None:
    """Take the soft limit of open descriptors up to the hard one: API clients, health
    checks (one socket per backend) and scrapes all need descriptors, and the agent
    uses epoll, never select()."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as e:
            log.warning("could not raise the descriptor limit from %d to %d: %s", soft, hard, e)


def _quiet_forks() -> None:
    """In a child forked while the agent runs (pyroute2 opens a netlink socket in another
    namespace that way, from whichever thread asks, and ends the helper with SIGTERM): the
    child must die of that signal as by default, never run the agent's own stop handler
    in its copy, and never write it into a signal wakeup pipe it shares with the agent
    (which would read as a SIGTERM sent to the agent)."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped lines on stderr (journald, or the lab's lb1.log, collects them)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger("xlb")
    root.addHandler(handler)
    root.setLevel(level)


def main(config_path: str) -> int:
    setup_logging()
    os.register_at_fork(after_in_child=_quiet_forks)
    ac = agent_settings.load(config_path)
    log.info("agent %s starting (pid %d, config %s)", ac.config.instance.name, os.getpid(),
             config_path)
    raise_descriptor_limit()
    agent = Agent(ac)
    try:
        agent.start()
    except XlbError as e:
        log.error("agent %s could not start: %s", ac.config.instance.name, e)
        agent.close()
        raise
    asyncio.run(run(agent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
