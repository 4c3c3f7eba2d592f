"""The agent under mass health failure, and its tick (figures, not a test).

Usage: sudo .venv/bin/python bench/agent.py [--backends 5000] [--budget 20] [--only NAME]
       [--subscribers 10]

Runs as root in a private network namespace, pin root and run root (all removed at the
end). Three parts:

* **mass** (in process): an agent with 5,000 backends (one VIP of 5,000, then 50 VIPs
  of 100) is told that all of them went down at once, then that they are back, then
  that half of them went down. Shown: the time from the verdicts to the data plane
  applied ("handled in"; the target for all going down at once is < 100 ms), and the
  longest any other thread waited for the agent's lock meanwhile (a tick waits that
  long). An agent without batched verdicts gets them one by one, for at most
  `--budget` seconds, and the total is extrapolated from that.
* **tick** (in process): the agent's tick (counters, rates, snapshot) with 1,000
  backends in 10 VIPs: wall time and CPU time per tick.
* **fanout** (in process, the real API server on a socket): the tick with 1,000
  backends in 10 VIPs, published to 0 and to 10 subscribers (in a child process that
  only counts lines). Shown per tick: the wall time from the tick's start until every
  subscriber has the snapshot, and the agent's CPU time (all its threads); then the
  cost of encoding one snapshot with json (and msgspec, if installed), for comparison.
* **live** (a real agent process): 5,000 backends its TCP checks find unreachable.
  Shown: how long until `status` reports them down, the slowest `status` answer
  meanwhile (a client asks every 20 ms), and how long SIGTERM takes to end it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOTS = tempfile.mkdtemp(prefix="xlb-bench-agent-")
os.environ.setdefault("XLB_PIN_ROOT", f"/sys/fs/bpf/xlb-bench-agent-{os.getpid()}")
os.environ.setdefault("XLB_RUN_ROOT", os.path.join(ROOTS, "run"))
os.environ.setdefault("XLB_STATE_ROOT", os.path.join(ROOTS, "state"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlb.agent import core  # noqa: E402
from xlb.agent import settings as agent_settings  # noqa: E402
from xlb.agent.core import Agent  # noqa: E402
from xlb.agent.main import Ticker  # noqa: E402
from xlb.agent.server import Server  # noqa: E402
from xlb.api.client import AgentClient  # noqa: E402
from xlb.dataplane import bpfsys, lifecycle, manager  # noqa: E402
from xlb.dataplane import structs as S  # noqa: E402
from xlb.dataplane.config import vip_label  # noqa: E402
from xlb.errors import AgentUnavailable  # noqa: E402
from xlb.lab import netns  # noqa: E402
from xlb.paths import PIN_ROOT, RUN_ROOT  # noqa: E402
from xlb.schema import AGENT, smallest_ring  # noqa: E402

NS = f"xlbbench-{os.getpid()}"
QUEUES = S.XLB_MAX_QUEUES  # the test interface has as many RX queues as xlb counts
REPO = Path(__file__).resolve().parent.parent


def backend_addresses(n: int) -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        a = f"10.{1 + i // 62500}.{(i // 250) % 250}.{1 + i % 250}"
        out.append(a)
        i += 1
    return out


def config(tmp: str, name: str, vips: int, per_vip: int, health: str = "none",
           agent_extra: str = "", tail: str = "", max_connections: int = 65536) -> str:
    addrs = backend_addresses(vips * per_vip)
    lines = [f"""[agent]
socket = "{tmp}/{name}.sock"
tick = 1.0
audit_log = "{tmp}/{name}-audit.jsonl"
metrics = ""
health = "{health}"
health_interval = 1.0
health_timeout = 0.5
{agent_extra}

