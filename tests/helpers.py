"""What several test modules share: the packet tests' config and data plane under test,
packet builders, and waiting for a condition. Fixtures live in conftest.py."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import checksum

from xlb.dataplane import bpfsys, loader
from xlb.dataplane import structs as S
from xlb.dataplane.config import parse_config
from xlb.dataplane.manager import Dataplane, geometry_of

REPO = Path(__file__).resolve().parent.parent  # the repository's top

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = 0, 1, 2, 3

CLIENT_MAC = "02:00:00:00:00:01"
LB_MAC = "02:00:00:00:00:02"


def base_config(name: str = "pkt", **instance: Any) -> dict[str, Any]:
    """The packet tests' config: one VIP per encapsulation family and then some."""
    return {
        "instance": {"name": name, "interface": "lo", "max_vips": 8, "max_backends": 64,
                     "max_connections": 65536, **instance},
        "vip": [
            {"name": "web", "address": "10.100.0.10", "port": 80, "protocol": "tcp",
             "backend": [{"address": "10.0.1.1"}, {"address": "10.0.1.2"},
                         {"address": "10.0.1.3"}]},
            {"name": "dns", "address": "10.100.0.10", "port": 53, "protocol": "udp",
             "backend": [{"address": "10.0.1.1"}, {"address": "10.0.1.2"}]},
            {"name": "anyport", "address": "10.100.0.20", "port": 0, "protocol": "tcp",
             "backend": [{"address": "10.0.1.4"}]},
            {"name": "v6-v6", "address": "2001:db8::10", "port": 80, "protocol": "tcp",
             "backend": [{"address": "2001:db8:1::1"}]},
            {"name": "v6-v4", "address": "2001:db8::10", "port": 81, "protocol": "tcp",
             "backend": [{"address": "10.0.1.5"}]},
            {"name": "v4-v6", "address": "10.100.0.30", "port": 443, "protocol": "tcp",
             "backend": [{"address": "fd00:1::5"}]},
            {"name": "empty", "address": "10.100.0.40", "port": 80, "protocol": "tcp",
             "backend": [{"address": "10.0.1.6", "state": "drained"}]},
        ],
    }


class DataplaneUnderTest:
    """A loaded (not attached) data plane driven by BPF_PROG_TEST_RUN."""

    def __init__(self, loaded: loader.Loaded, pin_root: str, run_root: str):
        self.loaded = loaded
        self.pin_root = pin_root
        self.run_root = run_root
        self.dp = Dataplane(loaded.instance, pin_root, run_root)

    def apply(self, cfg: dict[str, Any]) -> Any:
        return self.dp.apply(parse_config(cfg))

    def run(self, packet: bytes) -> tuple[int, bytes]:
        # room for the frame grown by an outer header, whatever its size
        action, out, _ = bpfsys.test_run(self.loaded.prog_fd, packet,
                                         out_size=max(4096, len(packet) + 64))
        return action, out

    def reasons(self) -> dict[str, int]:
        r = self.dp.counters().reasons
        return {x.label: int(r[x, 0]) for x in S.Reason}

    def misses(self) -> dict[str, int]:
        m = self.dp.counters().misses
        return {x.label: int(m[x, 0]) for x in S.Miss}

    def backend_address(self, backend_id: int) -> str:
        b = self.dp.backend_entries()[backend_id]
        return str(S.unpack_addr(b.addr, b.family))

    def conns(self) -> int:
        return len(self.dp.maps["conns"].keys())

    def flush_conns(self) -> None:
        m = self.dp.maps["conns"]
        for k in m.keys():
            m.delete(k)


