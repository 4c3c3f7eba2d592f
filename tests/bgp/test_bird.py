"""xlb.lab.bird: the router's BIRD, real, in private namespaces: ECMP over two LBs in the
kernel, a refused config, found and stopped again by another process. Root."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.bgp.fabric import VIP, VIP6, Fabric, fabric
from tests.helpers import wait_for
from xlb.bgp.speaker import Speaker
from xlb.errors import LabError
from xlb.lab import netns
from xlb.lab.bird import Bird, Peer, config

pytestmark = pytest.mark.root


@pytest.fixture
def fab2(tmp_path: object) -> Iterator[Fabric]:
    with fabric(str(tmp_path), lbs=2) as f:
        yield f


def kernel_route(ns: str, prefix: str) -> str:
    fam = "-6" if ":" in prefix else "-4"
    return subprocess.run(["ip", "-n", ns, fam, "route", "show", prefix], check=True,
                          capture_output=True, text=True).stdout


def test_two_lbs_give_an_ecmp_route_in_the_routers_kernel(fab2: Fabric,
                                                          tmp_path: object) -> None:
    assert {k: v for k, v in fab2.bird.protocols().items() if k.startswith("lb")} == {
        "lb1_v4": "Passive", "lb1_v6": "Passive", "lb2_v4": "Passive", "lb2_v6": "Passive"}
    speakers = [Speaker(lb.settings(), f"lb{i}", lb.ns, lambda e: None, run_root=str(tmp_path))
                for i, lb in enumerate(fab2.lbs, 1)]
    try:
        for sp in speakers:
            sp.start()
            sp.set_routes({VIP: True, VIP6: True})
        both = sorted(lb.address for lb in fab2.lbs)
        assert fab2.bird.wait(VIP, 2, 20) == both
        assert fab2.bird.wait(VIP6, 2, 5) == sorted(lb.address6 for lb in fab2.lbs)
        assert set(fab2.bird.protocols().values()) >= {"Established"}
        for prefix, hops in ((VIP, both), (VIP6, [lb.address6 for lb in fab2.lbs])):
            wait_for(lambda: all(f"via {h} " in kernel_route(fab2.router_ns,  # noqa: B023
                                                                prefix) for h in hops),  # noqa: B023
                     f"both next hops of {prefix} in the kernel")
            assert "proto bird" in kernel_route(fab2.router_ns, prefix)
        speakers[0].set_routes({VIP: False, VIP6: True})
        assert fab2.bird.wait(VIP, 1, 5) == [fab2.lbs[1].address]
        wait_for(lambda: fab2.lbs[0].address not in kernel_route(fab2.router_ns, VIP),
                 "lb1's next hop gone from the kernel")
        assert f"via {fab2.lbs[1].address} " in kernel_route(fab2.router_ns, VIP)
        assert len(fab2.bird.next_hops(VIP6)) == 2
    finally:
        for sp in speakers:
            sp.close()


def test_config_refused_names_birds_reason_and_starts_nothing(tmp_path: object) -> None:
    ns = f"xbgp{os.getpid()}cfg"
    netns.create(ns)
    try:
        bird = Bird(ns, str(tmp_path))
        bad = config(65000, "198.18.240.1", [Peer("lb1_v4", "198.18.241.2", "not-an-ip", 65001)])
        with pytest.raises(LabError, match=r"BIRD refuses .*bird\.conf.*"):
            bird.start(bad)
        assert bird.pid == 0 and bird.proc is None
    finally:
        netns.remove(ns)


def test_another_process_finds_and_stops_it_by_its_pid_file(tmp_path: object) -> None:
    ns = f"xbgp{os.getpid()}pid"
    netns.create(ns)
    first = Bird(ns, str(tmp_path))
    try:
        pid = first.start(config(65000, "198.18.240.1", []))
        assert first.next_hops(VIP) == []
        assert "Daemon is up" in first.cmd("show", "status")
        later = Bird(ns, str(tmp_path))          # `xlb lab down`: a new process, same workdir
        assert later.pid == pid
        with pytest.raises(LabError, match="already runs"):
            later.start(config(65000, "198.18.240.1", []))
        later.stop()
        wait_for(lambda: first.proc is not None and first.proc.poll() is not None, "BIRD ended")
        assert later.pid == 0 and not os.path.exists(later.ctl)
        # a pid file naming another program is not ours to end
        with open(later.pidfile, "w") as f:
            f.write(str(os.getpid()))
        assert later.pid == 0
    finally:
        first.stop()
        netns.remove(ns)
