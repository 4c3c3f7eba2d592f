"""What the probes cost (figures, not a test).

Usage: sudo .venv/bin/python bench/probes.py [--part event|lab|all] [--seconds 8]
       [--rounds 6] [--generators 2]

Two parts, both as root:

* **event** (two private network namespaces joined by a veth, removed at the end; a
  native XDP_PASS program on the server's side, so its NAPI is a queue of its own):
  every default probe attached, UDP frames to a closed port (each one a kernel drop) and
  TCP connections flowing; shown per probe as the kernel reports it (BPF run-time
  statistics): events per second, ns per event, % of a CPU.
* **lab** (`xlb lab up`; the lab is one per machine, so this part holds
  /tmp/xlb-lab.lock while the lab is up, or uses the caller's `flock` of it): the lab's
  maximum connection rate (--generators copies of the lab's traffic generator, no rate
  limit, through lb1) with lb1's agent's default probes off and on, alternating
  off/on, on/off, ... for --rounds pairs. Shown: each pair's on/off ratio of connections
  per second and of the LB's packets per second, their median and spread; then, from
  the kernel's run-time statistics during the "on" rounds, what the probes cost: ns per
  event and events/s per probe, ns per LB packet, and their share of all the CPU time
  the host spent carrying that traffic (at the maximum rate the CPUs are what limits
  the throughput, so that share is the throughput the probes take). Last, the agent's
  tick at the lab's size with every probe on (bench/agent.py --only tick --lab-size),
  under the same traffic.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import NetNS
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlb.api.client import AgentClient  # noqa: E402
from xlb.dataplane import bpfsys, xdp  # noqa: E402
from xlb.lab import netns, run, topology  # noqa: E402
from xlb.probes.manager import ProbeManager  # noqa: E402
from xlb.probes.settings import ProbeSettings  # noqa: E402

PID = os.getpid()
NS_C, NS_S = f"xlbbc-{PID}", f"xlbbs-{PID}"
CLIENT, SERVER, PORT = "198.51.100.1", "198.51.100.2", 8080
RATE = 10000  # UDP frames per second to a closed port: each one a kernel drop
LAB_LOCK = "/tmp/xlb-lab.lock"
TICK_RATE = 200  # lab connections/s while the tick is measured
REPO = Path(__file__).resolve().parent.parent

SERVER_CODE = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4096)
while True:
    c, _ = s.accept()
    c.close()
"""

CLIENT_CODE = """
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    c = socket.create_connection((host, port))
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
    c.close()
    n += 1
print(n / seconds)
"""


# -- per event, on a private veth ---------------------------------------------------------
def setup() -> tuple[Any, subprocess.Popen[bytes]]:
    for ns in (NS_C, NS_S):
        netns.create(ns)
    netns.veth(NS_C, "bc0", NS_S, "bs0", queues=1)
    for ns, ifname, addr in ((NS_C, "bc0", CLIENT), (NS_S, "bs0", SERVER)):
        with NetNS(ns) as n:
            n.addr("add", index=n.link_lookup(ifname=ifname)[0], address=addr, prefixlen=24)
    from bcc import BPF

    b = BPF(text=b"int run(struct xdp_md *ctx) { return XDP_PASS; }")
    fn = b.load_func(b"run", BPF.XDP)
    xdp.attach("bs0", fn.fd, "native", netns=NS_S)
    server = subprocess.Popen(["ip", "netns", "exec", NS_S, sys.executable, "-c",
                               SERVER_CODE, SERVER, str(PORT)])
    time.sleep(0.5)
    return b, server


def per_event(seconds: float) -> None:
    b, server = setup()
    m = ProbeManager()
    try:
        m.start()
        mac_c, mac_s = netns.mac(NS_C, "bc0"), netns.mac(NS_S, "bs0")
        frame = bytes(Ether(src=mac_c, dst=mac_s) / IP(src=CLIENT, dst=SERVER)
                      / UDP(sport=4000, dport=9) / b"x")
        sender = netns.send_frames(NS_C, "bc0", [frame], 0, rate=RATE)
        conns = subprocess.Popen(["ip", "netns", "exec", NS_C, sys.executable, "-c",
                                  CLIENT_CODE, SERVER, str(PORT), str(seconds + 1)],
                                 stdout=subprocess.DEVNULL)
        try:
            m.tick()
            time.sleep(seconds)
            k = m.tick()
        finally:
            sender.terminate()
            sender.wait()
            conns.wait()
        print(f"per event, under {seconds:g} s of traffic on a private veth "
              f"({RATE / 1000:g} kpps of UDP drops + TCP connections closed by reset), as the "
              "kernel reports it:")
        print(f"  {'probe':<8} {'kind':<15} {'events/s':>10} {'ns/event':>9} {'% CPU':>7}")
        for p in k["probes"]:
            ns = f"{p['ns_per_run']:.0f}" if p["ns_per_run"] is not None else "-"
            cpu = f"{p['cpu_percent']:.3f}" if p["cpu_percent"] is not None else "-"
            print(f"  {p['name']:<8} {p['kind']:<15} {p['events_per_s']:>10.0f} {ns:>9} "
                  f"{cpu:>7}" + ("" if p["state"] == "attached"
                                 else f"  ({p['state']}: {p['reason']})"))
        total = sum(p["cpu_percent"] or 0 for p in k["probes"])
        print(f"  all probes together: {total:.3f} % of one CPU")
    finally:
        m.close()
        server.terminate()
        server.wait()
        for ns in (NS_C, NS_S):
            netns.remove(ns)
        b.cleanup()