[instance]
name = "{name}"
interface = "xlb0"
netns = "{NS}"
max_vips = {max(vips, 4)}
ring_size = {smallest_ring(per_vip)}
max_backends = {max(8192, vips * per_vip)}
max_connections = {max_connections}
"""]
    for v in range(vips):
        lines.append(f'[[vip]]\nname = "v{v}"\naddress = "10.200.{v // 250}.{1 + v % 250}"\n'
                     'port = 80\nprotocol = "tcp"\n')
        for a in addrs[v * per_vip:(v + 1) * per_vip]:
            lines.append(f'[[vip.backend]]\naddress = "{a}"\n')
    return "\n".join([*lines, tail])


def supports(key: str) -> bool:
    return key in AGENT.keys


@contextlib.contextmanager
def namespace() -> Iterator[None]:
    netns.create(NS)
    try:
        netns.veth(NS, "xlb0", NS, "peer0", queues=QUEUES)
        yield
    finally:
        netns.remove(NS)


@contextlib.contextmanager
def in_process_agent(tmp: str, name: str, vips: int, per_vip: int,
                     agent_extra: str = "", tail: str = "",
                     max_connections: int = 65536) -> Iterator[Agent]:
    path = os.path.join(tmp, f"{name}.toml")
    with open(path, "w") as f:
        f.write(config(tmp, name, vips, per_vip, agent_extra=agent_extra, tail=tail,
                       max_connections=max_connections))
    agent = Agent(agent_settings.load(path))
    agent.start()
    try:
        yield agent
    finally:
        agent.close()
        lifecycle.unload_instance(name, remove_pins=True, pin_root=PIN_ROOT, run_root=RUN_ROOT)


class LockWatch:
    """Another thread taking the agent's lock every millisecond: the longest wait is how
    long a tick (or any reader that needs the lock) would have stalled."""

    def __init__(self, lock: Any):
        self.lock, self.longest, self._stop = lock, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            with self.lock:
                pass
            self.longest = max(self.longest, time.perf_counter() - t)
            time.sleep(0.001)

    def __enter__(self) -> LockWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def verdicts(agent: Agent, addrs: list[str], healthy: bool, budget: float) -> tuple[int, float]:
    """Hand `addrs`' verdicts to the agent as its health loop does; (handled, seconds)."""
    t0 = time.perf_counter()
    if hasattr(agent, "report_health"):
        for a in addrs:
            agent.report_health(a, healthy, "bench")
        agent.commit_health()
        return len(addrs), time.perf_counter() - t0
    done = 0  # an agent that applies every verdict on its own, under its lock
    set_health = getattr(agent, "set_health")  # noqa: B009 (older agents only)
    for a in addrs:
        set_health(a, healthy, "bench")
        done += 1
        if time.perf_counter() - t0 > budget:
            break
    return done, time.perf_counter() - t0


def show_event(what: str, n: int, done: int, seconds: float, watch: LockWatch) -> None:
    if done == n:
        took = f"{seconds * 1000:9.1f} ms"
    else:
        took = (f"> {seconds:6.1f} s  (only {done} of {n} in the budget; at that pace all "
                f"would take > {seconds * n / max(done, 1):.0f} s)")
    print(f"  {what:<34} handled in {took}; longest lock wait {watch.longest * 1000:.1f} ms")


def mass(tmp: str, n: int, budget: float) -> None:
    print(f"\nmass health failure: {n} backends, verdicts to data plane applied")
    for vips in (1, 50):
        per_vip = n // vips
        addrs = backend_addresses(vips * per_vip)
        extra = ""
        label = f"{vips} VIP(s) x {per_vip}"
        for panic in ("on", "off") if supports("health_panic_threshold") else ("n/a",):
            if panic == "off":
                extra = "health_panic_threshold = 0"
            with in_process_agent(tmp, f"m{vips}", vips, per_vip, extra) as agent:
                print(f" {label}, panic {panic}:")
                for what, subset, healthy in (("all down at once", addrs, False),
                                              ("all back up", addrs, True),
                                              ("every other one down", addrs[::2], False)):
                    with LockWatch(agent.lock) as watch:
                        done, seconds = verdicts(agent, subset, healthy, budget)
                    show_event(what, len(subset), done, seconds, watch)
                    if done < len(subset):
                        break  # the agent is far behind: the next steps say nothing new


