"""What the probes cost (figures, not a test).

Usage: sudo .venv/bin/python bench/probes.py [--seconds 5] [--rounds 6]

Runs as root in two private network namespaces joined by a veth (removed at the end),
with a native XDP_PASS program on the server's side (so its NAPI is a queue of its
own). Two parts:

* **per event**: every default probe attached, UDP frames to a closed port (each one
  a kernel drop) and TCP connections flowing; shown per probe as the kernel reports it
  (BPF run-time statistics): events per second, ns per event, % of a CPU.
* **connection rate**: TCP connections per second (connect, accept, close by reset; a
  Python client in one namespace, a server in the other) with every probe off and on,
  alternating for --rounds rounds; shown: the rates and the on/off ratio, in one run.
  On a small shared VM the run-to-run noise (~10 %) can exceed the probes' cost: the
  kernel's own figures above are the steadier measure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from pyroute2 import NetNS
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from xlb.dataplane import xdp
from xlb.lab import netns
from xlb.probes.manager import ProbeManager

PID = os.getpid()
NS_C, NS_S = f"xlbbc-{PID}", f"xlbbs-{PID}"
CLIENT, SERVER, PORT = "198.51.100.1", "198.51.100.2", 8080
RATE = 10000  # UDP frames per second to a closed port: each one a kernel drop

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


def connection_rate(seconds: float) -> float:
    out = subprocess.run(["ip", "netns", "exec", NS_C, sys.executable, "-c", CLIENT_CODE,
                          SERVER, str(PORT), str(seconds)], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip())


def per_event(m: ProbeManager, seconds: float) -> None:
    mac_c, mac_s = netns.mac(NS_C, "bc0"), netns.mac(NS_S, "bs0")
    frame = bytes(Ether(src=mac_c, dst=mac_s) / IP(src=CLIENT, dst=SERVER)
                  / UDP(sport=4000, dport=9) / b"x")
    sender = netns.send_frames(NS_C, "bc0", [frame], 0, rate=RATE)
    conns = subprocess.Popen(["ip", "netns", "exec", NS_C, sys.executable, "-c", CLIENT_CODE,
                              SERVER, str(PORT), str(seconds + 1)], stdout=subprocess.DEVNULL)
    try:
        m.tick()
        time.sleep(seconds)
        k = m.tick()
    finally:
        sender.terminate()
        sender.wait()
        conns.wait()
    print(f"per event, under {seconds:g} s of traffic ({RATE / 1000:g} kpps of UDP drops + "
          "TCP connections closed by reset), as the kernel reports it:")
    print(f"  {'probe':<8} {'kind':<11} {'events/s':>10} {'ns/event':>9} {'% CPU':>7}")
    for p in k["probes"]:
        ns = f"{p['ns_per_run']:.0f}" if p["ns_per_run"] is not None else "-"
        cpu = f"{p['cpu_percent']:.3f}" if p["cpu_percent"] is not None else "-"
        print(f"  {p['name']:<8} {p['kind']:<11} {p['events_per_s']:>10.0f} {ns:>9} {cpu:>7}"
              + ("" if p["state"] == "attached" else f"  ({p['state']}: {p['reason']})"))
    total = sum(p["cpu_percent"] or 0 for p in k["probes"])
    print(f"  all probes together: {total:.3f} % of one CPU")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    b, server = setup()
    m = ProbeManager()
    try:
        m.start()
        per_event(m, args.seconds)
        off: list[float] = []
        on: list[float] = []
        for i in range(args.rounds):  # off then on, then on then off: drift cancels out
            for probes_on in (False, True) if i % 2 == 0 else (True, False):
                for name in m.probes:
                    if probes_on:
                        m.try_attach(name)
                    else:
                        m.detach(name, "bench: off")
                (on if probes_on else off).append(connection_rate(args.seconds))
        print(f"connection rate (veth, Python client, {args.seconds:g} s per run, "
              f"{args.rounds} rounds, off/on alternating):")
        print(f"  probes off: {', '.join(f'{x:.0f}' for x in off)} conn/s")
        print(f"  probes on:  {', '.join(f'{x:.0f}' for x in on)} conn/s")
        ratios = [a / b for a, b in zip(on, off, strict=True)]
        ratio = statistics.median(on) / statistics.median(off)
        print(f"  on/off ratio: {ratio:.3f} (medians; per round {min(ratios):.3f}.."
              f"{max(ratios):.3f})")
    finally:
        m.close()
        server.terminate()
        server.wait()
        for ns in (NS_C, NS_S):
            netns.remove(ns)
        b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