# -- the lab --------------------------------------------------------------------------------
@contextlib.contextmanager
def lab_lock() -> Iterator[None]:
    """Hold the lab's lock while the lab is up. Under `flock /tmp/xlb-lab.lock ...` this
    process inherited the locked file: locking that same open file again is at once."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == LAB_LOCK:
                fcntl.flock(int(fd), fcntl.LOCK_EX)
                yield
                return
    with open(LAB_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LAB_LOCK} (someone else is using the lab) ...", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v)


PF_KTHREAD = 0x00200000


def foreign_jiffies(lab_nets: set[int], lab_pids: set[int]) -> dict[int, int]:
    """CPU jiffies used so far by each of the host's processes that are not the lab's:
    not in a lab namespace, not lb1's agent, not kernel threads (those carry the lab's
    packets). On a shared machine other people's work is busy time the lab did not get."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in lab_pids:
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            v = st[st.rindex(")") + 2:].split()
            if int(v[6]) & PF_KTHREAD or os.stat(f"/proc/{d}/ns/net").st_ino in lab_nets:
                continue
        except (OSError, ValueError):
            continue  # gone meanwhile
        out[int(d)] = int(v[11]) + int(v[12])
    return out


def foreign_used(before: dict[int, int], after: dict[int, int]) -> int:
    """Jiffies the foreign processes used in between (one that ended meanwhile: unknown,
    left out; one that started: all of its time)."""
    return sum(t - before.get(pid, 0) for pid, t in after.items())


def lb_rx_packets() -> int:
    """Packets lb1's interface received: each one a run of its XDP program."""
    with NetNS(topology.PREFIX + "lb1") as n:
        return int(n.get_links(ifname="l0")[0].get_attr("IFLA_STATS64")["rx_packets"])


def run_stats(ids: dict[int, str]) -> dict[int, tuple[int, int]]:
    """(run_time_ns, run_cnt) of these programs, from the kernel."""
    out = {}
    for pid in ids:
        info = bpfsys.prog_info_by_id(pid)
        if info is not None:
            out[pid] = (int(info.run_time_ns), int(info.run_cnt))
    return out


@dataclass
class Round:
    on: bool
    conns: float = 0.0        # connections per second, all generators
    failed: int = 0
    pps: float = 0.0          # packets per second through lb1's XDP program
    busy: float = 0.0         # host CPU busy, CPU-seconds per second
    lab_busy: float = 0.0     # of which the lab's (busy minus other processes)
    load: float = 0.0         # busy share of all CPUs
    seconds: float = 0.0      # the measured window
    runs: dict[str, tuple[int, int]] = field(default_factory=dict)  # owner: (ns, runs)


