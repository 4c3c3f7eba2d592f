"""Long-lived connections that keep talking: does an LB failover break any of them?

Runs inside the client namespace (`LongLived` re-executes this module there). It opens
`--count` HTTP keep-alive connections per family to the VIPs (each from its own client
address, so the router's 5-tuple hash spreads them over the LBs), prints one JSON line
with every flow (source, port, VIP, the backend that answered), then asks again on every
connection every `--interval` seconds. A connection is broken when a request fails (reset,
timeout, closed) or a *different* backend answers: after an LB change the new LB has no
entry for the flow and picks by Maglev, so this is where "every LB picks the same backend"
is checked with real TCP. On SIGTERM it prints the summary (JSON) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from xlb.lab.script import ClientScript
from xlb.lab.topology import CLIENT_ADDRS, CLIENT_ADDRS6, VIP, VIP6

FIRST_SOURCE = 16  # client addresses from here on (the tests' own single clients use others)
REQUEST = b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n"


@dataclass
class Flow:
    src: str
    vip: str
    sport: int = 0
    backend: str = ""
    client: str = ""            # who the backend saw asking (X-Client)
    requests: int = 0
    slowest_ms: float = 0.0
    broken: str = ""            # why ("" = fine)
    broken_after: float = 0.0   # seconds since the start

    def doc(self) -> dict[str, Any]:
        return {"src": self.src, "vip": self.vip, "sport": self.sport, "backend": self.backend,
                "client": self.client, "requests": self.requests,
                "slowest_ms": round(self.slowest_ms, 1),
                "broken": self.broken, "broken_after": round(self.broken_after, 2)}


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, str]:
    """One request: (the backend that answered, who it saw asking)."""
    writer.write(REQUEST)
    await writer.drain()
    length, client = 0, ""
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.partition(b":")
        if key.lower() == b"content-length":
            length = int(value)
        elif key.lower() == b"x-client":
            client = value.strip().decode()
    if not line:
        raise ConnectionError("closed by the peer")
    return (await reader.readexactly(length)).decode().strip(), client


async def _open(flow: Flow, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(flow.vip, 80, local_addr=(flow.src, 0)), timeout)
    flow.sport = writer.get_extra_info("sockname")[1]
    flow.backend, flow.client = await asyncio.wait_for(_get(reader, writer), timeout)
    return reader, writer


async def _talk(flow: Flow, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                interval: float, timeout: float, started: float, stop: asyncio.Event) -> None:
    reader, writer = conn
    while not stop.is_set():
        t = time.monotonic()
        try:
            answer, client = await asyncio.wait_for(_get(reader, writer), timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            flow.broken, flow.broken_after = type(e).__name__, time.monotonic() - started
            break
        flow.requests += 1
        flow.slowest_ms = max(flow.slowest_ms, (time.monotonic() - t) * 1000)
        if answer != flow.backend or client != flow.client:
            flow.broken = (f"answered by {answer}, not {flow.backend}" if answer != flow.backend
                           else f"the backend saw {client}, not {flow.client}")
            flow.broken_after = time.monotonic() - started
            break
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
    writer.close()


async def run(count: int, interval: float, timeout: float) -> dict[str, Any]:
    flows = [Flow(CLIENT_ADDRS[FIRST_SOURCE + i], VIP) for i in range(count)]
    flows += [Flow(CLIENT_ADDRS6[FIRST_SOURCE + i], VIP6) for i in range(count)]
    conns = await asyncio.gather(*(_open(f, timeout) for f in flows))
    print(json.dumps([f.doc() for f in flows]), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await asyncio.gather(*(_talk(f, c, interval, timeout, started, stop)
                           for f, c in zip(flows, conns, strict=True)))
    return {"seconds": round(time.monotonic() - started, 2), "connections": len(flows),
            "requests": sum(f.requests for f in flows),
            "broken": [f.doc() for f in flows if f.broken],
            "slowest_ms": round(max(f.slowest_ms for f in flows), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xlb.lab.longlived")
    p.add_argument("--count", type=int, default=8, help="connections per family")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between requests")
    p.add_argument("--timeout", type=float, default=3.0, help="a request's time limit")
    a = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(a.count, a.interval, a.timeout))), flush=True)
    return 0


@dataclass
class LongLived(ClientScript):
    """The script above in the client namespace: `flows` once connected, stop() -> summary
    (requests, broken connections)."""

    count: int = 8
    interval: float = 0.05
    flows: list[dict[str, Any]] = field(default_factory=list)

    def __enter__(self) -> LongLived:
        line = self._start("xlb.lab.longlived", "--count", str(self.count),
                           "--interval", str(self.interval),
                           what="the long-lived connections did not open")
        self.flows = json.loads(line)
        return self


if __name__ == "__main__":
    sys.exit(main())
