"""Real attach: a veth pair in a namespace this test makes, XDP native and generic,
real frames sent from the peer, counters read from the pinned maps; and the CLI
driving the same (load, show, status --json, unload) in subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from xlb.dataplane import lifecycle, xdp
from xlb.dataplane.config import dump_toml, parse_config
from xlb.dataplane.manager import Dataplane
from xlb.lab import netns

NS = f"xlbt-{os.getpid()}"


@pytest.fixture
def veth_ns() -> Iterator[str]:
    netns.create(NS)
    try:
        netns.veth(NS, "xlb0", NS, "peer0", queues=4)
        yield NS
    finally:
        netns.remove(NS)


def lab_config(name: str, mode: str) -> dict:
    return {"instance": {"name": name, "interface": "xlb0", "netns": NS, "xdp_mode": mode,
                         "max_vips": 4, "max_backends": 16, "max_connections": 4096},
            "vip": [{"name": "dns", "address": "10.100.0.10", "port": 53, "protocol": "udp",
                     "backend": [{"address": "10.0.1.1"}, {"address": "10.0.1.2"}]}]}


def frames(ns: str) -> list[bytes]:
    dst = netns.mac(ns, "xlb0")
    src = netns.mac(ns, "peer0")
    return [bytes(Ether(src=src, dst=dst) / IP(src=f"198.51.100.{i % 200 + 1}", dst="10.100.0.10")
                  / UDP(sport=10000 + i, dport=53) / Raw(b"q" * 20)) for i in range(64)]


def wait_for(pred, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_attach_counts_real_frames_per_queue(veth_ns: str, roots: tuple[str, str],
                                             mode: str) -> None:
    pin_root, run_root = roots
    name = f"att-{mode}"
    cfg = parse_config(lab_config(name, mode))
    try:
        doc = lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
        assert doc["mode"] == mode
        state = xdp.query("xlb0", veth_ns)
        assert state.mode == mode and state.prog_id == doc["prog_id"]
        with Dataplane(name, pin_root, run_root) as dp:
            before = dp.counters()
            netns.send_frames(veth_ns, "peer0", frames(veth_ns), count=200).wait(timeout=30)
            assert wait_for(lambda: dp.counters().queues[:, 0].sum()
                            >= before.queues[:, 0].sum() + 200)
            after = dp.counters()
        per_queue = after.queues[:, 0] - before.queues[:, 0]
        assert per_queue.sum() >= 200
        assert per_queue[:4].sum() == per_queue.sum()  # a 4-queue veth: queues 0..3 only
        assert after.reasons[10, 0] - before.reasons[10, 0] == 200  # tx_encap
        assert after.vips[0, 0] - before.vips[0, 0] == 200
    finally:
        lifecycle.unload_instance(name, remove_pins=True, pin_root=pin_root, run_root=run_root)
    assert xdp.query("xlb0", veth_ns).mode is None


def test_mode_switch_replaces_attachment(veth_ns: str, roots: tuple[str, str]) -> None:
    pin_root, run_root = roots
    cfg = parse_config(lab_config("switch", "native"))
    try:
        lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
        doc = lifecycle.load_instance(cfg, mode="generic", pin_root=pin_root, run_root=run_root)
        assert doc["adopted"] and doc["mode"] == "generic"
        assert xdp.query("xlb0", veth_ns).mode == "generic"
    finally:
        lifecycle.unload_instance("switch", remove_pins=True, pin_root=pin_root,
                                  run_root=run_root)


def test_native_attach_to_a_jumbo_link_says_the_mtu_is_the_problem(
        roots: tuple[str, str]) -> None:
    """A link whose MTU is above one buffer (veth: 3506) refuses the single-buffer
    program in native mode: the error says so, and generic mode still works."""
    pin_root, run_root = roots
    netns.create(NS)
    try:
        netns.veth(NS, "xlb0", NS, "peer0", queues=1, mtu=4000)
        cfg = parse_config(lab_config("jumbo", "native"))
        with pytest.raises(xdp.AttachError, match=r"MTU is too large: native XDP takes frames "
                                                  r"of at most 3520 bytes.*--xdp-mode generic"):
            lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
        try:
            doc = lifecycle.load_instance(cfg, mode="generic", pin_root=pin_root,
                                          run_root=run_root)
            assert doc["mode"] == "generic"
        finally:
            lifecycle.unload_instance("jumbo", remove_pins=True, pin_root=pin_root,
                                      run_root=run_root)
    finally:
        netns.remove(NS)


def test_missing_interface_is_a_clear_error_and_leaves_nothing(roots: tuple[str, str]) -> None:
    pin_root, run_root = roots
    cfg = parse_config({**lab_config("nowhere", "native"),
                        "instance": {"name": "nowhere", "interface": "nosuch0"}})
    with pytest.raises(xdp.AttachError, match="nosuch0"):
        lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
    assert not os.path.exists(os.path.join(pin_root, "nowhere"))


def xlb(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xlb", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_load_status_show_unload(veth_ns: str, roots: tuple[str, str],
                                     tmp_path: pytest.TempPathFactory) -> None:
    pin_root, run_root = roots
    env = {**os.environ, "XLB_PIN_ROOT": pin_root, "XLB_RUN_ROOT": run_root}
    path = os.path.join(str(tmp_path), "lb.toml")
    with open(path, "w") as f:
        f.write(dump_toml(parse_config(lab_config("cli", "generic"))))
    try:
        r = xlb("dataplane", "load", "--config", path, "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["mode"] == "generic"
        netns.send_frames(veth_ns, "peer0", frames(veth_ns), count=50).wait(timeout=30)
        r = xlb("status", "--json", "--sample", "0.2", env=env)
        assert r.returncode == 0, r.stderr
        listed = {i["instance"]: i for i in json.loads(r.stdout)["instances"]}
        assert "cli" in listed  # other tests' instances may share this pin root
        r = xlb("status", "--json", "--instance", "cli", env=env)
        (inst,) = json.loads(r.stdout)["instances"]
        assert inst == {**listed["cli"], "totals": inst["totals"], "queues": inst["queues"],
                        "misses": inst["misses"]}
        assert inst["misses"]["udp"]["packets"] == 50  # 50 new flows: no entry yet
        assert inst["instance"] == "cli" and inst["attach"]["mode"] == "generic"
        assert inst["attach"]["ours"] and inst["totals"]["packets"] >= 50
        r = xlb("dataplane", "show", "--instance", "cli", env=env)
        assert r.returncode == 0 and "VIP dns" in r.stdout and "10.0.1.2" in r.stdout
        r = xlb("dataplane", "unload", "--instance", "cli", "--remove-pins", env=env)
        assert r.returncode == 2 and "--yes" in r.stderr  # no tty: refuses without --yes
        assert xdp.query("xlb0", veth_ns).mode == "generic"
        r = xlb("dataplane", "unload", "--instance", "cli", "--remove-pins", "--yes",
                "--json", env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["detached"]
        assert xdp.query("xlb0", veth_ns).mode is None
    finally:
        if os.path.isdir(os.path.join(pin_root, "cli")):
            lifecycle.unload_instance("cli", remove_pins=True, pin_root=pin_root,
                                      run_root=run_root)


def test_status_json_shows_non_syn_misses_per_second(veth_ns: str, roots: tuple[str, str],
                                                      tmp_path: pytest.TempPathFactory) -> None:
    """TCP packets of connections the table does not know (state lost) arrive steadily:
    `xlb status --json` counts them, and their rate, apart from SYNs."""
    pin_root, run_root = roots
    env = {**os.environ, "XLB_PIN_ROOT": pin_root, "XLB_RUN_ROOT": run_root}
    doc = lab_config("miss", "generic")
    doc["vip"] = [{"name": "web", "address": "10.100.0.10", "port": 80, "protocol": "tcp",
                   "backend": [{"address": "10.0.1.1"}, {"address": "10.0.1.2"}]}]
    dst, src = netns.mac(veth_ns, "xlb0"), netns.mac(veth_ns, "peer0")
    acks = [bytes(Ether(src=src, dst=dst) / IP(src="198.51.100.9", dst="10.100.0.10")
                  / TCP(sport=20000 + i, dport=80, flags="A")) for i in range(32)]
    lifecycle.load_instance(parse_config(doc), pin_root=pin_root, run_root=run_root)
    sender = netns.send_frames(veth_ns, "peer0", acks, count=0, rate=200)
    try:
        assert wait_for(lambda: _misses(env)["tcp_non_syn"]["packets"] > 0, timeout=20)
        misses = _misses(env, "--sample", "1")
        assert misses["tcp_non_syn"]["per_s"] > 20, misses
        assert misses["tcp_syn"] == {"packets": 0, "per_s": 0.0}, misses
    finally:
        sender.terminate()
        sender.wait(timeout=30)
        lifecycle.unload_instance("miss", remove_pins=True, pin_root=pin_root,
                                  run_root=run_root)


def _misses(env: dict[str, str], *args: str) -> dict:
    r = xlb("status", "--json", "--instance", "miss", *args, env=env)
    assert r.returncode == 0, r.stderr
    (inst,) = json.loads(r.stdout)["instances"]
    return inst["misses"]  # type: ignore[no-any-return]


def test_cli_bad_config_is_one_clear_error(tmp_path: pytest.TempPathFactory) -> None:
    path = os.path.join(str(tmp_path), "bad.toml")
    with open(path, "w") as f:
        f.write('[instance]\nname = "x"\ninterface = "eth0"\nring_size = 100\n'
                '[[vip]]\naddress = "10.1.1.1"\nport = 99999\nprotocol = "tcp"\n')
    r = xlb("dataplane", "load", "--config", path, env=dict(os.environ))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "ring_size: 100 is not prime" in r.stderr and "port: 99999" in r.stderr