class LabBench:
    def __init__(self, doc: dict[str, Any], generators: int, seconds: float):
        self.sock = doc["lbs"][0]["socket"]
        self.generators, self.seconds = generators, seconds
        self.defaults: list[str] = []
        self.lab_nets = {os.stat(f"/run/netns/{ns}").st_ino for ns in doc["namespaces"]}
        self.lab_pids = {doc["lbs"][0]["pid"]}

    def probes(self) -> dict[str, str]:
        with AgentClient(self.sock, timeout=60) as c:
            return {p["name"]: p["state"] for p in c.call("probes")}

    def wait_started(self, timeout: float = 240.0) -> None:
        """Until the agent has attached (or found unavailable) every probe its settings
        (the defaults: the lab sets none) turn on; the attached ones are "the defaults"."""
        wanted = [n for n, w in ProbeSettings().wanted.items() if w in ("on", "auto")]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with AgentClient(self.sock, timeout=60) as c:
                ps = {p["name"]: p for p in c.call("probes")}
            if all(ps[n]["state"] != "off" for n in wanted):
                self.defaults = [n for n in wanted if ps[n]["state"] == "attached"]
                missing = [f"{n} ({ps[n]['reason']})" for n in wanted
                           if ps[n]["state"] != "attached"]
                print(f"lb1's agent attached its default probes: {', '.join(self.defaults)}"
                      + (f"; unavailable: {', '.join(missing)}" if missing else ""))
                return
            time.sleep(1.0)
        raise SystemExit("lb1's agent did not finish attaching its probes")

    def switch(self, on: bool) -> None:
        with AgentClient(self.sock, timeout=120) as c:
            for name in self.defaults:
                c.call("probe_attach" if on else "probe_detach", name=name)
        if on:  # the next snapshot names the new programs' owners
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not self._owned():
                time.sleep(0.3)
        time.sleep(1.0)  # settle (an attach compiles with clang)

    def _owned(self) -> bool:
        with AgentClient(self.sock, timeout=60) as c:
            owners = {p["owner"] for p in c.call("status")["kernel"]["programs"]}
        return {f"probe {n}" for n in self.defaults if n != "runtime"} <= owners

    def owners(self) -> dict[int, str]:
        with AgentClient(self.sock, timeout=60) as c:
            return {p["id"]: p["owner"] for p in c.call("status")["kernel"]["programs"]
                    if p["owner"]}

    def traffic(self, seconds: float, rate: float = 1e6, generators: int = 0
                ) -> list[subprocess.Popen[bytes]]:
        """The lab's traffic generators (no UDP: TCP connections as fast as they go)."""
        return [run.traffic(["--rate", str(rate), "--concurrency", "32", "--duration",
                             str(seconds), "--udp-every", "0", "--json"], quiet=True)
                for _ in range(generators or self.generators)]

    def round(self, on: bool) -> Round:
        r = Round(on)
        ids = self.owners() if on else {}
        gens = self.traffic(self.seconds)
        time.sleep(1.0)  # the generators start up
        t0, rx0, cpu0, st0 = time.monotonic(), lb_rx_packets(), cpu_jiffies(), run_stats(ids)
        f0 = foreign_jiffies(self.lab_nets, self.lab_pids)
        time.sleep(self.seconds - 2.0)
        t1, rx1, cpu1, st1 = time.monotonic(), lb_rx_packets(), cpu_jiffies(), run_stats(ids)
        f1 = foreign_jiffies(self.lab_nets, self.lab_pids)
        for g in gens:
            out = json.loads(g.communicate(timeout=self.seconds + 60)[0].decode()
                             .splitlines()[-1])
            r.conns += out["connections_per_second"]
            r.failed += out["tcp_failed"]
        r.seconds = t1 - t0
        r.pps = (rx1 - rx0) / r.seconds
        hz = os.sysconf("SC_CLK_TCK")
        r.busy = (cpu1[0] - cpu0[0]) / hz / r.seconds
        r.lab_busy = max(0, cpu1[0] - cpu0[0] - foreign_used(f0, f1)) / hz / r.seconds
        r.load = (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1])
        for pid, (ns1, n1) in st1.items():
            if pid in st0:
                ns, n = r.runs.get(ids[pid], (0, 0))
                r.runs[ids[pid]] = (ns + ns1 - st0[pid][0], n + n1 - st0[pid][1])
        return r


def spread(xs: list[float]) -> str:
    """Median, quartiles, range; and the geometric mean with its standard error (is a
    difference from 1 more than the noise?)."""
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    logs = [math.log(x) for x in xs]
    se = statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) >= 2 else 0.0
    mean = statistics.fmean(logs)
    return (f"median {statistics.median(xs):.3f}, quartiles {q[0]:.3f}..{q[2]:.3f}, "
            f"range {min(xs):.3f}..{max(xs):.3f}; geometric mean {math.exp(mean):.3f} "
            f"(one standard error: {math.exp(mean - se):.3f}..{math.exp(mean + se):.3f})")


