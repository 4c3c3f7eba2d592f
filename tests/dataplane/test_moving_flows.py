"""Moving the flows of a backend found down, packet by packet (BPF_PROG_TEST_RUN).

What the agent applies (xlb/agent/applied.py): a backend that no VIP keeps is invalidated,
so all its flows move; one that another VIP keeps valid (its TCP flows stay there) has
its UDP flows found in the connection table and dropped (`Dataplane.drop_flows`), so
their next packet asks Maglev. Without that, a fixed-port UDP client stays on the dead
backend for as long as it keeps its port.
"""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from tests.helpers import CLIENT, XDP_TX, DataplaneUnderTest, base_config, eth, outer_v4, syn
from xlb.dataplane.manager import key_label


def query(sport: int) -> bytes:
    """A UDP query from a fixed client port to the dns VIP (10.100.0.10:53/udp)."""
    return bytes(eth() / IP(src=CLIENT, dst="10.100.0.10") / UDP(sport=sport, dport=53)
                 / Raw(b"q"))


def backend_of(dut: DataplaneUnderTest, packet: bytes) -> str:
    action, out = dut.run(packet)
    assert action == XDP_TX
    return str(outer_v4(out)[0].dst)


def ids(dut: DataplaneUnderTest, vip: str, address: str) -> tuple[int, int]:
    (vip_id,) = [m.vip_id for k, m in dut.dp.vip_entries().values() if key_label(k) == vip]
    (bid,) = [i for i in dut.dp.backend_entries() if dut.backend_address(i) == address]
    return vip_id, bid


def down_in_dns_kept_in_web(address: str) -> dict:
    """The agent's config with `address` down, TCP flows staying: drained in web (valid,
    its TCP flows stay), left out of dns (its UDP flows move)."""
    cfg = base_config()
    for b in cfg["vip"][0]["backend"]:
        if b["address"] == address:
            b["state"] = "drained"
    cfg["vip"][1]["backend"] = [b for b in cfg["vip"][1]["backend"] if b["address"] != address]
    return cfg


def test_udp_flows_move_and_tcp_flows_stay(dut: DataplaneUnderTest) -> None:
    dead = backend_of(dut, query(5353))
    tcp = next(p for p in range(40000, 40400) if backend_of(dut, syn(sport=p)) == dead)
    dut.apply(down_in_dns_kept_in_web(dead))
    assert backend_of(dut, query(5353)) == dead, "the entry still holds it: blackholed"
    vip_id, bid = ids(dut, "10.100.0.10:53/udp", dead)
    dropped = dut.dp.drop_flows({(vip_id, bid)})
    assert dropped == {(vip_id, bid): 1}
    moved = backend_of(dut, query(5353))
    assert moved != dead and moved in {"10.0.1.1", "10.0.1.2"}
    assert backend_of(dut, query(5353)) == moved, "and it stays on its new backend"
    assert backend_of(dut, syn(sport=tcp, flags="A")) == dead, "TCP flows stay"


def test_only_the_named_pairs_are_dropped(dut: DataplaneUnderTest) -> None:
    for port in range(6000, 6200):
        dut.run(query(port))
        dut.run(syn(sport=port))
    before = dut.conns()
    vip_id, bid = ids(dut, "10.100.0.10:53/udp", "10.0.1.1")
    dropped = dut.dp.drop_flows({(vip_id, bid)})
    (n,) = dropped.values()
    assert 40 < n < 160 and dut.conns() == before - n  # about half of the 200 queries
    assert dut.dp.drop_flows({(vip_id, bid)}) == {}
    assert dut.dp.drop_flows({(vip_id, 63)}) == {} and dut.conns() == before - n


def test_a_table_larger_than_one_batch_is_walked_whole(dut: DataplaneUnderTest) -> None:
    """20,000 entries (the walk reads 8,192 at a time): every matching one goes."""
    import ctypes

    import numpy as np

    from xlb.dataplane import bpfsys
    from xlb.dataplane import structs as S
    from xlb.dataplane.manager import _CONN_DTYPE

    n = 20000
    keys = np.zeros((n, ctypes.sizeof(S.FlowKey)), dtype=np.uint8)
    keys[:, :4] = np.arange(n, dtype=np.uint32).view(np.uint8).reshape(n, 4)  # distinct
    values = np.zeros(n, dtype=_CONN_DTYPE)  # struct xlb_conn
    values["vip_id"], values["backend_id"] = 1, np.arange(n) % 4  # a quarter each
    m = dut.dp.maps["conns"]
    bpfsys.update_batch(m.fd, ctypes.c_char.from_address(keys.ctypes.data),
                        ctypes.c_char.from_address(values.ctypes.data), n)
    assert dut.conns() == n
    assert dut.dp.drop_flows({(1, 2), (1, 3)}) == {(1, 2): n // 4, (1, 3): n // 4}
    assert dut.conns() == n // 2