def every_probe() -> str:
    """A [probes] table that turns every probe on, the auto ones too (none: no probes)."""
    from xlb import schema

    probes = getattr(schema, "PROBES", None)
    if probes is None:
        return ""
    return "[probes]\n" + "".join(f'{s.name} = "on"\n' for s in probes.settings
                                  if s.kind == "string")


# A [bgp] table whose one neighbor has no route in the bench's namespace: ExaBGP runs, and
# the tick decides and hands over every VIP's prefix, but no packet leaves the namespace.
BGP_TAIL = """
[bgp]
local_asn = 65001
router_id = "198.18.1.2"
[[bgp.neighbor]]
address = "198.18.1.1"
asn = 65000
"""


def tick(tmp: str, vips: int = 10, per_vip: int = 100, bgp: bool = False) -> None:
    print(f"\ntick with {vips * per_vip} backends ({vips} VIPs x {per_vip})"
          + (", every probe on" if every_probe() else "")
          + (", [bgp]: ExaBGP running, RHI for every VIP" if bgp else ""))
    tail = every_probe() + (BGP_TAIL if bgp else "")
    with in_process_agent(tmp, "tk", vips, per_vip, tail=tail) as agent:
        starting = getattr(agent, "_probes_starting", None)
        if starting is not None:  # the probes compile in the background: wait for them
            starting.join()
        probes = getattr(agent, "probes", None)
        attached = [n for n, st in probes.state.items() if st == "attached"] if probes else []
        for label in (f"probes on ({', '.join(attached)})", "probes off") if attached else (
                "",):
            if label == "probes off" and probes is not None:
                for name in attached:
                    probes.detach(name, "bench")
            for _ in range(3):
                agent.tick()
            wall, cpu = [], []
            for _ in range(50):
                t, c = time.perf_counter(), time.thread_time()
                agent.tick()
                wall.append(time.perf_counter() - t)
                cpu.append(time.thread_time() - c)
            print(f"  {label + ': ' if label else ''}"
                  f"wall {statistics.median(wall) * 1000:.2f} ms median, "
                  f"{max(wall) * 1000:.2f} ms max; CPU {statistics.median(cpu) * 1000:.2f} ms "
                  "median per tick")


SUBSCRIBERS = r"""
import selectors, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
sel = selectors.DefaultSelector()
buf, seen = {}, {}
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "subscribe"}\n')
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    buf[s], seen[s] = b"", 0
print("ready", flush=True)
told = 0
while True:
    for key, _ in sel.select():
        s = key.fileobj
        data = s.recv(1 << 20)
        if not data:
            sys.exit(0)
        lines = (buf[s] + data).split(b"\n")
        buf[s] = lines.pop()
        seen[s] += sum(1 for line in lines if b'"snapshot"' in line[:64])
    while told < min(seen.values()):
        told += 1
        print(told, flush=True)
"""