def lab(seconds: float, rounds: int, generators: int) -> None:
    with lab_lock():
        print("\nlab: bringing it up (lb1's agent attaches its default probes) ...", flush=True)
        doc = run.up()
        try:
            bench = LabBench(doc, generators, seconds)
            bench.wait_started()
            done: list[Round] = []
            for i in range(rounds):  # off/on, then on/off: a drift cancels out
                for on in (False, True) if i % 2 == 0 else (True, False):
                    bench.switch(on)
                    done.append(bench.round(on))
                    r = done[-1]
                    print(f"  round {len(done):2} probes {'on ' if on else 'off'}: "
                          f"{r.conns:7.0f} conn/s ({r.failed} failed), {r.pps:8.0f} LB pps, "
                          f"CPUs {r.load:.0%} busy ({r.lab_busy:.2f} CPUs the lab's)",
                          flush=True)
            report(done, seconds, generators, len(bench.defaults))
            print(f"\nthe agent's tick at the lab's size, every probe on, under lab traffic "
                  f"at {TICK_RATE} connections/s (at the maximum rate the CPUs are saturated "
                  "and a tick's wall time is the scheduler's):", flush=True)
            gens = bench.traffic(600, rate=TICK_RATE, generators=1)
            try:
                subprocess.run([sys.executable, str(REPO / "bench" / "agent.py"), "--only",
                                "tick", "--lab-size"], check=False)
            finally:
                for g in gens:
                    g.terminate()
                    g.communicate(timeout=60)
        finally:
            run.down()


def report(done: list[Round], seconds: float, generators: int, n: int) -> None:
    off = [r for r in done if not r.on]
    on = [r for r in done if r.on]
    pairs = list(zip(done[0::2], done[1::2], strict=True))
    conn = [(b.conns / a.conns if b.on else a.conns / b.conns) for a, b in pairs]
    pps = [(b.pps / a.pps if b.on else a.pps / b.pps) for a, b in pairs]
    print(f"\nlab's maximum connection rate ({generators} traffic generators, no rate limit, "
          f"{seconds:g} s per round, {len(pairs)} off/on pairs):")
    print(f"  probes off: {statistics.median(r.conns for r in off):.0f} conn/s, "
          f"{statistics.median(r.pps for r in off):.0f} LB pps (medians)")
    print(f"  probes on:  {statistics.median(r.conns for r in on):.0f} conn/s, "
          f"{statistics.median(r.pps for r in on):.0f} LB pps (medians)")
    print(f"  on/off, connections/s, per pair: {spread(conn)}")
    print(f"  on/off, LB packets/s, per pair:  {spread(pps)}")
    # the kernel's run-time statistics of the "on" rounds
    total: dict[str, tuple[int, int]] = {}
    secs = sum(r.seconds for r in on)
    for r in on:
        for owner, (ns, runs) in r.runs.items():
            a, b = total.get(owner, (0, 0))
            total[owner] = (a + ns, b + runs)
    xlb_ns, xlb_runs = total.pop("xlb", (0, 0))
    print(f"\nwhat the {n} default probes cost in the 'on' rounds (kernel run-time "
          "statistics):")
    print(f"  {'program':<14} {'events/s':>10} {'ns/event':>9} {'ns per LB packet':>17}")
    for owner, (ns, runs) in sorted(total.items()):
        print(f"  {owner:<14} {runs / secs:>10.0f} {ns / max(runs, 1):>9.0f} "
              f"{ns / max(xlb_runs, 1):>17.1f}")
    probe_ns = sum(ns for ns, _ in total.values())
    busy_ns = sum(r.busy * r.seconds for r in on) * 1e9
    lab_ns = sum(r.lab_busy * r.seconds for r in on) * 1e9
    print(f"  {'xlb (XDP)':<14} {xlb_runs / secs:>10.0f} {xlb_ns / max(xlb_runs, 1):>9.0f}"
          f"  (the LB's own program: its packets)")
    print(f"  all probes: {probe_ns / max(xlb_runs, 1):.0f} ns per LB packet, "
          f"{probe_ns / secs / 1e7:.2f} % of one CPU")
    print(f"  = {probe_ns / lab_ns:.2%} of the CPU time the lab spent carrying the traffic "
          f"({probe_ns / busy_ns:.2%} of all the host's busy time): at the maximum rate the "
          "CPUs limit the throughput, so this is the share of the LB's packet throughput "
          "the probes take (target < 3 %)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("event", "lab", "all"), default="all")
    ap.add_argument("--seconds", type=float, default=8.0, help="per round (default 8)")
    ap.add_argument("--rounds", type=int, default=6, help="off/on pairs (default 6)")
    ap.add_argument("--generators", type=int, default=2,
                    help="traffic generators in the lab (default 2: one per core here)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/probes.py needs root (BPF, namespaces, the lab)", file=sys.stderr)
        return 1
    if args.part in ("event", "all"):
        per_event(args.seconds)
    if args.part in ("lab", "all"):
        lab(args.seconds, args.rounds, args.generators)
    return 0


if __name__ == "__main__":
    sys.exit(main())