@contextmanager
def one_cpu() -> Iterator[int]:
    """Run on one CPU (returned): test runs then use that CPU's per-CPU state only (its LRU
    list, its new-entry window)."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def dataplane_under_test(instance: str, cfg: dict[str, Any], roots: tuple[str, str],
                         **load: Any) -> Iterator[DataplaneUnderTest]:
    """The data plane built for `cfg` (geometry), loaded under the test's pin root and
    closed after; `load`: loader.load's keywords."""
    pin_root, run_root = roots
    loaded = loader.load(instance, geometry_of(parse_config(cfg)), pin_root, **load)
    d = DataplaneUnderTest(loaded, pin_root, run_root)
    try:
        yield d
    finally:
        d.dp.close()


CLIENT = "198.51.100.7"
CLIENT6 = "2001:db8:ffff::7"
WEB_BACKENDS = {"10.0.1.1", "10.0.1.2", "10.0.1.3"}
ENCAP_V4 = ipaddress.ip_network("172.16.0.0/16")
ENCAP_V6 = ipaddress.ip_network("fd00:5f1b::/64")


def eth() -> Ether:
    return Ether(src=CLIENT_MAC, dst=LB_MAC)


def syn(sport: int = 40000, dst: str = "10.100.0.10", dport: int = 80, src: str = CLIENT,
        flags: str = "S") -> bytes:
    return bytes(eth() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags))


def syn6(sport: int = 40000, dport: int = 80, payload: bytes = b"") -> bytes:
    return bytes(eth() / IPv6(src=CLIENT6, dst="2001:db8::10")
                 / TCP(sport=sport, dport=dport, flags="S") / Raw(payload))


def outer_v4(out: bytes, l2: int = 14) -> tuple[IP, bytes]:
    """The outer IPv4 header (checked valid) and the inner packet bytes."""
    hdr = out[l2:l2 + 20]
    assert checksum(hdr) == 0, "outer IPv4 checksum invalid"
    return IP(hdr), out[l2 + 20:]


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 5.0,
             every: float = 0.05) -> None:
    """Poll `cond` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


async def until(cond: Callable[[], Any], pilot: Any, timeout: float = 5.0) -> None:
    """Let a Textual app (driven by `pilot`) run until cond() holds; fail after timeout."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {cond}")
        await pilot.pause(0.05)


class ForeignXdp:
    """A tiny XDP_PASS program of another tool (not xlb's), loaded by BCC under its own
    name; it stays loaded while this object lives."""

    def __init__(self, name: str = "fw_pass"):
        from bcc import BPF

        self.name = name
        self._bpf = BPF(text=f"int {name}(struct xdp_md *ctx) {{ return XDP_PASS; }}".encode())
        self.fd: int = self._bpf.load_func(name.encode(), BPF.XDP).fd
        info = bpfsys.prog_info(self.fd)
        self.id, self.tag = int(info.id), bytes(info.tag).hex()


NOBODY = 65534  # nobody:nogroup on Debian
AGENT_CAPS = "+bpf,+perfmon,+net_admin,+sys_admin"  # sys_admin: the interface is in a netns


def setpriv(caps: str = AGENT_CAPS, uid: int = NOBODY) -> tuple[str, ...]:
    """A command prefix: run as `uid` (and its gid) with only `caps` effective (ambient
    capabilities survive the exec of a program without file capabilities)."""
    return ("setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}", "--")


# -- the metrics exposition --------------------------------------------------------------
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Samples of one scrape: (sample name, sorted labels) -> value."""


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()  # type: ignore[no-any-return]


def samples(text: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def promtool_check(text: str) -> str:
    """What `promtool check metrics` finds wrong with an exposition ("" = nothing). Debian's
    prometheus package ships promtool; scripts/bootstrap installs it."""
    import subprocess

    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    return "" if r.returncode == 0 and not r.stdout.strip() else (r.stdout + r.stderr)


def run_cli(d: Any, capsys: Any, *argv: str) -> tuple[int, str, str]:
    """`xlb ARGV --socket` against an agent (double) at d.path: exit code, stdout, stderr."""
    from xlb import cli

    code = cli.main([*argv, "--socket", d.path])
    out, err = capsys.readouterr()
    return code, out, err
