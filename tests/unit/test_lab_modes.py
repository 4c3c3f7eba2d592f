"""The lab's side of the forwarding modes, without a lab: each LB's SNAT pools (in its
config, accepted by the rules, every VIP switchable to snat), the backends' servers naming
who asked, and the traffic generator telling the mode from it."""

from __future__ import annotations

import pytest

from xlb.dataplane.config import parse_config
from xlb.lab import run, traffic
from xlb.lab.server import client_text, echo_body, parse_client
from xlb.lab.topology import VIPS, Lab


def test_each_lb_has_pools_of_its_own_in_its_config() -> None:
    lab = Lab()
    pools = {lb: (lab.snat_pool(lb), lab.snat_pool(lb, True)) for lb in lab.lbs}
    assert pools == {"lb1": ("198.19.1.0/28", "fd00:5f1b:19:1::/124"),
                     "lb2": ("198.19.3.0/28", "fd00:5f1b:19:3::/124")}
    for lb in lab.lbs:
        cfg = parse_config(run.lb_config(lab, lb))
        assert (str(cfg.instance.snat_pool_v4), str(cfg.instance.snat_pool_v6)) == pools[lb]
        assert {v.name: v.mode for v in cfg.vips} == dict.fromkeys(VIPS, "dsr")
        for name in VIPS:  # the rules accept every lab VIP in snat (a pool of its family)
            assert cfg.with_vip_mode(name, "snat").vip(name).mode == "snat"


@pytest.mark.parametrize("address, lb", [
    ("198.19.1.0", "lb1"), ("198.19.1.15", "lb1"), ("198.19.3.7", "lb2"),
    ("fd00:5f1b:19:1::f", "lb1"), ("fd00:5f1b:19:3::1", "lb2"),
    ("198.19.1.16", None), ("198.18.0.12", None), ("fd00:5f1b:18::12", None),
    ("fd00:5f1b:19::10", None)])
def test_snat_owner_is_the_lb_whose_pool_holds_the_address(address: str, lb: str | None) -> None:
    owner = Lab().snat_owner(address)
    assert (owner[0] if owner else None) == lb


@pytest.mark.parametrize("address, port, text", [
    ("198.19.1.3", 1024, "198.19.1.3:1024"), ("fd00:5f1b:19:1::3", 65535,
                                               "[fd00:5f1b:19:1::3]:65535")])
def test_who_asked_is_spelled_once_and_read_back(address: str, port: int, text: str) -> None:
    assert client_text(address, port) == text
    assert parse_client(text) == (address, port)
    name, who, query = echo_body("be2", address, port, b"q\nx").split(b"\n", 2)
    assert (name, who.decode(), query) == (b"be2", text, b"q\nx")


def test_the_generator_tells_the_mode_from_who_the_backend_saw() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nx-client: 198.19.3.2:40000\r\n"
    assert traffic.header(head, b"X-Client") == "198.19.3.2:40000"
    assert traffic.header(head, b"X-Backend") == ""
    tally = traffic.Tally()
    tally.mode("198.19.0.10", "tcp", "198.19.3.2:40000")
    tally.mode("198.19.0.10", "tcp", "198.18.0.12:40000")
    tally.mode("fd00:5f1b:19::10", "udp", "[fd00:5f1b:19:1::2]:1024")
    assert tally.summary(1.0)["modes"] == {"dns6": {"dsr": 0, "snat": 1},
                                           "web": {"dsr": 1, "snat": 1}}
