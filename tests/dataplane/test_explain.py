"""`explain` agrees with the data plane itself (BPF_PROG_TEST_RUN), flow by flow.

Over 10,000 random flows (IPv4 and IPv6 clients, TCP and UDP, SYN or not, new and
established, some too big for the mtu, some to no VIP or no service), in phases that drain
backends, change weights, remove and add backends, empty and remove VIPs, and hold the
per-CPU new-entry limit at chosen states: for each flow, explain() is asked first, from the
pinned maps, then the packet is run through the program, and the two must agree on the
verdict, the reason counted, the backend (the outer destination of the encapsulated
output), the outer source, the connection entry left behind, and, from the program's
trace event of the packet, the path (how the backend was chosen), the backend chosen and
the flow hash. 100 %, or the test names the first flow that differs.
"""

from __future__ import annotations

import ctypes
import ipaddress
import random
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scapy.layers.inet6 import IPv6

from tests.helpers import DataplaneUnderTest, dataplane_under_test, eth
from tests.helpers import one_cpu as pinned_to_one_cpu
from xlb.api import protocol as P
from xlb.dataplane import bpfsys
from xlb.dataplane import structs as S
from xlb.dataplane.explain import CLOCK_MONOTONIC_COARSE, explain, flow_hash
from xlb.dataplane.trace import TraceReader, filter_config
from xlb.errors import InvalidParams

ACTIONS = {"DROP": 1, "PASS": 2, "TX": 3}
FLOWS_PER_PHASE = 1500
PHASES = 8


def vip(name: str, address: str, port: int, protocol: str,
        *backends: str | tuple[str, int, str]) -> dict[str, Any]:
    rows = []
    for b in backends:
        addr, weight, state = (b, 1, "active") if isinstance(b, str) else b
        rows.append({"address": addr, "weight": weight, "state": state})
    return {"name": name, "address": address, "port": port, "protocol": protocol,
            "backend": rows}


def config(vips: list[dict[str, Any]], turnover: float = 0.0) -> dict[str, Any]:
    return {"instance": {"name": "xpl", "interface": "lo", "max_vips": 16, "max_backends": 32,
                         "max_connections": 65536, "ring_size": 1021,
                         "flow_table_turnover": turnover, "snat_pool_v4": SNAT_POOL4,
                         "snat_pool_v6": "fd00:5f1b:19:1::/126", "snat_port_min": 1024,
                         "snat_port_max": 1031}, "vip": vips}


SNAT_POOL4 = "198.19.1.0/30"


def start_vips() -> list[dict[str, Any]]:
    return [
        vip("web4", "10.100.0.10", 80, "tcp", "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4",
            "fd00:1::1"),
        vip("dns4", "10.100.0.10", 53, "udp", "10.0.1.1", "10.0.1.2", "fd00:1::2"),
        vip("any4", "10.100.0.20", 0, "tcp", "10.0.1.5", "10.0.1.6"),
        vip("anyu4", "10.100.0.20", 0, "udp", "10.0.1.6"),
        vip("web6", "2001:db8::10", 80, "tcp", "2001:db8:1::1", "2001:db8:1::2",
            "2001:db8:1::3", "10.0.1.7"),
        vip("dns6", "2001:db8::10", 53, "udp", "2001:db8:1::4", "10.0.1.8"),
        vip("any6", "2001:db8::20", 0, "udp", "2001:db8:1::5"),
        vip("empty", "10.100.0.40", 80, "tcp", ("10.0.1.9", 1, "drained")),
    ]


