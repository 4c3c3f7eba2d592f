"""A long-lived HTTP connection from the lab's client namespace, for tests that must see one
established flow keep its backend (drains, restarts, traces, LB failover); the lab's agents
all at once (the router spreads flows over every LB, so a fleet-wide change is made on each)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from xlb.api.client import AgentClient
from xlb.lab import topology
from xlb.lab.switches import call_lbs
from xlb.paths import default_socket

LBS = topology.Lab().lbs

# argv: VIP, client source address; prints {"sport", "backend"} (the lab's servers answer
# with their name) once connected, then again for every line on stdin
SCRIPT = """
import json, socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=5, source_address=(sys.argv[2], 0))
f = s.makefile("rb")
def get():
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: vip\\r\\n\\r\\n")
    length = 0
    while (line := f.readline()) not in (b"\\r\\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return f.read(length).decode().strip()
sport = s.getsockname()[1]
print(json.dumps({"sport": sport, "backend": get()}), flush=True)
for _ in sys.stdin:
    print(json.dumps({"sport": sport, "backend": get()}), flush=True)
"""
# server name (as it answers) -> address
BACKENDS = {b.name.removeprefix(topology.PREFIX): b.address for b in topology.Lab().backends}


class KeepAlive:
    """One HTTP connection kept open; `first` is the backend (server name) that answered
    first, `address` its address, `sport` the connection's source port; get() asks again."""

    def __init__(self, source: str = "198.18.0.40", vip: str = topology.VIP):
        self.source, self.vip = source, vip

    def __enter__(self) -> KeepAlive:
        self.proc = subprocess.Popen(["ip", "netns", "exec", topology.CLIENT, sys.executable,
                                      "-c", SCRIPT, self.vip, self.source],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self._answer()
        self.first, self.sport = str(first["backend"]), int(first["sport"])
        self.address = BACKENDS[self.first]
        return self

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def get(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("again\n")
        self.proc.stdin.flush()
        return str(self._answer()["backend"])

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


@contextmanager
def agents(timeout: float = 10.0) -> Iterator[dict[str, AgentClient]]:
    """A client of every LB's agent, by LB name."""
    with ExitStack() as stack:
        yield {lb: stack.enter_context(AgentClient(default_socket(lb), timeout=timeout))
               for lb in LBS}


def call_all(method: str, **params: Any) -> dict[str, Any]:
    """One call on every LB's agent (drain a backend fleet-wide): the answers by LB."""
    return call_lbs(method, params)
