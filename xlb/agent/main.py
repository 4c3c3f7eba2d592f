"""`xlb agent INSTANCE`: run one instance's agent in the foreground.

Start: check the capabilities and directories it needs, load or adopt the data plane,
apply the intent, open the API socket, tell systemd it is ready (xlb/agent/notify.py).
Then tick (with a sign of life to systemd's watchdog each time): read counters,
compute rates, publish a snapshot; a tick that fails is logged and counted, never the
end of the agent. SIGTERM/SIGINT end the agent and leave the data plane running
(nothing is detached or flushed); a crash leaves it running too.
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

from xlb import privileges
from xlb.agent import logs, metrics
from xlb.agent import settings as agent_settings
from xlb.agent.core import Agent
from xlb.agent.health import HealthChecker
from xlb.agent.notify import Notifier
from xlb.agent.server import Server
from xlb.api.protocol import ErrorEvent
from xlb.dataplane.maps import pin_dir
from xlb.errors import UsageError, XlbError
from xlb.paths import run_dir

log = logging.getLogger("xlb.agent")


async def run(agent: Agent, notifier: Notifier | None = None) -> None:
    notifier = notifier or Notifier({})
    # the exporter first: a client of the API may ask for its port at once
    exporter: metrics.Exporter | None = None
    st = agent.settings
    if st.metrics:
        try:
            exporter = metrics.serve(st.metrics, agent.published,
                                     st.socket_group or st.operator_group)
        except OSError as e:
            raise XlbError(f"metrics on {st.metrics}: {e.strerror}; set [agent] metrics to "
                           "another host:port or unix:PATH, or \"\" to turn it off") from e
        agent.metrics_port = exporter.port
        agent.last = {**agent.last, "metrics_port": exporter.port}  # before the first tick too
    server = Server(agent)
    try:
        await server.serve()
    except BaseException:
        if exporter is not None:
            exporter.close()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[int] = []  # the signal that ends the agent, logged once it is out

    def stopping(_signum: int, _frame: object) -> None:
        # A plain handler, not loop.add_signal_handler: that one learns of the signal
        # through a byte in the loop's self-pipe, which is lost when a burst of wake-ups
        # from other threads (thousands of events for subscribers) has filled the pipe.
        # This one runs in the loop's thread at once, whatever the pipe holds.
        received.append(_signum)
        agent.stopping.set()  # work in progress in the tick's thread gives up
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
            loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stopping)
    where = (f", metrics on port {exporter.port}" if exporter and exporter.port else
             f", metrics on {st.metrics}" if exporter else "")
    log.info("agent %s running: API on %s%s", agent.name, st.socket, where)
    vips = len(agent.desired.vips)
    notifier.ready(f"{agent.load_result.get('mode')} XDP on {agent.load_result.get('interface')}, "
                   f"{vips} VIP{'s' * (vips != 1)}; API on {st.socket}")
    notifier.check_tick(st.tick)
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
            notifier.alive()  # a failed tick is no hang: only a tick that never ends is
            try:
                await asyncio.wait_for(stop.wait(), st.tick)
            except TimeoutError:
                pass
    finally:
        notifier.stopping()
        if received:
            log.info("%s received: stopping", signal.Signals(received[0]).name)
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
            await loop.run_in_executor(self.thread, self._tick_and_publish)
        except Exception as e:
            self._failed(e)
            return
        if self.streak:
            log.info("the tick works again after %d failure(s)", self.streak)
            self.streak = 0

    def _tick_and_publish(self) -> None:
        """In the tick's thread: the snapshot is encoded there too (once, for every
        subscriber), never on the event loop that answers the API."""
        self.agent.emit("snapshot", self.agent.tick())

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


def check_privileges(ac: agent_settings.AgentConfig) -> None:
    """Capabilities, not uid 0: PrivilegeError names what is missing, and which of the
    agent's directories its user cannot write."""
    inst, st = ac.config.instance, ac.settings
    privileges.require("xlb agent", inst.netns)
    privileges.require_writable("xlb agent", own=[pin_dir(inst.name), run_dir(inst.name)],
                                shared=(os.path.dirname(st.audit_log),
                                        os.path.dirname(st.socket)),
                                files=(st.audit_log,))


def main(config_path: str, log_level: str = "info", instance: str | None = None,
         force: bool = False) -> int:
    """Run the agent of `config_path` (which must be `instance`'s, when that is given);
    `force` takes over an XDP program on the interface that is not the instance's own."""
    logs.setup(log_level)
    os.register_at_fork(after_in_child=_quiet_forks)
    notifier = Notifier()
    ac = agent_settings.load(config_path)  # a ConfigError is the CLI's to print
    name = ac.config.instance.name
    if instance is not None and name != instance:
        raise UsageError(f"xlb agent {instance}: {config_path} is the config of instance "
                         f"{name!r}")
    agent: Agent | None = None
    try:
        log.info("agent %s starting (pid %d, uid %d, config %s)", name, os.getpid(),
                 os.geteuid(), config_path)
        check_privileges(ac)
        raise_descriptor_limit()
        agent = Agent(ac)
        agent.start(force=force)
    except XlbError as e:
        log.error("agent %s could not start: %s", name, e)
        notifier.status(f"could not start: {e}")
        if agent is not None:
            agent.close()
        raise
    try:
        asyncio.run(run(agent, notifier))
    except XlbError as e:  # the API socket or the metrics could not be opened
        log.error("agent %s could not start: %s", name, e)
        notifier.status(f"could not start: {e}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "info"))
