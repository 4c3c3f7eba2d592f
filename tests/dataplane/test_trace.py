"""Flow traces in the data plane (BPF_PROG_TEST_RUN): each path of the program gives the
event it should, the filter matches and rejects field by field, sampling keeps about
1 in N, tracing off emits nothing, and the reader follows the pinned ring buffer."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import select
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from tests.helpers import (
    CLIENT,
    CLIENT6,
    ENCAP_V4,
    ENCAP_V6,
    WEB_BACKENDS,
    XDP_DROP,
    XDP_PASS,
    XDP_TX,
    DataplaneUnderTest,
    base_config,
    eth,
    outer_v4,
    syn,
    syn6,
)
from xlb.dataplane import bpfsys
from xlb.dataplane import structs as S
from xlb.dataplane.manager import key_label
from xlb.dataplane.trace import TraceReader, TraceRecord, filter_config
from xlb.errors import InvalidParams

ALL = filter_config()  # mode on, no field: every packet


@pytest.fixture
def traced(dut: DataplaneUnderTest) -> Iterator[tuple[DataplaneUnderTest, TraceReader]]:
    """The session data plane with its trace reader; tracing is off again afterwards."""
    reader = TraceReader(dut.loaded.instance, dut.pin_root)
    reader.skip()
    try:
        yield dut, reader
    finally:
        dut.dp.set_trace(S.TraceConfig())
        reader.close()


def one(reader: TraceReader) -> TraceRecord:
    events = reader.poll(0)
    assert len(events) == 1, events
    return events[0]


def vip_id(dut: DataplaneUnderTest, label: str) -> int:
    (found,) = [m.vip_id for k, m in dut.dp.vip_entries().values() if key_label(k) == label]
    return found


def backend_id(dut: DataplaneUnderTest, address: str) -> int:
    (found,) = [i for i in dut.dp.backend_entries() if dut.backend_address(i) == address]
    return found


def udp(sport: int = 5353, dst: str = "10.100.0.10", dport: int = 53) -> bytes:
    return bytes(eth() / IP(src=CLIENT, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"q"))


def test_syn_then_established_then_udp(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    pkt = syn(sport=41000)
    before = time.monotonic_ns()
    action, out = dut.run(pkt)
    assert action == XDP_TX
    outer, _ = outer_v4(out)
    ev = one(reader)
    assert (ev.path, ev.reason, ev.action) == (S.Path.MAGLEV_SYN, S.Reason.TX_ENCAP, XDP_TX)
    assert (ev.family, ev.proto, ev.src, ev.sport, ev.dst, ev.dport) == (
        S.XLB_AF_INET, 6, ipaddress.ip_address(CLIENT), 41000,
        ipaddress.ip_address("10.100.0.10"), 80)
    assert ev.vip_id == vip_id(dut, "10.100.0.10:80/tcp")
    assert ev.backend_id is not None and dut.backend_address(ev.backend_id) == outer.dst
    assert outer.dst in WEB_BACKENDS
    assert ev.outer_src == ipaddress.ip_address(outer.src) and ev.outer_src in ENCAP_V4
    assert ev.hash != 0 and ev.length == len(pkt)
    assert before <= ev.time_ns <= time.monotonic_ns()
    assert ev.queue == 0 and ev.ifindex == 1  # a test run arrives on lo's first queue
    assert 0 <= ev.cpu < bpfsys.possible_cpus()

    dut.run(syn(sport=41000, flags="A"))
    ack = one(reader)
    assert (ack.path, ack.reason) == (S.Path.CONN, S.Reason.TX_ENCAP)
    assert (ack.backend_id, ack.hash, ack.outer_src) == (ev.backend_id, ev.hash, ev.outer_src)

    dut.run(udp())
    first = one(reader)
    assert (first.path, first.reason, first.proto) == (S.Path.MAGLEV, S.Reason.TX_ENCAP, 17)
    assert first.vip_id == vip_id(dut, "10.100.0.10:53/udp")
    dut.run(udp())
    assert one(reader).path == S.Path.CONN


def test_tcp_without_entry_is_maglev_no_entry(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    dut.run(syn(sport=41001, flags="A"))
    ev = one(reader)
    assert (ev.path, ev.reason) == (S.Path.MAGLEV, S.Reason.TX_ENCAP_NO_ENTRY)
    assert ev.backend_id is not None


def test_drained_backend_keeps_its_flow_and_removed_one_is_repicked(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    dut.run(syn(sport=41002))
    chosen = one(reader).backend_id
    assert chosen is not None
    address = dut.backend_address(chosen)
    cfg = base_config()
    for b in cfg["vip"][0]["backend"]:
        if b["address"] == address:
            b["state"] = "drained"
    dut.apply(cfg)
    dut.run(syn(sport=41002, flags="A"))
    ev = one(reader)
    assert (ev.path, ev.backend_id) == (S.Path.CONN, chosen), "drained: the flow stays"
    new = next(p for p in range(42000, 42400)
               if dut.run(syn(sport=p))[0] == XDP_TX and one(reader).backend_id != chosen)
    assert new  # a new flow: Maglev, another backend

    for v in cfg["vip"]:
        v["backend"] = [b for b in v["backend"] if b["address"] != address]
    dut.apply(cfg)
    dut.run(syn(sport=41002, flags="A"))
    ev = one(reader)
    assert ev.path == S.Path.MAGLEV_STALE and ev.backend_id not in (None, chosen)
    assert ev.reason == S.Reason.TX_ENCAP


def test_not_a_vip_and_malformed(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    assert dut.run(syn(dst="192.0.2.1"))[0] == XDP_PASS
    ev = one(reader)
    assert (ev.path, ev.reason, ev.action) == (S.Path.NONE, S.Reason.PASS_NOT_VIP, XDP_PASS)
    assert (ev.vip_id, ev.backend_id, ev.outer_src, ev.hash) == (None, None, None, 0)
    assert ev.dst == ipaddress.ip_address("192.0.2.1") and ev.proto == 6
    cut = syn(sport=41003)[:14 + 20 + 10]  # TCP header cut short
    assert dut.run(cut)[0] == XDP_DROP
    ev = one(reader)
    assert (ev.path, ev.reason, ev.action) == (S.Path.NONE, S.Reason.DROP_MALFORMED, XDP_DROP)
    assert ev.length == len(cut)
    assert dut.run(bytes(eth() / Raw(b"\0" * 50)))[0] == XDP_PASS  # not IP at all
    ev = one(reader)
    assert (ev.reason, ev.family, ev.src, ev.dst) == (S.Reason.PASS_NOT_IP, 0, None, None)


def test_no_backend_has_a_vip_and_no_backend(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    assert dut.run(syn(dst="10.100.0.40"))[0] == XDP_DROP  # "empty": its one backend drained
    ev = one(reader)
    assert (ev.reason, ev.path, ev.backend_id) == (S.Reason.DROP_NO_BACKEND, S.Path.NONE, None)
    assert ev.vip_id == vip_id(dut, "10.100.0.40:80/tcp")


def test_outer_source_of_v6_backends(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    action, out = dut.run(syn6(sport=41004))  # v6 VIP, v6 backend
    assert action == XDP_TX
    ev = one(reader)
    outer = IPv6(out[14:54])
    assert ev.outer_src == ipaddress.ip_address(outer.src) and ev.outer_src in ENCAP_V6
    assert ev.src == ipaddress.ip_address(CLIENT6) and ev.family == S.XLB_AF_INET6
    assert dut.backend_address(ev.backend_id or 0) == "2001:db8:1::1"
    action, out = dut.run(syn(sport=41005, dst="10.100.0.30", dport=443))  # v4 VIP, v6 backend
    assert action == XDP_TX
    ev = one(reader)
    assert ev.outer_src == ipaddress.ip_address(IPv6(out[14:54]).src)
    action, out = dut.run(syn6(sport=41006, dport=81))  # v6 VIP, v4 backend
    ev = one(reader)
    assert ev.outer_src == ipaddress.ip_address(outer_v4(out)[0].src)


def test_icmp_error_traces_the_quoted_flow(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    dut.run(syn(sport=41007))
    backend = one(reader).backend_id
    # a router tells the VIP its reply to the client was too big: quotes VIP -> client
    quote = IP(src="10.100.0.10", dst=CLIENT) / TCP(sport=80, dport=41007, flags="SA")
    err = bytes(eth() / IP(src="192.0.2.99", dst="10.100.0.10")
                / ICMP(type=3, code=4, nexthopmtu=1400) / bytes(quote)[:28])
    assert dut.run(err)[0] == XDP_TX
    ev = one(reader)
    assert (ev.reason, ev.path, ev.backend_id) == (S.Reason.TX_ENCAP_ICMP_ERROR, S.Path.CONN,
                                                  backend)
    assert (ev.src, ev.sport, ev.dport) == (ipaddress.ip_address(CLIENT), 41007, 80)


MATCHING = syn(sport=41100)  # 198.51.100.7:41100 -> 10.100.0.10:80 tcp, backend from Maglev


def _filters(dut: DataplaneUnderTest, backend: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(a filter MATCHING passes, one it fails) per field."""
    net = ipaddress.ip_network
    other = next(i for i in dut.dp.backend_entries() if i != backend)
    return [
        ({"src": net("198.51.100.0/24")}, {"src": net("198.51.101.0/24")}),
        ({"src": net(f"{CLIENT}/32")}, {"src": net("2001:db8:ffff::/48")}),
        ({"dst": net("10.100.0.0/16")}, {"dst": net("10.100.0.20/32")}),
        ({"host": net("10.100.0.10/32")}, {"host": net("10.100.0.11/32")}),
        ({"host": net("198.51.100.7/32")}, {"host": net("192.0.2.0/24")}),
        ({"sport": 41100}, {"sport": 80}),
        ({"dport": 80}, {"dport": 41100}),
        ({"port": 41100}, {"port": 443}),
        ({"port": 80}, {"port": 81}),
        ({"proto": 6}, {"proto": 17}),
        ({"vip_id": vip_id(dut, "10.100.0.10:80/tcp")},
         {"vip_id": vip_id(dut, "10.100.0.10:53/udp")}),
        ({"backend_id": backend}, {"backend_id": other}),
        ({"src": net("198.51.100.0/24"), "dport": 80, "proto": 6},
         {"src": net("198.51.100.0/24"), "dport": 80, "proto": 17}),
    ]


