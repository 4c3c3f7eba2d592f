"""A steady stream of numbered UDP queries to the lab's echo (the VIPs' port 53): how many
packets a change lost, and for how long, counted by the client.

Runs inside the client namespace (`UdpStream` re-executes this module there). `--flows`
sockets per family (one client address each, so the router's 5-tuple hash spreads them
over the LBs) take turns sending query number n at `--rate` queries/s in all; every echo
carries its query back. On SIGTERM it stops sending, waits for the last answers and prints
the summary (JSON): sent, answered, lost, the longest run of consecutive lost queries of
one flow in milliseconds (the outage that flow saw), lost per LB flow.
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from xlb.lab.script import ClientScript
from xlb.lab.topology import CLIENT_ADDRS, CLIENT_ADDRS6, VIP, VIP6

FIRST_SOURCE = 8  # client addresses 8.. (longlived.py takes 16..; the tests' own take others)


def _receive(socks: list[socket.socket], answered: set[int], stop: threading.Event) -> None:
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    while not stop.is_set():
        for key, _ in sel.select(0.1):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(512)
            except OSError:
                continue
            query = data.rsplit(b"\n", 1)[-1]  # the echo: name, who asked, the query
            if query.startswith(b"n"):
                answered.add(int(query[1:]))


def run(rate: float, flows: int, v6: bool) -> dict[str, Any]:
    socks = []
    for i in range(flows):
        for fam, addrs, vip in ((socket.AF_INET, CLIENT_ADDRS, VIP),
                                (socket.AF_INET6, CLIENT_ADDRS6, VIP6))[:2 if v6 else 1]:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.bind((addrs[FIRST_SOURCE + i], 0))
            s.connect((vip, 53))
            socks.append(s)
    answered: set[int] = set()
    stop_rx, stop_tx = threading.Event(), threading.Event()
    rx = threading.Thread(target=_receive, args=(socks, answered, stop_rx), daemon=True)
    rx.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_tx.set())
    print(json.dumps({"flows": len(socks)}), flush=True)
    started = time.monotonic()
    sent = 0
    while not stop_tx.is_set():
        try:
            socks[sent % len(socks)].send(b"n%d" % sent)
        except OSError:
            pass  # a refused send is a lost query like any other
        sent += 1
        pause = started + sent / rate - time.monotonic()
        if pause > 0:
            stop_tx.wait(pause)
    seconds = time.monotonic() - started
    time.sleep(0.5)  # the last answers
    stop_rx.set()
    rx.join()
    lost = [n for n in range(sent) if n not in answered]
    # per flow (query n went out of socket n % len): its longest run of lost queries
    longest = 0
    for f in range(len(socks)):
        run_, prev = 0, None
        for n in (q for q in lost if q % len(socks) == f):
            run_ = run_ + 1 if prev is not None and n == prev + len(socks) else 1
            longest, prev = max(longest, run_), n
    return {"seconds": round(seconds, 2), "rate": rate, "flows": len(socks), "sent": sent,
            "answered": sent - len(lost), "lost": len(lost),
            "longest_outage_ms": round(longest * len(socks) / rate * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xlb.lab.udpstream")
    p.add_argument("--rate", type=float, default=1000.0, help="queries per second, in all")
    p.add_argument("--flows", type=int, default=8, help="sockets (client addresses) per family")
    p.add_argument("--v4-only", action="store_true")
    a = p.parse_args(argv)
    print(json.dumps(run(a.rate, a.flows, not a.v4_only)), flush=True)
    return 0


@dataclass
class UdpStream(ClientScript):
    """The stream above in the client namespace while in the `with`; stop() -> summary."""

    rate: float = 1000.0
    flows: int = 8
    summary: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> UdpStream:
        self._start("xlb.lab.udpstream", "--rate", str(self.rate), "--flows", str(self.flows),
                    what="the UDP stream did not start")
        return self

    def stop(self) -> dict[str, Any]:
        self.summary = super().stop()
        return self.summary


if __name__ == "__main__":
    sys.exit(main())
