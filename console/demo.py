"""`xlb demo`: the data plane on a veth pair, with real frames and live counters.

A namespace `xlb-demo` holds a 4-queue veth pair: the load balancer's XDP
program on `xlb0`, a traffic sender on `client0` (UDP and TCP SYNs from 256
client flows to two VIPs on three weighted backends). Every second it prints
per-queue pps, per-backend pps against the Maglev share, and the verdicts.
Everything it made is removed on exit (Ctrl-C, SIGTERM or --duration).
"""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType

from console.dataplane import lifecycle
from console.dataplane import structs as S
from console.dataplane.config import parse_config
from console.dataplane.manager import Counters, Dataplane
from console.lab import netns

NS = "xlb-demo"
INSTANCE = "demo"
BACKENDS = [("10.0.1.1", 3), ("10.0.1.2", 2), ("10.0.1.3", 1)]
CONFIG = {
    "instance": {"name": INSTANCE, "interface": "xlb0", "netns": NS, "max_vips": 4,
                 "max_backends": 16, "max_connections": 65536},
    "vip": [
        {"name": "dns", "address": "10.100.0.10", "port": 53, "protocol": "udp",
         "backend": [{"address": a, "weight": w} for a, w in BACKENDS]},
        {"name": "web", "address": "10.100.0.10", "port": 80, "protocol": "tcp",
         "backend": [{"address": a, "weight": w} for a, w in BACKENDS]},
    ],
}


def _frames(src_mac: str, dst_mac: str) -> list[bytes]:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    out = []
    for i in range(256):
        ip = IP(src=f"198.51.100.{i % 250 + 1}", dst="10.100.0.10")
        l4 = (UDP(sport=20000 + i, dport=53) / Raw(b"q" * 32) if i % 2
              else TCP(sport=20000 + i, dport=80, flags="S"))
        out.append(bytes(Ether(src=src_mac, dst=dst_mac) / ip / l4))
    return out


def _report(dp: Dataplane, prev: Counters, now: Counters, ids: dict[int, str]) -> str:
    dt = max(now.at - prev.at, 1e-6)
    q = (now.queues[:, 0] - prev.queues[:, 0]) / dt
    b = (now.backends[:, 0] - prev.backends[:, 0]) / dt
    total_b = max(b.sum(), 1e-9)
    lines = [time.strftime("%H:%M:%S") + f"  total {q.sum():8.0f} pps   "
             + "  ".join(f"q{i} {q[i]:6.0f}" for i in range(4))]
    weight_sum = sum(w for _, w in BACKENDS)
    for bid, addr in sorted(ids.items()):
        weight = dict(BACKENDS)[addr]
        lines.append(f"    backend {addr:<10} {b[bid]:8.0f} pps  observed {b[bid] / total_b:6.1%}"
                     f"  Maglev share {weight / weight_sum:6.1%}")
    r = now.reasons[:, 0] - prev.reasons[:, 0]
    lines.append("    verdicts/s: " + ", ".join(
        f"{x.label} {r[x] / dt:.0f}" for x in S.Reason if r[x]))
    return "\n".join(lines)


def run_demo(duration: float = 0.0, mode: str = "native", rate: float = 20000.0) -> int:
    lifecycle.require_root("xlb demo")
    stop = {"now": False}

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sender = None
    print(f"building namespace {NS} with a 4-queue veth pair xlb0 <-> client0 ...", flush=True)
    try:
        netns.remove(NS)
        netns.create(NS)
        netns.veth(NS, "xlb0", NS, "client0", queues=4)
        doc = lifecycle.load_instance(parse_config(CONFIG), mode=mode)
        print(f"data plane {'adopted' if doc['adopted'] else 'loaded'}: {doc['mode']} XDP on "
              f"xlb0 (prog {doc['prog_id']}); VIPs dns 10.100.0.10:53/udp, "
              "web 10.100.0.10:80/tcp; backends weighted 3:2:1", flush=True)
        frames = _frames(netns.mac(NS, "client0"), netns.mac(NS, "xlb0"))
        sender = netns.send_frames(NS, "client0", frames, count=0, rate=rate)
        print(f"sending {len(frames)} client flows at up to {rate:.0f} pps; Ctrl-C to stop\n",
              flush=True)
        started = time.monotonic()
        with Dataplane(INSTANCE) as dp:
            ids = {i: str(S.unpack_addr(b.addr, b.family))
                   for i, b in dp.backend_entries().items()}
            prev = dp.counters()
            while not stop["now"] and (duration <= 0 or time.monotonic() - started < duration):
                time.sleep(1.0)
                now = dp.counters()
                print(_report(dp, prev, now, ids), flush=True)
                prev = now
                if sender.poll() is not None and not stop["now"]:  # Ctrl-C reaches it too
                    print(f"traffic sender exited ({sender.returncode})", file=sys.stderr)
                    return 1
    finally:
        if sender is not None and sender.poll() is None:
            sender.terminate()
            sender.wait(timeout=10)
        try:
            lifecycle.unload_instance(INSTANCE, remove_pins=True)
        except FileNotFoundError:
            pass
        netns.remove(NS)
        print("demo stopped: XDP detached, maps unpinned, namespace removed", flush=True)
    return 0