def test_each_filter_field_matches_and_rejects(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    dut.run(MATCHING)
    backend = one(reader).backend_id
    assert backend is not None
    for good, bad in _filters(dut, backend):
        dut.dp.set_trace(filter_config(**good))
        dut.run(MATCHING)
        assert len(reader.poll(0)) == 1, f"{good} should match"
        dut.dp.set_trace(filter_config(**bad))
        dut.run(MATCHING)
        assert reader.poll(0) == [], f"{bad} should not match"


def test_sampling_keeps_about_one_in_n(traced: Any) -> None:
    dut, reader = traced
    pkt = syn(dst="192.0.2.1")  # passes unchanged, so one test run can repeat it
    dut.dp.set_trace(filter_config(sample=10))
    written = reader.written()
    bpfsys.test_run(dut.loaded.prog_fd, pkt, repeat=3000)
    got = len(reader.poll(0))
    assert reader.written() - written == got
    assert 300 - 5 * 17 < got < 300 + 5 * 17  # binomial(3000, 0.1): sd 16.4
    dut.dp.set_trace(filter_config(sample=1))
    bpfsys.test_run(dut.loaded.prog_fd, pkt, repeat=300)
    assert len(reader.poll(0)) == 300


def test_trace_off_emits_nothing(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    dut.dp.set_trace(filter_config(mode=S.XLB_TRACE_OFF))
    written, lost = reader.written(), reader.lost()
    for pkt in (syn(sport=41200), syn(sport=41200, flags="A"), udp(), syn(dst="192.0.2.1"),
                syn6(sport=41200), bytes(eth() / Raw(b"\0" * 50))):
        dut.run(pkt)
    bpfsys.test_run(dut.loaded.prog_fd, syn(dst="192.0.2.1"), repeat=1000)
    assert reader.poll(0) == []
    assert (reader.written(), reader.lost()) == (written, lost)
    assert reader.pending() == 0


def test_apply_keeps_the_trace_and_bad_configs_change_nothing(traced: Any) -> None:
    dut, reader = traced
    want = filter_config(dport=80, sample=3)
    dut.dp.set_trace(want)
    cfg = base_config()
    cfg["instance"]["mtu"] = 1400  # ctl changes
    dut.apply(cfg)
    assert bytes(dut.dp.trace_config()) == bytes(want)
    assert dut.dp.maps["ctl"].get(0).mtu == 1400
    for bad in (S.TraceConfig(mode=2), S.TraceConfig(mode=1, fields=0x8000),
                S.TraceConfig(mode=1, fields=S.XLB_TF_SRC, family=5)):
        with pytest.raises(InvalidParams):
            dut.dp.set_trace(bad)
        assert bytes(dut.dp.trace_config()) == bytes(want)
    net = ipaddress.ip_network
    with pytest.raises(InvalidParams, match="one address family"):
        filter_config(src=net("10.0.0.0/8"), dst=net("2001:db8::/32"))
    with pytest.raises(InvalidParams, match="not a port"):
        filter_config(dport=70000)


def test_a_new_reader_goes_on_where_the_last_stopped(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    for sport in (41300, 41301, 41302):
        dut.run(udp(sport=sport))
    assert [e.sport for e in reader.poll(0, max_events=1)] == [41300]
    reader.close()
    again = TraceReader(dut.loaded.instance, dut.pin_root)
    try:
        assert [e.sport for e in again.poll(0)] == [41301, 41302]
    finally:
        again.close()


def test_poll_waits_at_most_its_timeout_and_the_fd_wakes(traced: Any) -> None:
    dut, reader = traced
    dut.dp.set_trace(ALL)
    started = time.monotonic()
    assert reader.poll(0.2) == []
    assert 0.15 < time.monotonic() - started < 1.5
    assert select.select([reader], [], [], 0)[0] == []
    dut.run(syn(dst="192.0.2.1"))
    assert select.select([reader], [], [], 1.0)[0] == [reader]
    assert len(reader.poll(1.0)) == 1


def test_a_tiny_ring_counts_what_it_loses(roots: tuple[str, str]) -> None:
    from xlb.dataplane import loader
    from xlb.dataplane.config import parse_config
    from xlb.dataplane.manager import Dataplane, geometry_of

    pin_root, run_root = roots
    cfg = parse_config(base_config("tinyring"))
    loaded = loader.load("tinyring", geometry_of(cfg), pin_root, trace_buffer=4096)
    try:
        with Dataplane("tinyring", pin_root, run_root) as dp, \
                TraceReader("tinyring", pin_root) as reader:
            assert reader.size == 4096
            dp.apply(cfg)
            dp.set_trace(ALL)
            bpfsys.test_run(loaded.prog_fd, syn(dst="192.0.2.1"), repeat=500)
            written, lost = reader.written(), reader.lost()
            assert written + lost == 500
            assert 0 < written <= 4096 // (8 + ctypes.sizeof(S.TraceEvent)) < 500
            events = reader.poll(0)
            assert len(events) == written
            assert reader.lost() == lost  # reading does not count anything
            bpfsys.test_run(loaded.prog_fd, syn(dst="192.0.2.1"), repeat=10)
            again = reader.poll(0)  # these wrap around the end of the ring: read whole
            assert len(again) == 10, "room again once read"
            assert {(e.dst, e.reason, e.length) for e in again} == {
                (ipaddress.ip_address("192.0.2.1"), S.Reason.PASS_NOT_VIP, 54)}
    finally:
        loader.remove_pins("tinyring", pin_root)


def test_a_reload_keeps_the_ring_and_a_new_size_replaces_it(roots: tuple[str, str]) -> None:
    from xlb.dataplane import loader
    from xlb.dataplane.config import parse_config
    from xlb.dataplane.manager import Dataplane, geometry_of
    from xlb.dataplane.maps import TRACE_EVENTS

    pin_root, run_root = roots
    cfg = parse_config(base_config("reload"))
    geo = geometry_of(cfg)
    ring = f"{pin_root}/reload/{TRACE_EVENTS}"

    def ring_id() -> int:
        fd = bpfsys.obj_get(ring)
        try:
            return int(bpfsys.map_info(fd).id)
        finally:
            os.close(fd)

    first = loader.load("reload", geo, pin_root, trace_buffer=8192)
    try:
        with Dataplane("reload", pin_root, run_root) as dp:
            dp.apply(cfg)
            dp.set_trace(ALL)
            bpfsys.test_run(first.prog_fd, syn(dst="192.0.2.1"), repeat=3)
            before = ring_id()
            second = loader.load("reload", geo, pin_root, trace_buffer=8192)  # a restart
            assert ring_id() == before
            bpfsys.test_run(second.prog_fd, syn(dst="192.0.2.1"), repeat=2)
            with TraceReader("reload", pin_root) as reader:
                assert len(reader.poll(0)) == 5, "the old program's events and the new one's"
            third = loader.load("reload", geo, pin_root, trace_buffer=16384)
            assert ring_id() != before
            with TraceReader("reload", pin_root) as reader:
                assert reader.size == 16384 and reader.poll(0) == []
                bpfsys.test_run(third.prog_fd, syn(dst="192.0.2.1"), repeat=1)
                assert len(reader.poll(0)) == 1
    finally:
        loader.remove_pins("reload", pin_root)
