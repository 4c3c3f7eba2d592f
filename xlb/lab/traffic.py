"""Lab traffic: real TCP connections (HTTP GET) and UDP queries to the VIP.

Runs inside the client namespace (`xlb lab traffic` re-executes itself
there). Connections start at a steady rate from rotating client addresses
and ephemeral ports, at most `concurrency` at a time; every second a line of
figures, at the end a summary (JSON with --json). Every --v6-every'th
connection (and the UDP query that goes with it) uses IPv6, to the v6 VIP.
The summary's counts and backends cover both families; its "v6" part
repeats the IPv6 share on its own; its "modes" part counts, per VIP, the answers by the
mode their flow took, as the backend saw it (its X-Client header, its echo's second line:
an address of an LB's SNAT pool = snat, the client's own address = dsr). It only ever
talks to the lab's two VIPs, and stops after --duration or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from xlb.lab import traffic_args
from xlb.lab.server import parse_client
from xlb.lab.topology import CLIENT_ADDRS, CLIENT_ADDRS6, VIP, VIP6, VIPS, Lab

_LAB = Lab()
_NAMES = {(address, proto): name for name, (address, _, proto) in VIPS.items()}


def mode_of(client: str) -> str:
    """The mode a flow took, from who the backend says asked it (X-Client)."""
    return "snat" if _LAB.snat_owner(parse_client(client)[0]) else "dsr"


@dataclass
class Counts:
    """What one address family did."""

    ok: int = 0
    failed: int = 0
    udp_ok: int = 0
    udp_failed: int = 0
    backends: dict[str, int] = field(default_factory=dict)


@dataclass
class Tally(Counts):
    """Both families together, with what only the totals keep."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    v6: Counts = field(default_factory=Counts)
    modes: dict[str, dict[str, int]] = field(default_factory=dict)  # VIP -> mode -> answers

    def mode(self, vip: str, proto: str, client: str) -> None:
        by = self.modes.setdefault(_NAMES[vip, proto], {"dsr": 0, "snat": 0})
        by[mode_of(client)] += 1

    def fail(self, e: BaseException, v6: bool = False) -> None:
        self.failed += 1
        self.v6.failed += v6
        kind = type(e).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def succeed(self, backend: str, ms: float, v6: bool = False) -> None:
        self.ok += 1
        self.backends[backend] = self.backends.get(backend, 0) + 1
        self.latencies_ms.append(ms)
        if v6:
            self.v6.ok += 1
            self.v6.backends[backend] = self.v6.backends.get(backend, 0) + 1

    def udp(self, ok: bool, v6: bool = False) -> None:
        if ok:
            self.udp_ok += 1
            self.v6.udp_ok += v6
        else:
            self.udp_failed += 1
            self.v6.udp_failed += v6

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)) if lat else None
        v6 = self.v6
        return {"seconds": round(seconds, 2), "tcp_ok": self.ok, "tcp_failed": self.failed,
                "connections_per_second": round(self.ok / seconds, 1) if seconds else 0,
                "udp_ok": self.udp_ok, "udp_failed": self.udp_failed,
                "latency_ms": {"p50": pct(0.5), "p99": pct(0.99),
                               "mean": round(statistics.fmean(lat), 2) if lat else None}
                if pct else None,
                "backends": dict(sorted(self.backends.items())), "errors": self.errors,
                "v6": {"tcp_ok": v6.ok, "tcp_failed": v6.failed, "udp_ok": v6.udp_ok,
                       "udp_failed": v6.udp_failed, "backends": dict(sorted(v6.backends.items()))},
                "modes": dict(sorted(self.modes.items()))}


def header(head: bytes, name: bytes) -> str:
    """One header's value from an HTTP answer's head ("" if absent)."""
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            return value.strip().decode(errors="replace")
    return ""


async def one_tcp(src: str, tally: Tally, timeout: float) -> None:
    v6 = ":" in src
    vip = VIP6 if v6 else VIP
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(vip, 80, local_addr=(src, 0)), timeout)
        writer.write(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), timeout)
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise ConnectionError("bad reply")
        name = body.decode(errors="replace").strip()
        tally.succeed(name, (time.monotonic() - started) * 1000, v6)
        if client := header(head, b"X-Client"):
            tally.mode(vip, "tcp", client)
    except (TimeoutError, OSError, ConnectionError) as e:
        tally.fail(e, v6)