def phases() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, config) in order: each changes what the one before applied."""
    v = start_vips()
    yield "start", config(v)
    for x in v:                                   # SNAT for new flows; established keep DSR
        if x["name"] in ("any4", "anyu4", "any6", "empty"):
            x["mode"] = "snat"
    yield "snat", config(v)
    v[0]["backend"][1]["state"] = "drained"        # 10.0.1.2 in web4: established stay
    v[4]["backend"][1]["state"] = "drained"        # 2001:db8:1::2 in web6
    yield "drains", config(v)
    v[0]["backend"][0]["weight"] = 5
    v[0]["backend"][2]["weight"] = 0               # weight 0: no new flows
    v[1]["backend"][2]["weight"] = 7
    v[4]["backend"][0]["weight"] = 3
    v[2]["mode"] = "dsr"                           # any4 back: its SNAT flows stay SNAT
    yield "weights", config(v)
    for x in v:                                   # 10.0.1.1 and fd00:1::2 gone: stale entries
        x["backend"] = [b for b in x["backend"] if b["address"] not in ("10.0.1.1", "fd00:1::2")]
    yield "removals", config(v)
    v[0]["backend"].append({"address": "10.0.1.10", "weight": 2, "state": "active"})
    v[4]["backend"].append({"address": "2001:db8:1::9", "weight": 1, "state": "active"})
    v[1]["backend"].append({"address": "10.0.1.1", "weight": 1, "state": "active"})
    yield "additions", config(v)
    for b in v[4]["backend"]:                      # web6: no backend for new flows
        b["state"] = "drained"
    v = [x for x in v if x["name"] != "any4"]      # 10.100.0.20/tcp: no service; udp stays
    v = [x for x in v if x["name"] != "any6"]      # 2001:db8::20: no VIP address any more
    yield "emptied", config(v)
    yield "limit", config(v, turnover=3600.0)      # 65536 / 2 CPUs / 3600 s: 9 entries/s


@dataclass(frozen=True)
class Flow:
    src: str
    sport: int
    dst: str
    dport: int
    protocol: str

    def packet(self, flags: str, length: int) -> bytes:
        """A frame whose IP packet is `length` bytes long, built by hand (scapy takes a
        hundred times longer, and this test makes ten thousand)."""
        src, dst = ipaddress.ip_address(self.src), ipaddress.ip_address(self.dst)
        tcp = self.protocol == "tcp"
        if tcp:
            l4 = struct.pack("!HHIIBBHHH", self.sport, self.dport, 1, 0, 0x50, FLAGS[flags],
                             65535, 0, 0)
        else:
            l4 = struct.pack("!HHHH", self.sport, self.dport, length - IP_LEN[src.version],
                             0)
        proto = 6 if tcp else 17
        if src.version == 4:
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, 0, 0, 64, proto, 0,
                             src.packed, dst.packed)
        else:
            ip = struct.pack("!IHBB16s16s", 6 << 28, length - 40, proto, 64, src.packed,
                             dst.packed)
        return ETH[src.version] + ip + l4 + b"x" * (length - len(ip) - len(l4))


FLAGS = {"S": 0x02, "A": 0x10, "PA": 0x18, "SA": 0x12, "FA": 0x11, "": 0}
IP_LEN = {4: 20, 6: 40}
ETH = {4: bytes(eth())[:12] + b"\x08\x00", 6: bytes(eth())[:12] + b"\x86\xdd"}


CLIENTS4 = [f"198.51.100.{i}" for i in range(1, 40)] + ["203.0.113.200"]
CLIENTS6 = [f"2001:db8:ffff::{i:x}" for i in range(1, 40)]
DESTS = [("10.100.0.10", 80, "tcp"), ("10.100.0.10", 53, "udp"), ("10.100.0.20", None, "tcp"),
         ("10.100.0.20", None, "udp"), ("10.100.0.40", 80, "tcp"), ("10.100.0.10", 8080, "tcp"),
         ("10.100.0.99", 80, "tcp"), ("2001:db8::10", 80, "tcp"), ("2001:db8::10", 53, "udp"),
         ("2001:db8::20", None, "udp"), ("2001:db8::10", 443, "udp"), ("2001:db8::99", 53, "udp"),
         ("198.19.1.2", None, "tcp")]  # a SNAT pool address: replies only


def new_flow(rng: random.Random) -> Flow:
    dst, dport, protocol = rng.choice(DESTS)
    src = rng.choice(CLIENTS6 if ":" in dst else CLIENTS4)
    return Flow(src, rng.randrange(65536), dst,
                rng.randrange(65536) if dport is None else dport, protocol)


@dataclass
class Seen:
    """What one side did with one packet."""

    action: int
    reason: str
    backend: str | None  # where the packet went (the encapsulated output's destination)
    outer_src: str | None
    entry: str | None  # the connection entry's backend afterwards (None: no entry)
    path: str          # how the backend was chosen (the data plane's trace event)
    chosen: str | None  # the backend chosen, sent to or not (too big: answered instead)
    hash: int          # the flow hash (0: none computed)

    def text(self) -> str:
        via = f" via {self.outer_src}" if self.outer_src else ""
        action = {v: k for k, v in ACTIONS.items()}.get(self.action, str(self.action))
        return (f"{action} {self.reason} backend {self.backend}{via}, entry after: "
                f"{self.entry}, path {self.path}, chose {self.chosen}, hash {self.hash:#x}")


class Bench:
    """The data plane under test, the flows so far and the side of the data plane."""

    def __init__(self, dut: DataplaneUnderTest, cpu: int, trace: TraceReader):
        self.dut, self.dp, self.cpu, self.trace = dut, dut.dp, cpu, trace
        self.reasons = self._reasons()

    def address(self, backend_id: int | None) -> str | None:
        if backend_id is None:
            return None
        b = self.dp.maps["backends"].get(backend_id)
        return str(S.unpack_addr(b.addr, b.family)) if b.flags & S.XLB_BACKEND_VALID else (
            f"invalid id {backend_id}")

    def _reasons(self) -> np.ndarray:
        return self.dp.maps["reason_stats"].read_array()[:, 0].copy()

    def entry(self, f: Flow) -> str | None:
        s, d = ipaddress.ip_address(f.src), ipaddress.ip_address(f.dst)
        key = S.FlowKey(src=S.pack_addr(s), dst=S.pack_addr(d), sport=S.net_port(f.sport),
                        dport=S.net_port(f.dport), proto=6 if f.protocol == "tcp" else 17,
                        family=S.family_of(d))
        c = self.dp.maps["conns"].get(key)
        return None if c is None else self.address(c.backend_id)

    def run(self, f: Flow, flags: str, length: int) -> Seen:
        action, out = self.dut.run(f.packet(flags, length))
        now = self._reasons()
        (changed,) = np.nonzero(now - self.reasons)[0]  # exactly one reason per packet
        self.reasons = now
        reason = S.Reason(int(changed)).label
        backend = outer = None
        if reason == "tx_snat":  # translated in place: the backend is the destination
            v4 = int.from_bytes(out[12:14], "big") == 0x0800
            backend = str(ipaddress.ip_address(out[30:34] if v4 else out[38:54]))
        elif reason.startswith("tx_encap"):
            ethertype = int.from_bytes(out[12:14], "big")
            if ethertype == 0x0800:  # the outer header: source at 12, destination at 16
                outer, backend = (str(ipaddress.IPv4Address(out[26 + i:30 + i])) for i in (0, 4))
            else:
                assert ethertype == 0x86DD, f"encapsulated output of ethertype {ethertype:#x}"
                outer, backend = (str(ipaddress.IPv6Address(out[22 + i:38 + i]))
                                  for i in (0, 16))
        (event,) = self.trace.poll(0, 8)  # tracing every packet: one event each
        return Seen(action, reason, backend, outer, self.entry(f), event.path.label,
                    self.address(event.backend_id), event.hash)

    def expect(self, f: Flow, syn: bool, length: int) -> tuple[Seen, str]:
        """What explain() says the packet will meet and the entry it leaves behind (a
        backend chosen by Maglev is recorded unless a step says no entry is made), and
        the path it names."""
        before = self.entry(f)
        e = explain(self.dp, f.src, f.sport, f.dst, f.dport, f.protocol, syn, length=length,
                    cpu=self.cpu)
        assert P.conforms(e, P.Explain) == []
        records = e["reason"] in ("tx_encap", "tx_icmp_too_big", "tx_snat") and e["path"] in (
            "maglev", "maglev_syn", "maglev_stale") and not any(
            "no entry is made" in s["text"] for s in e["steps"])
        entry = e["backend"] if records else before
        encap = e["reason"].startswith("tx_encap") or e["reason"] == "tx_snat"
        return Seen(ACTIONS[e["action"]], e["reason"], e["backend"] if encap else None,
                    e["outer_src"], entry, e["path"], e["backend"], e["hash"] or 0), e["path"]

    def guard(self, rng: random.Random, limit: int) -> None:
        """Put this CPU's new-entry window in a chosen state: fresh with room, fresh and
        full, or expired (the next new flow starts a new window)."""
        m = self.dp.maps["flow_guard"]
        rows = (S.FlowGuard * m.ncpu)()
        assert bpfsys.lookup(m.fd, ctypes.c_uint32(0), rows)
        now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
        window = rng.choice((now, now, now - 3 * 10**9))
        rows[self.cpu] = S.FlowGuard(window_ns=window,
                                     count=rng.choice((0, limit - 1, limit, limit + 5)))
        bpfsys.update(m.fd, ctypes.c_uint32(0), rows)


@pytest.fixture(scope="module")
def xpl(roots: tuple[str, str]) -> Iterator[DataplaneUnderTest]:
    with dataplane_under_test("xpl", config(start_vips()), roots) as d:
        yield d


@pytest.fixture
def one_cpu() -> Iterator[int]:
    """Run on one CPU (the test run's per-CPU new-entry window is that CPU's)."""
    with pinned_to_one_cpu() as cpu:
        yield cpu


def test_explain_agrees_with_the_data_plane(xpl: DataplaneUnderTest, one_cpu: int) -> None:
    rng = random.Random(9)
    xpl.dp.set_trace(filter_config())  # every packet: the path and hash it took
    trace = TraceReader("xpl", xpl.pin_root)
    trace.skip()
    bench = Bench(xpl, one_cpu, trace)
    flows: list[Flow] = []
    done = 0
    seen_reasons: set[str] = set()
    paths: set[str] = set()
    for phase, cfg in phases():
        xpl.apply(cfg)
        limit = int(xpl.dp.maps["ctl"].get(0).new_flow_limit)
        for _ in range(FLOWS_PER_PHASE):
            f = rng.choice(flows) if flows and rng.random() < 0.45 else new_flow(rng)
            flows.append(f)
            syn = f.protocol == "tcp" and rng.random() < 0.4
            flags = "" if f.protocol == "udp" else "S" if syn else rng.choice(
                ("A", "PA", "SA", "FA"))
            big = rng.random() < 0.08
            least = (20 if ":" not in f.src else 40) + (20 if f.protocol == "tcp" else 8)
            length = rng.randrange(1440, 1700) if big else rng.randrange(least, least + 200)
            if limit:
                bench.guard(rng, limit)
            want, path = bench.expect(f, syn, length)
            got = bench.run(f, flags, length)
            done += 1
            if want != got:
                pytest.fail(f"flow {done} (phase {phase!r}) differs: {f.protocol} "
                            f"{f.src}:{f.sport} -> {f.dst}:{f.dport} flags {flags or '-'}, "
                            f"{length} bytes\n  explain:    {want.text()}\n"
                            f"  data plane: {got.text()}")
            seen_reasons.add(got.reason)
            paths.add(path)
    assert done >= 10_000 and trace.lost() == 0
    trace.close()
    xpl.dp.set_trace(filter_config(mode=S.XLB_TRACE_OFF))
    # the mix reached every outcome this test is about
    assert seen_reasons >= {"pass_not_vip", "pass_vip_no_service", "drop_no_backend",
                            "tx_icmp_too_big", "tx_encap", "tx_encap_no_entry",
                            "tx_encap_flow_limit", "tx_snat", "drop_snat_no_entry",
                            "drop_snat_flow_limit"}, seen_reasons
    assert paths == {"none", "conn", "maglev", "maglev_syn", "maglev_stale"}, paths


def test_the_hash_is_the_data_plane_s(xpl: DataplaneUnderTest) -> None:
    """IPv6 outer sources carry all 32 bits of the hash (host bits of a /64): every bit of
    flow_hash() is checked against the program's, beyond what a ring slot shows."""
    xpl.apply(config(start_vips()))
    rng = random.Random(3)
    for _ in range(200):
        f = Flow(rng.choice(CLIENTS6), rng.randrange(65536), "2001:db8::10", 53, "udp")
        out = IPv6(xpl.run(f.packet("", 100))[1][14:54])
        if out.version != 6:
            continue  # a v4 backend
        h = flow_hash(ipaddress.ip_address(f.src), f.sport, 53, 17)
        low = int(ipaddress.IPv6Address(out.src)) & 0xFFFFFFFF
        assert low == int.from_bytes(h.to_bytes(4, "little"), "big"), f


