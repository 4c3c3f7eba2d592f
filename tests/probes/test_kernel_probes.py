"""The probes against the real kernel with real packets, in namespaces made here: a
client namespace sends frames over a veth to a server namespace, whose kernel drops
them (closed port, bad checksum, no route), answers with resets, or runs an XDP
program that aborts. The probes are attached once for the module, from the root
namespace (tracepoints cannot be loaded under `ip netns exec`)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import NetNS
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.helpers import wait_for
from xlb.api import protocol as P
from xlb.dataplane import bpfsys, xdp
from xlb.lab import netns
from xlb.probes import kernel
from xlb.probes.manager import ProbeManager
from xlb.probes.tcp import TcpProbe

pytestmark = pytest.mark.root

PID = os.getpid()
NS_C, NS_S = f"xlbpc-{PID}", f"xlbps-{PID}"
IF_C, IF_S = "pc0", "ps0"
CLIENT, SERVER = "198.51.100.1", "198.51.100.2"
UNROUTED = "192.0.2.77"
SPORT = 20000 + PID % 20000  # the frames of this run, among the host's other drops


class Pair:
    """Two namespaces joined by a veth, with addresses, and the MACs to frame with."""

    def __init__(self) -> None:
        netns.create(NS_C)
        netns.create(NS_S)
        for ns in (NS_C, NS_S):  # no IPv6 chatter (router solicitations): only our frames
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                            "net.ipv6.conf.default.disable_ipv6=1",
                            "net.ipv6.conf.all.disable_ipv6=1"], check=True)
        netns.veth(NS_C, IF_C, NS_S, IF_S, queues=1)
        for ns, ifname, addr in ((NS_C, IF_C, CLIENT), (NS_S, IF_S, SERVER)):
            with NetNS(ns) as n:
                n.addr("add", index=n.link_lookup(ifname=ifname)[0], address=addr,
                       prefixlen=24)
        subprocess.run(["ip", "netns", "exec", NS_S, "sysctl", "-qw",
                        "net.ipv4.ip_forward=1"], check=True)
        self.mac_c, self.mac_s = netns.mac(NS_C, IF_C), netns.mac(NS_S, IF_S)

    def frame(self, l3: Any) -> bytes:
        return bytes(Ether(src=self.mac_c, dst=self.mac_s) / l3)

    def send(self, frames: list[bytes], count: int = 0) -> None:
        proc = netns.send_frames(NS_C, IF_C, frames, count or len(frames))
        assert proc.wait(timeout=60) == 0

    def close(self) -> None:
        netns.remove(NS_C)
        netns.remove(NS_S)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    p = Pair()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def probes() -> Iterator[ProbeManager]:
    m = ProbeManager()
    try:
        m.start()
        m.tick()
        yield m
    finally:
        m.close()


def ticked(m: ProbeManager, cond: Any, what: str, timeout: float = 10.0) -> Any:
    """Tick until `cond(kernel document)` holds; its value."""
    found: list[Any] = []

    def check() -> bool:
        value = cond(m.tick())
        if value:
            found.append(value)
        return bool(value)

    wait_for(check, what, timeout=timeout, every=0.2)
    return found[-1]


def example_of(m: ProbeManager, src: str, sport: int, dst: str, dport: int
               ) -> tuple[str, P.Packet]:
    """The kernel reason whose examples hold this 5-tuple, and the example."""
    def find(k: P.Kernel) -> tuple[str, P.Packet] | None:
        for d in k["drops"]:
            for e in d["examples"]:
                if (e["src"], e["sport"], e["dst"], e["dport"]) == (src, sport, dst, dport):
                    return d["reason"], e
        return None

    return ticked(m, find, f"a kernel drop of {src}:{sport} -> {dst}:{dport}")


def test_every_default_probe_attaches_or_says_why(probes: ProbeManager) -> None:
    states = {p["name"]: p for p in probes.tick()["probes"]}
    assert set(states) == set(P.PROBES)
    for p in states.values():
        assert P.conforms(p, P.Probe) == []
        assert p["state"] == "attached" or p["reason"], p
    for name in ("drops", "xdp", "napi", "softirq", "runtime"):  # tracepoints and stats
        assert states[name]["state"] == "attached", states[name]


def test_udp_to_a_closed_port_is_a_kernel_drop_with_the_kernels_name(
        probes: ProbeManager, pair: Pair) -> None:
    names, _ = kernel.drop_reasons()
    pair.send([pair.frame(IP(src=CLIENT, dst=SERVER) / UDP(sport=SPORT, dport=9) / b"x")])
    reason, example = example_of(probes, CLIENT, SPORT, SERVER, 9)
    assert reason == "NO_SOCKET" and reason in names.values()
    assert example["protocol"] == "udp" and abs(example["time"] - time.time()) < 30
    drop = next(d for d in probes.last["drops"] if d["reason"] == "NO_SOCKET")
    assert drop["code"] == next(c for c, n in names.items() if n == "NO_SOCKET")
    assert drop["total"] >= 1


def test_a_bad_ip_checksum_is_its_own_reason(probes: ProbeManager, pair: Pair) -> None:
    bad = pair.frame(IP(src=CLIENT, dst=SERVER, chksum=0x1234) / UDP(sport=SPORT + 1, dport=53))
    pair.send([bad])
    reason, _ = example_of(probes, CLIENT, SPORT + 1, SERVER, 53)
    assert reason == "IP_CSUM"


def test_a_packet_to_an_unrouted_address_is_its_own_reason(
        probes: ProbeManager, pair: Pair) -> None:
    pair.send([pair.frame(IP(src=CLIENT, dst=UNROUTED) / UDP(sport=SPORT + 2, dport=53))])
    reason, _ = example_of(probes, CLIENT, SPORT + 2, UNROUTED, 53)
    assert reason == "IP_INNOROUTES"


def test_an_ipv6_drop_has_its_ipv6_example(probes: ProbeManager, pair: Pair) -> None:
    """The namespaces here have IPv6 turned off: the kernel drops an IPv6 packet for it,
    and the example is that packet's IPv6 5-tuple."""
    src, dst = "2001:db8::1", "2001:db8::2"
    pair.send([pair.frame(IPv6(src=src, dst=dst) / UDP(sport=SPORT + 5, dport=9) / b"x")])
    reason, example = example_of(probes, src, SPORT + 5, dst, 9)
    assert reason == "IPV6DISABLED" and example["protocol"] == "udp"


