"""A child forked while the agent's loop runs must not stop the agent when it is signalled.

pyroute2 forks a helper to open a netlink socket in another namespace and ends it with
SIGTERM; the child shares the loop's signal wakeup pipe, so without the agent's at-fork
guard that SIGTERM reads as one sent to the agent, which then stops.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import asyncio, os, signal, sys, time
    from xlb.agent.main import _quiet_forks
    if sys.argv[1] == "guarded":
        os.register_at_fork(after_in_child=_quiet_forks)

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        def fork_and_end_child():  # as pyroute2 does, from a worker thread
            pid = os.fork()
            if pid == 0:
                time.sleep(5)
                os._exit(0)
            time.sleep(0.2)
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        await asyncio.to_thread(fork_and_end_child)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
            print("stopped by the child's signal")
        except TimeoutError:
            print("still running")
    asyncio.run(main())
""")


@pytest.mark.parametrize("mode,expected", [("guarded", "still running"),
                                           ("unguarded", "stopped by the child's signal")])
def test_a_signalled_child_does_not_stop_the_agent(mode: str, expected: str) -> None:
    r = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.strip() == expected, r.stderr