def test_without_a_source_port_the_shares_are_the_rings(xpl: DataplaneUnderTest) -> None:
    xpl.apply(config(start_vips()))
    e = explain(xpl.dp, "198.51.100.7", None, "10.100.0.10", 80, "tcp")
    assert e["backend"] is None and e["hash"] is None and e["path"] == "maglev_syn"
    assert e["reason"] == "tx_encap"  # where new connections go
    shares = e.get("shares", {})
    assert set(shares) == {"10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "fd00:1::1"}
    assert abs(sum(shares.values()) - 1) < 1e-9 and all(0.15 < s < 0.25 for s in shares.values())
    # and each share is what that many ports really get
    rng = random.Random(5)
    ports = rng.sample(range(65536), 600)
    hits: dict[str, int] = {}
    for p in ports:
        got = explain(xpl.dp, "198.51.100.7", p, "10.100.0.10", 80, "tcp", True)["backend"]
        hits[got or ""] = hits.get(got or "", 0) + 1
    assert all(abs(hits[a] / 600 - s) < 0.07 for a, s in shares.items()), (hits, shares)
    drained = explain(xpl.dp, "198.51.100.7", None, "10.100.0.40", 80, "tcp", True)
    assert drained["reason"] == "drop_no_backend" and drained.get("shares") == {}


def test_steps_say_why(xpl: DataplaneUnderTest) -> None:
    xpl.apply(config(start_vips()))
    xpl.flush_conns()
    f = Flow("198.51.100.7", 40001, "10.100.0.10", 80, "tcp")
    xpl.run(f.packet("S", 60))
    e = explain(xpl.dp, f.src, f.sport, f.dst, f.dport)
    assert [s["step"] for s in e["steps"]] == ["vip", "service", "connection", "hash",
                                               "backend", "encap", "verdict"]
    assert e["path"] == "conn" and e["connection_age"] is not None
    assert e["flow"] == "198.51.100.7:40001 -> 10.100.0.10:80/tcp" and e["vip"] == "web4"
    assert f"backend {e['backend']} (id" in e["steps"][4]["text"]
    e = explain(xpl.dp, "2001:db8:ffff::1", 5, "2001:db8::20", 9999, "udp")
    assert e["flow"] == "[2001:db8:ffff::1]:5 -> [2001:db8::20]:9999/udp"
    assert "any-port VIP" in e["steps"][1]["text"] and e["vip"] == "any6"
    e = explain(xpl.dp, "198.51.100.7", 1, "10.100.0.10", 80, "tcp", True, length=1481)
    assert e["reason"] == "tx_icmp_too_big" and "over mtu 1500" in e["steps"][-2]["text"]


@pytest.mark.parametrize(("args", "message"), [
    (("nonsense", 1, "10.100.0.10", 80), "source: 'nonsense' is not an IP address"),
    (("198.51.100.7", 1, "2001:db8::10", 80), "not of one family"),
    (("198.51.100.7", 70000, "10.100.0.10", 80), "source port: 70000 is not a port"),
    (("198.51.100.7", 1, "10.100.0.10", 80, "sctp"), "protocol 'sctp'"),
])
def test_bad_flows_are_clear_errors(xpl: DataplaneUnderTest, args: tuple[Any, ...],
                                    message: str) -> None:
    with pytest.raises(InvalidParams, match=message):
        explain(xpl.dp, *args)
    with pytest.raises(InvalidParams, match="length 30: an IP packet of tcp over IPv4 is 40"):
        explain(xpl.dp, "198.51.100.7", 1, "10.100.0.10", 80, length=30)