def test_a_drop_right_after_a_flood_of_its_reason_is_still_an_example(
        probes: ProbeManager, pair: Pair) -> None:
    """A flood takes only a few examples per jiffy (they cost): the packet after it,
    on its own, is an example all the same."""
    flood = [pair.frame(IP(src=CLIENT, dst=SERVER) / UDP(sport=SPORT + 6, dport=1000 + i))
             for i in range(500)]
    pair.send(flood)
    time.sleep(0.05)  # the next jiffy
    pair.send([pair.frame(IP(src=CLIENT, dst=SERVER) / UDP(sport=SPORT + 7, dport=9))])
    reason, _ = example_of(probes, CLIENT, SPORT + 7, SERVER, 9)
    assert reason == "NO_SOCKET"
    drop = next(d for d in probes.last["drops"] if d["reason"] == "NO_SOCKET")
    assert drop["total"] >= 501 and len(drop["examples"]) <= 8


def test_drops_from_or_to_watched_addresses_are_the_lbs(probes: ProbeManager,
                                                         pair: Pair) -> None:
    probes.watch({SERVER})
    try:
        pair.send([pair.frame(IP(src=CLIENT, dst=SERVER) / UDP(sport=SPORT + 3, dport=9))] * 3)
        example_of(probes, CLIENT, SPORT + 3, SERVER, 9)

        def attributed(k: P.Kernel) -> P.KernelDrop | None:
            d = next((d for d in k["drops"] if d["reason"] == "NO_SOCKET"), None)
            return d if d and d["addresses"].get(SERVER, 0) >= 3 else None

        d = ticked(probes, attributed, "3 drops to the watched address")
        assert d["lb_total"] >= 3 and set(d["addresses"]) == {SERVER}
    finally:
        probes.watch(set())


def load_xdp(action: str) -> Any:
    from bcc import BPF

    b = BPF(text=f"int run(struct xdp_md *ctx) {{ return {action}; }}".encode())
    return b, b.load_func(b"run", BPF.XDP)