async def publish(agent: Agent, subscribers: int, ticks: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) per tick, from its start until every subscriber has the snapshot."""
    server = Server(agent)
    await server.serve()
    ticker = Ticker(agent)
    child = None
    try:
        if subscribers:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SUBSCRIBERS, agent.settings.socket, str(subscribers),
                stdout=asyncio.subprocess.PIPE)
            assert child.stdout is not None
            assert (await child.stdout.readline()).strip() == b"ready"
            while len(server.subscribers) < subscribers:
                await asyncio.sleep(0.01)
        wall, cpu = [], []
        for k in range(-2, ticks):  # two to warm up
            t, c = time.perf_counter(), time.process_time()
            await ticker.tick()
            if child is not None and child.stdout is not None:
                while int(await child.stdout.readline()) < k + 3:
                    pass
            if k >= 0:
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            await asyncio.sleep(0.05)  # the pace of real ticks matters less than the cost
        return wall, cpu
    finally:
        if child is not None:
            child.kill()
            await child.wait()
        ticker.close()
        server.close()


def fanout(tmp: str, subscribers: int) -> None:
    print("\nfan-out: tick with 1000 backends (10 VIPs x 100) published to subscribers")
    with in_process_agent(tmp, "fo", 10, 100) as agent:
        for n in (0, subscribers):
            wall, cpu = asyncio.run(publish(agent, n, 40))
            print(f"  {n:3d} subscribers: wall {statistics.median(wall) * 1000:6.2f} ms median, "
                  f"{max(wall) * 1000:6.2f} ms max; CPU {statistics.median(cpu) * 1000:6.2f} ms "
                  "median per tick")
        encoding(agent)


def _ptr(arr: np.ndarray) -> ctypes.c_char:
    return ctypes.c_char.from_address(arr.ctypes.data)


class Traffic:
    """The per-CPU counters as traffic on every queue, VIP and backend would leave them:
    each step() adds a second's worth to each row of every CPU (and counts each backend's
    flows as active in this activity epoch and the last, as the data plane does), written
    with one batch update per map, as the data plane's own rows are read."""

    def __init__(self, agent: Agent, pps: float = 1e6):
        assert agent.dp is not None
        self.maps = agent.dp.maps
        self.per_row = {"queue_stats": pps / QUEUES, "vip_stats": pps / max(1, len(agent.vip_ids)),
                        "backend_stats": pps / max(1, len(agent.backend_ids))}
        self.rows = {name: self.maps[name].read_percpu().copy() for name in self.per_row}
        self.used = {"queue_stats": np.arange(QUEUES),
                     "vip_stats": np.array(sorted(agent.vip_ids.values()), dtype=np.int64),
                     "backend_stats": np.array(sorted(agent.backend_ids.values()),
                                               dtype=np.int64)}

    def step(self) -> None:
        epoch = manager.activity_epoch(time.monotonic_ns())
        for name, per_row in self.per_row.items():
            rows, used = self.rows[name], self.used[name]
            ncpu = rows.shape[1]
            packets = np.uint64(max(1, int(per_row / ncpu)))
            rows[used, :, 0] += packets                   # packets
            rows[used, :, 1] += packets * np.uint64(800)  # bytes
            if name == "queue_stats":
                rows[used, :, 2 + S.XDP_ACTIONS.index("tx")] += packets
            if name == "backend_stats":
                rows[used, :, 2] += np.uint64(max(1, int(packets) // 20))  # new flows
                for e in (epoch - 1, epoch):
                    rows[used, :, ACTIVE + (e & 1)] = np.uint64(100)
                    rows[used, :, ACTIVE_EPOCH + (e & 1)] = np.uint64(e)
            m = self.maps[name]
            keys = np.arange(len(rows), dtype=np.uint32)
            bpfsys.update_batch(m.fd, _ptr(keys), _ptr(np.ascontiguousarray(rows)), len(rows))


ACTIVE = S.BackendStats.active.offset // 8
ACTIVE_EPOCH = S.BackendStats.active_epoch.offset // 8


def fill_connections(agent: Agent, n: int, batch: int = 65536) -> float:
    """n connection entries, spread over the VIPs and backends as clients would leave
    them, written with batch updates: an equal share from each CPU (the table's LRU
    lists are per CPU, and a CPU's share of the entries is all its list holds).
    Returns the seconds it took."""
    assert agent.dp is not None
    fd = agent.dp.maps["conns"].fd
    vips = [(v.address, v.port, agent.vip_ids[vip_label(v.address, v.port, v.protocol)],
             [agent.backend_ids[str(b.address)] for b in v.backends])
            for v in agent.desired.vips]
    now = time.monotonic_ns()
    cpus = sorted(os.sched_getaffinity(0))
    t0 = time.perf_counter()
    try:
        for c, cpu in enumerate(cpus):
            os.sched_setaffinity(0, {cpu})
            lo, hi = n * c // len(cpus), n * (c + 1) // len(cpus)
            for start in range(lo, hi, batch):
                i = np.arange(start, min(start + batch, hi), dtype=np.uint64)
                k = np.zeros(len(i), dtype=np.dtype(S.FlowKey))
                v = np.zeros(len(i), dtype=np.dtype(S.Conn))
                which = i % np.uint64(len(vips))
                k["src"][:, 0] = (np.uint64(0x0A640000) + i // np.uint64(50000)).astype(np.uint32)
                k["sport"] = (np.uint64(10000) + i % np.uint64(50000)).astype(np.uint16)
                for j, (addr, port, vid, bids) in enumerate(vips):
                    sel = which == np.uint64(j)
                    k["dst"][sel, 0] = int(addr)
                    k["dport"][sel] = port
                    v["vip_id"][sel] = vid
                    v["backend_id"][sel] = np.array(bids, dtype=np.uint32)[
                        (i[sel] // np.uint64(len(vips))) % np.uint64(len(bids))]
                k["proto"], k["family"] = 6, S.XLB_AF_INET
                v["last_seen_ns"] = now
                bpfsys.update_batch(fd, _ptr(k), _ptr(v), len(i))
    finally:
        os.sched_setaffinity(0, set(cpus))
    return time.perf_counter() - t0


def send_to_vips(agent: Agent, flows: int = 2048) -> subprocess.Popen[bytes]:
    """A sender in the bench's namespace: TCP packets of `flows` clients to every VIP,
    into the interface the XDP program runs on, until it is stopped."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    dst = netns.mac(NS, "xlb0")
    vips = agent.desired.vips
    frames = [bytes(Ether(dst=dst) / IP(src=f"10.99.{i // 250}.{1 + i % 250}",
                                         dst=str(vips[i % len(vips)].address))
                    / TCP(sport=20000 + i, dport=vips[i % len(vips)].port, flags="A"))
              for i in range(flows)]
    return netns.send_frames(NS, "peer0", frames, 0)


def count_connections(agent: Agent) -> int:
    """Entries in the connection table (a full walk: the bench's check, never the tick's)."""
    assert agent.dp is not None
    fd = agent.dp.maps["conns"].fd
    return sum(len(keys) for keys, _ in bpfsys.hash_batches(
        fd, ctypes.sizeof(S.FlowKey), ctypes.sizeof(S.Conn), 65536))


def flush_connections(agent: Agent) -> None:
    assert agent.dp is not None
    fd = agent.dp.maps["conns"].fd
    for keys, _ in bpfsys.hash_batches(fd, ctypes.sizeof(S.FlowKey), ctypes.sizeof(S.Conn),
                                       65536):
        bpfsys.delete_batch(fd, keys)


class Parts:
    """Where a tick's time goes: the steps of Agent.tick() wrapped, wall and CPU summed
    per step (patched on this agent only, taken off at the end)."""

    STEPS = (("watch", "watch", "check"), ("health", None, "commit_health"),
             ("counters", "dp", "counters"), ("rates", "rates", "update"),
             ("cpu load", core, "cpu_load"), ("probes", "probes", "tick"),
             ("trace", "trace_source", "kernel_events"), ("snapshot", None, "_snapshot"))

    def __init__(self, agent: Agent):
        self.agent = agent
        self.took: dict[str, list[float]] = {name: [0.0, 0.0] for name, *_ in self.STEPS}
        self._undo: list[tuple[Any, str, Any]] = []

    def _owner(self, where: object) -> Any:
        return self.agent if where is None else (
            getattr(self.agent, where) if isinstance(where, str) else where)

    def __enter__(self) -> Parts:
        for name, where, attr in self.STEPS:
            owner = self._owner(where)
            inner = getattr(owner, attr)
            sums = self.took[name]

            def timed(*a: Any, _inner: Any = inner, _sums: list[float] = sums,
                      **kw: Any) -> Any:
                t, c = time.perf_counter(), time.thread_time()
                try:
                    return _inner(*a, **kw)
                finally:
                    _sums[0] += time.perf_counter() - t
                    _sums[1] += time.thread_time() - c
            setattr(owner, attr, timed)
            # an instance's own attribute goes; a module's function is put back
            self._undo.append((owner, attr, None if isinstance(where, str) or where is None
                               else inner))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attr, inner in self._undo:
            if inner is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, inner)

    def show(self, n: int, wall: list[float], cpu: list[float]) -> None:
        parts = "; ".join(f"{name} {w / n * 1000:.2f}/{c / n * 1000:.2f}"
                          for name, (w, c) in self.took.items())
        rest_w = sum(wall) - sum(w for w, _ in self.took.values())
        rest_c = sum(cpu) - sum(c for _, c in self.took.values())
        print(f"    where it goes (ms wall/CPU, mean): {parts}; "
              f"the rest {rest_w / n * 1000:.2f}/{rest_c / n * 1000:.2f}")


def ticks(agent: Agent, traffic: Traffic | None, n: int) -> tuple[list[float], list[float]]:
    """(wall, CPU) of n ticks, each after a step of traffic (None: the data plane's own
    counters, of real packets)."""
    wall, cpu = [], []
    for _ in range(n):
        if traffic is not None:
            traffic.step()
        t, c = time.perf_counter(), time.thread_time()
        agent.tick()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return wall, cpu


def measured(label: str, agent: Agent, traffic: Traffic | None, n: int
             ) -> tuple[str, list[float], list[float], Parts]:
    with Parts(agent) as parts:
        return (label, *ticks(agent, traffic, n), parts)


def median_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:6.2f} ms"


def scale(tmp: str, connections: int, n: int, profile: bool) -> None:
    vips, per_vip = 8, 125
    print(f"\nscale: {vips * per_vip} backends over {vips} VIPs, {QUEUES} queues counting "
          f"traffic on every CPU, {connections:,} connection entries; {n} ticks each")
    with in_process_agent(tmp, "sc", vips, per_vip,
                          max_connections=max(connections, 1 << 20)) as agent:
        starting = getattr(agent, "_probes_starting", None)
        if starting is not None:  # the default probes compile in the background: wait
            starting.join()
        probes = getattr(agent, "probes", None)
        if probes is not None:
            on = [name for name, st in probes.state.items() if st == "attached"]
            print(f"  probes attached (the defaults): {', '.join(on) or 'none'}")
        traffic = Traffic(agent)
        for _ in range(3):
            traffic.step()
            agent.tick()
        rows: list[tuple[str, list[float], list[float], Parts]] = []
        rows.append(measured("0 connections", agent, traffic, n))
        took = fill_connections(agent, connections)
        have = count_connections(agent)
        print(f"  {connections:,} entries inserted with batch updates in {took:.1f} s; the "
              f"table holds {have:,}")
        rows.append(measured(f"{have:,} connections", agent, traffic, n))
        flush_connections(agent)
        rows.append(measured("0 connections again", agent, traffic, n))
        fill_connections(agent, connections)
        rows.append(measured(f"{have:,} connections again", agent, traffic, n))
        v0 = agent.desired.vips[0]
        pair = (agent.vip_ids[vip_label(v0.address, v0.port, v0.protocol)],
                agent.backend_ids[str(v0.backends[0].address)])
        t, c = time.perf_counter(), time.thread_time()
        dropped = agent.dp.drop_flows({pair}) if agent.dp is not None else {}
        print(f"  moving one down backend's flows (a pass over all {have:,} entries, after a "
              f"health event only): {(time.perf_counter() - t) * 1000:.0f} ms wall, "
              f"{(time.thread_time() - c) * 1000:.0f} ms CPU, {sum(dropped.values())} dropped")
        sender = send_to_vips(agent)
        try:
            time.sleep(1.0)
            agent.tick()
            label = "packets flowing"
            rows.append(measured(label, agent, None, n))
            time.sleep(1.0)  # the rates of a whole second
            agent.tick()
            pps = agent.last["totals"]["pps"]
        finally:
            sender.terminate()
            sender.wait()
        print(f"  real packets through the XDP program meanwhile (a sender in the namespace, "
              f"as fast as it goes, sharing the CPUs): {pps:,.0f} packets/s")
        for label, wall, cpu, parts in rows:
            print(f"  tick, {label:<26} wall {median_ms(wall)} median ({max(wall) * 1000:.2f} "
                  f"max); CPU {median_ms(cpu)} median ({max(cpu) * 1000:.2f} max)")
            parts.show(n, wall, cpu)
        encoding(agent)
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            for _ in range(n):
                traffic.step()
                prof.enable()
                agent.tick()
                prof.disable()
            print(f"  profile of {n} ticks (cumulative, top 25):")
            pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(25)


def encoding(agent: Agent) -> None:
    """The last snapshot as the API sends it: its size, the agent's cost to encode it
    once per tick (json, and msgspec if installed), a reader's cost to decode it."""
    msg = {"jsonrpc": "2.0", "method": "snapshot", "params": agent.last}
    data = json.dumps(msg, allow_nan=False).encode()
    encoders: list[tuple[str, Callable[[], object]]] = [
        ("json", lambda: json.dumps(msg, allow_nan=False).encode())]
    try:
        import msgspec  # type: ignore[import-not-found,unused-ignore]

        encoders.append(("msgspec", lambda: msgspec.json.encode(msg)))
    except ImportError:
        pass
    for name, encode in (*encoders, ("json (decoding)", lambda: json.loads(data))):
        took = []
        for _ in range(30):
            t = time.perf_counter()
            encode()
            took.append(time.perf_counter() - t)
        what = name if "decoding" in name else f"encoding with {name}"
        print(f"  snapshot ({len(data):,} bytes, {len(data) / 1024:.0f} KiB) {what}: "
              f"{median_ms(took)} median")
    if len(encoders) == 1:
        print("  (msgspec is not installed: no figure for it)")


class Poller:
    """A client asking `status` every 20 ms: latencies, and what each answer said."""

    def __init__(self, sock: str):
        self.sock = sock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # (when asked, latency or None if the agent went away, backends down, VIPs in panic)
        self.samples: list[tuple[float, float | None, int, int]] = []
        self.asking: float | None = None  # since when the unanswered question waits

    def _run(self) -> None:
        while not self._stop.is_set():
            t = self.asking = time.monotonic()
            try:
                with AgentClient(self.sock, timeout=60) as c:
                    st = c.call("status")
                down = sum(1 for v in st["vips"] for b in v["backends"] if b["health"] != "up")
                panic = sum(1 for v in st["vips"] if v.get("panic"))
                self.samples.append((t, time.monotonic() - t, down, panic))
                self.asking = None
            except AgentUnavailable:
                self.samples.append((t, None, -1, 0))
                return
            time.sleep(0.02)

    def start(self) -> Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=70)


def wait(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def live(tmp: str, n: int, budget: float) -> None:
    vips = 50
    per_vip = n // vips
    total = vips * per_vip
    print(f"\nlive agent: {total} backends in {vips} VIPs, all unreachable by its TCP checks "
          "(fall 2, 1 s apart)")
    path = os.path.join(tmp, "live.toml")
    with open(path, "w") as f:
        f.write(config(tmp, "live", vips, per_vip, health="tcp"))
    sock = os.path.join(tmp, "live.sock")
    log = open(os.path.join(tmp, "live.log"), "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "xlb", "agent", "--config", path],
                            stdout=log, stderr=log, env=os.environ, cwd=REPO)
    try:
        def up() -> bool:
            try:
                with AgentClient(sock, timeout=30) as c:
                    return bool(c.call("status")["vips"])
            except AgentUnavailable:
                return False
        if not wait(up, 120):
            print("  the agent did not come up")
            return
        started = time.monotonic()
        poller = Poller(sock).start()
        all_down = wait(lambda: any(s[2] >= total for s in poller.samples), budget)
        seen = time.monotonic() - started
        time.sleep(1.0)
        lat = [s[1] for s in poller.samples if s[1] is not None]
        waiting = poller.asking
        if waiting is not None:  # the question still open counts as at least this slow
            lat.append(time.monotonic() - waiting)
        when = f"after {seen:.1f} s" if all_down else f"not within {budget:.0f} s"
        print(f"  all reported down: {when} (the checks need about 2 s); VIPs in panic: "
              f"{poller.samples[-1][3] if poller.samples else '?'}")
        print(f"  status answers: {len(poller.samples)}, median "
              f"{statistics.median(lat) * 1000:.1f} ms, slowest {max(lat) * 1000:.1f} ms"
              + (" (one still unanswered)" if waiting is not None else ""))
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
            print(f"  SIGTERM to exit: {(time.monotonic() - t) * 1000:.0f} ms")
        except subprocess.TimeoutExpired:
            print("  SIGTERM to exit: > 60 s (killed); the agent's last words:")
            with open(os.path.join(tmp, "live.log")) as f:
                print("".join(f.readlines()[-5:]))
        poller.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        if os.path.isdir(os.path.join(PIN_ROOT, "live")):
            lifecycle.unload_instance("live", remove_pins=True, pin_root=PIN_ROOT,
                                      run_root=RUN_ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", type=int, default=5000)
    ap.add_argument("--budget", type=float, default=20.0,
                    help="seconds to give an agent that handles verdicts one by one")
    ap.add_argument("--only", choices=("mass", "tick", "fanout", "live", "scale"))
    ap.add_argument("--connections", type=int, default=1_000_000, help="for scale")
    ap.add_argument("--ticks", type=int, default=30, help="for scale: ticks per figure")
    ap.add_argument("--profile", action="store_true", help="scale: cProfile the tick too")
    ap.add_argument("--subscribers", type=int, default=10, help="for fanout (default 10)")
    ap.add_argument("--lab-size", action="store_true",
                    help="tick: at the lab's size (4 VIPs x 3 backends), not 10 x 100")
    ap.add_argument("--bgp", action="store_true",
                    help="tick: with a [bgp] table (route health injection every tick)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/agent.py needs root (BPF, XDP, network namespaces)", file=sys.stderr)
        return 1
    logging.getLogger("xlb").addHandler(logging.NullHandler())
    logging.getLogger("xlb").setLevel(logging.CRITICAL)
    logging.getLogger("xlb").propagate = False
    tmp = tempfile.mkdtemp(prefix="xlb-bench-agent-", dir=ROOTS)
    os.makedirs(PIN_ROOT, exist_ok=True)
    try:
        with namespace():
            if args.only in (None, "mass"):
                mass(tmp, args.backends, args.budget)
            if args.only in (None, "tick"):
                tick(tmp, *((4, 3) if args.lab_size else (10, 100)), bgp=args.bgp)
            if args.only in (None, "fanout"):
                fanout(tmp, args.subscribers)
            if args.only in (None, "live"):
                live(tmp, args.backends, args.budget)
            if args.only in (None, "scale"):
                scale(tmp, args.connections, args.ticks, args.profile)
    finally:
        shutil.rmtree(PIN_ROOT, ignore_errors=True)
        shutil.rmtree(ROOTS, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