def one_udp(sock: socket.socket, tally: Tally) -> None:
    v6 = sock.family == socket.AF_INET6
    vip = VIP6 if v6 else VIP
    try:
        sock.sendto(b"q", (vip, 53))
        data, peer = sock.recvfrom(256)
        if peer[0] != vip:
            raise ConnectionError(f"reply from {peer[0]}, not the VIP")
        tally.udp(True, v6)
        lines = data.split(b"\n", 2)  # the echo: backend, who asked, the query
        if len(lines) == 3:
            tally.mode(vip, "udp", lines[1].decode(errors="replace"))
    except (OSError, ConnectionError):
        tally.udp(False, v6)


async def generate(rate: float, concurrency: int, duration: float, udp_every: int,
                   quiet: bool, v6_every: int = 0) -> dict[str, Any]:
    tally = Tally()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    slots = asyncio.Semaphore(concurrency)
    udp = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in CLIENT_ADDRS]
    udp6 = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in CLIENT_ADDRS6]
    for s, src in zip(udp + udp6, CLIENT_ADDRS + CLIENT_ADDRS6, strict=True):
        s.bind((src, 0))
        s.settimeout(0.5)
    tasks: set[asyncio.Task[None]] = set()
    started = next_report = time.monotonic()
    last_ok = 0
    i = 0
    while not stop.is_set() and (duration <= 0 or time.monotonic() - started < duration):
        await slots.acquire()
        v6 = bool(v6_every) and (i + 1) % v6_every == 0
        n = i // v6_every if v6 else i
        src = CLIENT_ADDRS6[n % len(CLIENT_ADDRS6)] if v6 else CLIENT_ADDRS[n % len(CLIENT_ADDRS)]
        task = asyncio.create_task(one_tcp(src, tally, timeout=3.0))
        task.add_done_callback(tasks.discard)
        task.add_done_callback(lambda _t: slots.release())
        tasks.add(task)
        if udp_every and i % udp_every == 0:
            socks = udp6 if v6 else udp
            await loop.run_in_executor(None, one_udp, socks[n % len(socks)], tally)
        i += 1
        now = time.monotonic()
        if not quiet and now >= next_report:
            print(f"{time.strftime('%H:%M:%S')} tcp ok {tally.ok} (+{tally.ok - last_ok}/s) "
                  f"failed {tally.failed}  udp ok {tally.udp_ok} failed {tally.udp_failed}  "
                  f"(v6: tcp ok {tally.v6.ok} failed {tally.v6.failed})", flush=True)
            last_ok = tally.ok
            next_report = now + 1.0
        pause = started + i / rate - time.monotonic()
        if pause > 0:
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass
    if tasks:
        await asyncio.wait(tasks, timeout=5.0)
    for s in udp + udp6:
        s.close()
    return tally.summary(time.monotonic() - started)


def summary_text(s: dict[str, Any]) -> str:
    """A traffic summary for people (the JSON one is for scripts)."""
    lat = s["latency_ms"]
    latency = (f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, mean {lat['mean']} ms"
               if lat else "no latency (no connection succeeded)")
    split = ", ".join(f"{b} {n}" for b, n in s["backends"].items()) or "none"
    v6 = s["v6"]
    lines = [f"traffic over {s['seconds']} s: {s['tcp_ok']} TCP connections ok, "
             f"{s['tcp_failed']} failed ({s['connections_per_second']}/s); UDP {s['udp_ok']} ok, "
             f"{s['udp_failed']} failed",
             f"  of these over IPv6: TCP {v6['tcp_ok']} ok, {v6['tcp_failed']} failed; UDP "
             f"{v6['udp_ok']} ok, {v6['udp_failed']} failed",
             f"  {latency}", f"  connections per backend: {split}"]
    if s.get("modes"):
        lines.append("  answers by mode (as the backends saw them): " + "; ".join(
            f"{vip} dsr {n['dsr']} snat {n['snat']}" for vip, n in s["modes"].items()))
    if s["errors"]:
        lines.append("  errors: " + ", ".join(f"{e} x{n}" for e, n in s["errors"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="xlb lab traffic", description=__doc__.splitlines()[0])
    traffic_args.add_arguments(ap)  # bad values: a usage error (2), as in `xlb lab traffic`
    args = ap.parse_args(argv)
    summary = asyncio.run(generate(args.rate, args.concurrency, args.duration, args.udp_every,
                                   quiet=args.json, v6_every=args.v6_every))
    print(json.dumps(summary) if args.json else summary_text(summary))
    return 0 if summary["tcp_failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