def test_xdp_aborted_is_counted_with_interface_and_action(probes: ProbeManager,
                                                          pair: Pair) -> None:
    b, fn = load_xdp("XDP_ABORTED")
    prog_id = int(bpfsys.prog_info(fn.fd).id)
    xdp.attach(IF_S, fn.fd, "native", netns=NS_S)
    try:
        frame = pair.frame(IP(src=CLIENT, dst=SERVER) / UDP(sport=SPORT + 4, dport=9))
        pair.send([frame], count=50)

        def aborted(k: P.Kernel) -> P.XdpError | None:
            return next((e for e in k["xdp_errors"] if e["prog_id"] == prog_id
                         and e["total"] >= 50 and "@" in e["interface"]), None)

        e = ticked(probes, aborted, "50 XDP_ABORTED of our program, interface found")
        assert (e["kind"], e["action"], e["interface"], e["program"]) == (
            "exception", "ABORTED", f"{IF_S}@{NS_S}", "run")
        assert e["total"] == 50
    finally:
        xdp.detach(IF_S, NS_S)
        b.cleanup()


def test_napi_and_softirq_count_under_traffic_and_rest_when_idle(
        probes: ProbeManager, pair: Pair) -> None:
    b, fn = load_xdp("XDP_PASS")  # veth polls its own NAPI while an XDP program runs
    xdp.attach(IF_S, fn.fd, "native", netns=NS_S)
    try:
        frame = pair.frame(IP(src=CLIENT, dst=SERVER) / UDP(sport=SPORT + 5, dport=9))
        sender = netns.send_frames(NS_C, IF_C, [frame], 0)
        try:
            def busy(k: P.Kernel) -> list[P.NapiQueue]:
                ours = [q for q in k["napi"] if q["device"] == IF_S]
                polled = any(q["polls_per_s"] > 0 and q["packets_per_poll"] > 0 for q in ours)
                softirq = any(c["percent"] > 0 and c["runs_per_s"] > 0 for c in k["softirq"])
                return ours if polled and softirq else []

            ours = ticked(probes, busy, "NAPI polls on ps0 and NET_RX softirq time")
            assert all(0 <= q["budget_exhausted"] <= 1 and q["polls"] > 0 for q in ours)
            assert all(q["napi_id"] > 0 for q in ours), "veth's NAPI has an id (from BTF)"
        finally:
            sender.terminate()
            sender.wait()

        def idle(k: P.Kernel) -> bool:
            ours = [q for q in k["napi"] if q["device"] == IF_S]
            return bool(ours) and all(q["polls_per_s"] == 0 for q in ours)

        ticked(probes, idle, "no NAPI polls on ps0 once the traffic stopped")
    finally:
        xdp.detach(IF_S, NS_S)
        b.cleanup()


def test_tcp_resets_use_the_tracepoint_here_and_say_why(probes: ProbeManager,
                                                        pair: Pair) -> None:
    ok, why = kernel.has_kprobes()
    if ok:
        pytest.skip("this kernel has kprobes: test_the_kprobe_path covers it")
    p = next(p for p in probes.tick()["probes"] if p["name"] == "tcp")
    assert (p["state"], p["kind"]) == ("attached", "tracepoint")
    assert p["reason"] == ("kprobe tcp_v4_send_reset unavailable: this kernel has no kprobes "
                           "(no kprobe_events in tracefs); using tracepoint tcp:tcp_send_reset")
    syn = pair.frame(IP(src=CLIENT, dst=SERVER) / TCP(sport=SPORT + 6, dport=9, flags="S"))
    pair.send([syn])

    def reset(k: P.Kernel) -> P.Packet | None:
        return next((e for e in k["tcp_examples"]
                     if {e["sport"], e["dport"]} == {SPORT + 6, 9}), None)

    e = ticked(probes, reset, "the server's reset to our SYN")
    assert {e["src"], e["dst"]} == {CLIENT, SERVER} and e["protocol"] == "tcp"
    resets = [t for t in probes.last["tcp"] if t["kind"] == "reset"]
    assert any(t["reason"] == "NO_SOCKET" and t["total"] >= 1 for t in resets), resets


def test_the_kprobe_path(pair: Pair) -> None:
    ok, why = kernel.has_kprobes()
    if not ok:
        pytest.skip(f"no kprobes here: {why}")
    m = ProbeManager(probes={"tcp": TcpProbe()})
    m.attach("tcp")
    try:
        assert m.probes["tcp"].kind == "kprobe" and m.reason["tcp"] == ""
        pair.send([pair.frame(IP(src=CLIENT, dst=SERVER) /
                              TCP(sport=SPORT + 7, dport=9, flags="S"))])
        ticked(m, lambda k: any(t["kind"] == "reset" and t["total"] for t in k["tcp"]),
               "a reset counted by the kprobe")
    finally:
        m.close()
