"""The agent's Prometheus metrics: the data plane's counters as `_total` counters by
Prometheus's conventions, read by the agent's tick, never by the scrape."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.agent.test_agent import NS, AgentProc, running_agent
from tests.helpers import promtool_check, samples, scrape, wait_for
from tests.unit.test_protocol import readme_section
from xlb.lab import netns


@pytest.fixture
def agent(roots: tuple[str, str]) -> Iterator[AgentProc]:
    yield from running_agent(roots, "none")


def _frames() -> list[bytes]:
    """20 SYNs of new connections, then 10 ACKs of 10 of them (known), then 10 ACKs of
    connections nobody saw begin (state lost): 40 packets to VIP web."""
    dst, src = netns.mac(NS, "xlb0"), netns.mac(NS, "peer0")

    def tcp(sport: int, flags: str) -> bytes:
        return bytes(Ether(src=src, dst=dst) / IP(src="198.51.100.9", dst="10.100.0.10")
                     / TCP(sport=sport, dport=80, flags=flags))
    return ([tcp(30000 + i, "S") for i in range(20)] + [tcp(30000 + i, "A") for i in range(10)]
            + [tcp(31000 + i, "A") for i in range(10)])


def test_metrics_are_the_data_planes_counters_by_convention(agent: AgentProc) -> None:
    with agent.client() as c:
        status = c.call("status")
    port = status["metrics_port"]
    assert set(status["misses"]) == {"tcp_syn", "tcp_non_syn", "udp"}  # per second, by kind
    before = samples(scrape(port))
    web = ("xlb_vip_packets_total", (("vip", "web"),))
    netns.send_frames(NS, "peer0", _frames(), count=40).wait(timeout=60)
    wait_for(lambda: samples(scrape(port)).get(web, 0) >= before.get(web, 0) + 40,
             "the tick to read the 40 packets")
    text = scrape(port)
    after = samples(text)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("xlb_vip_packets_total", vip="web") == 40
    assert grew("xlb_vip_packets_total", vip="dns") == 0
    assert grew("xlb_connection_table_misses_total", kind="tcp_syn") == 20
    assert grew("xlb_connection_table_misses_total", kind="tcp_non_syn") == 10
    assert grew("xlb_connection_table_misses_total", kind="udp") == 0
    assert sum(grew("xlb_backend_packets_total", backend=b)
               for b in ("10.0.1.1", "10.0.1.2")) == 40
    assert sum(grew("xlb_backend_new_connections_total", backend=b)
               for b in ("10.0.1.1", "10.0.1.2")) == 20
    assert grew("xlb_verdict_packets_total", reason="tx_encap_no_entry") == 10
    assert sum(v for (n, _), v in after.items() if n == "xlb_rx_queue_packets_total") >= 40
    # counters never go down, and every grown figure is a counter
    for key, value in after.items():
        if key[0].endswith("_total") and key in before:
            assert value >= before[key], key
    families = list(text_string_to_metric_families(text))
    for f in families:
        assert "per_second" not in f.name and not f.name.endswith("_per_s"), f.name
        if f.type == "counter":
            assert all(s.name == f.name + "_total" for s in f.samples), f.name
        for s in f.samples:
            assert "instance" not in s.labels, f"{s.name}: the scraper adds `instance`"
    assert after[("xlb_backend_ring_share_ratio", (("backend", "10.0.1.2"), ("vip", "web")))
                 ] == pytest.approx(0.75, abs=1e-4)
    assert after[("xlb_backend_weight", (("backend", "10.0.1.2"), ("vip", "web")))] == 3
    assert after[("xlb_backend_healthy", (("backend", "10.0.1.2"), ("vip", "web")))] == 1
    assert after[("xlb_backend_drained", (("backend", "10.0.1.2"), ("vip", "web")))] == 0
    assert after[("xlb_vip_backends", (("vip", "dns"),))] == 1
    (build,) = [s for f in families for s in f.samples if s.name == "xlb_build_info"]
    assert build.value == 1 and set(build.labels) == {"version", "kernel", "xdp_mode",
                                                      "forwarding_mode"}
    assert build.labels["xdp_mode"] == status["xdp_mode"]
    assert build.labels["forwarding_mode"] == "dsr"
    names = {f.name for f in families}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names
    assert promtool_check(text) == ""
    listed = set(re.findall(r"`(xlb_\w+)`", readme_section("## Metrics").split("\n\n**")[0]))
    served = {s.name for f in families for s in f.samples if s.name.startswith("xlb_")}
    served |= {f.name + ("_total" if f.type == "counter" else "") for f in families
               if not f.samples and f.name.startswith("xlb_")}  # a probe that is off
    assert listed == served, "the README's metric list is what the agent serves"

    with agent.client() as c:
        c.call("drain", address="10.0.1.1", vip="web")
    drained = ("xlb_backend_drained", (("backend", "10.0.1.1"), ("vip", "web")))
    wait_for(lambda: samples(scrape(port)).get(drained) == 1, "the drain in the metrics")
