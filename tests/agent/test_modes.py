"""Modes through a real agent: a VIP's forwarding mode (dsr | snat) and the XDP mode
(native | generic), switched live over the API, refused with the reason, audited, kept
over a restart; the attachment watch follows the new XDP mode.

Real agent processes on a veth pair (native XDP) or an ifb device (no native XDP) in a
namespace made here, private pin/run/state roots (tests/agent/test_agent.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.agent.test_agent import (
    NS,
    AgentProc,
    alarm_events,
    as_nobody,
    pin_ids,
    running_agent,
)
from tests.helpers import wait_for
from xlb.api import protocol as P
from xlb.dataplane import lifecycle, xdp
from xlb.dataplane import structs as S
from xlb.dataplane.config import parse_config
from xlb.dataplane.manager import Dataplane, key_label
from xlb.errors import AttachError, RefusedError
from xlb.lab import netns

POOL = 'snat_pool_v4 = "10.200.0.0/30"'


@pytest.fixture
def pooled(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """An agent with an IPv4 SNAT pool (its VIPs are IPv4), no health checks."""
    yield from running_agent(roots, "none", instance=POOL)


@pytest.fixture
def agent(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """An agent without a SNAT pool, on a veth (native XDP), no health checks."""
    yield from running_agent(roots, "none")


@pytest.fixture
def no_native(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """An agent on an ifb device, whose driver has no native XDP: attached generic."""
    def ifb(_tmp: str) -> None:
        for cmd in (("link", "del", "xlb0"), ("link", "add", "xlb0", "type", "ifb"),
                    ("link", "set", "xlb0", "up")):
            subprocess.run(["ip", "-n", NS, *cmd], check=True)

    yield from running_agent(roots, "none", before_start=ifb,
                             instance='xdp_mode = "generic"')


def flags(agent: AgentProc, vip: str = "10.100.0.10:80/tcp") -> int:
    """The VIP's flags as the data plane has them (XLB_VIP_F_SNAT: new flows SNAT)."""
    with Dataplane("agt", agent.env["XLB_PIN_ROOT"], agent.env["XLB_RUN_ROOT"]) as dp:
        return next(int(m.flags) for k, m in dp.vip_entries().values() if key_label(k) == vip)


def status(agent: AgentProc) -> P.Status:
    with agent.client() as c:
        return c.call("status")  # type: ignore[no-any-return]


def vip_of(st: P.Status, name: str = "web") -> P.Vip:
    return next(v for v in st["vips"] if v["name"] == name)


def test_a_vip_switches_dsr_snat_dsr_applied_audited(pooled: AgentProc) -> None:
    st = status(pooled)
    assert vip_of(st)["mode"] == "dsr" and st["lb_mode"] == "dsr"
    assert st["snat"] == {"pool_v4": "10.200.0.0/30", "pool_v6": None, "port_min": 1024,
                          "port_max": 65535, "table_size": 4096}
    assert flags(pooled) & S.XLB_VIP_F_SNAT == 0
    with pooled.client() as c:
        r = c.call("mode", vip="web", mode="snat")
        assert P.conforms(r, P.ChangeResult) == []
        assert (r["before"]["web"]["mode"], r["after"]["web"]["mode"]) == ("dsr", "snat")
        st = c.call("status")
        assert vip_of(st)["mode"] == "snat" and vip_of(st, "dns")["mode"] == "dsr"
        assert st["lb_mode"] == "dsr+snat"
        assert {v["name"]: v["mode"] for v in c.call("vips")} == {"web": "snat", "dns": "dsr"}
        assert flags(pooled) & S.XLB_VIP_F_SNAT
        assert P.conforms(vip_of(st)["modes"], P.VipModes) == []
        r = subprocess.run([sys.executable, "-m", "xlb", "status", "--instance", "agt",
                            "--sample", "0", "--json"], capture_output=True, text=True,
                           env=pooled.env, timeout=60)  # from the pinned maps: no agent
        assert r.returncode == 0, r.stderr
        (inst,) = json.loads(r.stdout)["instances"]
        assert {v["name"]: v["mode"] for v in inst["vips"]} == {"web": "snat", "dns": "dsr"}
        c.call("mode", vip="web", mode="dsr")
        assert vip_of(c.call("status"))["mode"] == "dsr"
        assert flags(pooled) & S.XLB_VIP_F_SNAT == 0
        entries = c.call("audit", n=5)
    assert [(e["action"], e["result"]) for e in entries] == [("mode", "ok"), ("mode", "ok")]
    assert [P.entry_text(e) for e in entries] == ["web: mode dsr → snat", "web: mode snat → dsr"]
    assert "root (uid 0) mode web: web: mode dsr → snat" in pooled.log()


def test_a_mode_switch_is_refused_with_the_reason_and_changes_nothing(
        agent: AgentProc) -> None:
    """No SNAT pool: the config rules' words; an unknown VIP; a read-only caller. Each
    refusal is in the audit log; the VIP stays DSR."""
    with agent.client() as c:
        with pytest.raises(RefusedError, match="snat needs instance.snat_pool_v4"):
            c.call("mode", vip="web", mode="snat")
        with pytest.raises(RefusedError, match="no VIP named 'nope'"):
            c.call("mode", vip="nope", mode="snat")
    out = as_nobody(agent, READONLY_MODE).stdout
    assert json.loads(out)[0] == -32001
    st = status(agent)
    assert vip_of(st)["mode"] == "dsr" and st["lb_mode"] == "dsr"
    assert flags(agent) & S.XLB_VIP_F_SNAT == 0
    with agent.client() as c:
        results = [(e["user"], e["result"]) for e in c.call("audit", n=5)]
    assert results[0][1].startswith("refused: VIP web cannot use snat: ")
    assert results[1][1].startswith("refused: no VIP named 'nope'")
    assert results[2] == ("nobody", "refused: read-only")


READONLY_MODE = """
import json, sys
from xlb.api.client import AgentClient
from xlb.errors import XlbError
try:
    AgentClient(sys.argv[1]).call("mode", vip="web", mode="snat")
    print(json.dumps(["allowed"]))
except XlbError as e:
    print(json.dumps([e.rpc_code, str(e)]))
"""


def test_modes_are_kept_over_a_restart(pooled: AgentProc) -> None:
    """The VIP's mode and the XDP mode an operator chose: the restarted agent attaches
    generic and keeps the VIP in SNAT, with the same maps."""
    ids = pin_ids(pooled)
    with pooled.client() as c:
        c.call("mode", vip="web", mode="snat")
        c.call("xdp_mode", mode="generic")
    pooled.stop()
    assert xdp.query("xlb0", NS).mode == "generic"
    pooled.start()
    st = status(pooled)
    assert vip_of(st)["mode"] == "snat" and st["xdp_mode"] == "generic"
    assert xdp.query("xlb0", NS).mode == "generic" and pin_ids(pooled) == ids
    assert flags(pooled) & S.XLB_VIP_F_SNAT


def test_xdp_switches_native_generic_native(agent: AgentProc) -> None:
    """The same program, re-attached in the other mode each time, with a measured gap;
    the same mode again touches nothing; no alarm from the watch meanwhile."""
    before = xdp.query("xlb0", NS)
    assert before.mode == "native"
    st = status(agent)
    assert st["xdp_mode"] == "native" and st["xdp_native"] is True
    with agent.client() as c:
        r = c.call("xdp_mode", mode="generic")
        assert P.conforms(r, P.XdpModeChange) == []
        assert (r["interface"], r["before"], r["after"]) == ("xlb0", "native", "generic")
        assert 0 < r["gap_seconds"] < 1
        now = xdp.query("xlb0", NS)
        assert now.mode == "generic" and now.prog_id == before.prog_id
        wait_for(lambda: c.call("status")["xdp_mode"] == "generic", "the snapshot says so")
        same = c.call("xdp_mode", mode="generic")
        assert same["before"] == same["after"] == "generic" and same["gap_seconds"] == 0
        r = c.call("xdp_mode", mode="native")
        assert (r["before"], r["after"]) == ("generic", "native")
        assert xdp.query("xlb0", NS).mode == "native"
        time.sleep(3 * 0.25)  # a few ticks: the watch looked
        st = c.call("status")
        assert st["alarms"] == [] and st["xdp_mode"] == "native"
        entries = c.call("audit", n=5)
    assert [P.entry_text(e) for e in entries] == [
        f"XDP on xlb0 (netns {NS}): mode native → generic",
        f"XDP on xlb0 (netns {NS}): mode generic → native"]
    assert "xdp_mode: XDP on xlb0" in agent.log()


def test_the_watch_restores_the_new_xdp_mode(agent: AgentProc) -> None:
    """After a switch to generic, the program detached by hand comes back in generic
    (the mode the operator chose), not in the mode the agent started in."""
    with agent.client() as c:
        c.call("xdp_mode", mode="generic")
        stream = agent.client()
        stream.call("subscribe")
        subprocess.run(["ip", "-n", NS, "link", "set", "dev", "xlb0", "xdpgeneric", "off"],
                       check=True)
        (event,) = alarm_events(stream, lambda e: e["what"] == "attach")
        stream.close()
    assert "re-attached (generic XDP" in event["message"]
    assert xdp.query("xlb0", NS).mode == "generic"


def test_native_is_refused_where_the_driver_has_none(no_native: AgentProc) -> None:
    """Refused before anything is detached: the program stays attached, generic, with
    the same id; the snapshot says the driver cannot; the attempt is audited."""
    before = xdp.query("xlb0", NS)
    assert before.mode == "generic"
    st = status(no_native)
    assert st["xdp_native"] is False and st["xdp_mode"] == "generic"
    with no_native.client() as c:
        with pytest.raises(RefusedError, match="driver has no native XDP"):
            c.call("xdp_mode", mode="native")
        (entry,) = c.call("audit", n=1)
    assert entry["action"] == "xdp_mode" and entry["result"].startswith("refused: native XDP")
    after = xdp.query("xlb0", NS)
    assert (after.mode, after.prog_id) == ("generic", before.prog_id)
    assert status(no_native)["xdp_mode"] == "generic"


def test_a_failed_switch_puts_the_program_back_in_its_old_mode(
        roots: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel cannot say whether the driver has native XDP (None), the switch
    is tried; the driver refuses the attach; the program is attached generic again, the
    same one, and the error says so."""
    pin_root, run_root = roots
    ns = f"xlbsw-{os.getpid()}"
    cfg = parse_config({"instance": {"name": "sw", "interface": "sw0", "netns": ns,
                                     "xdp_mode": "generic", "max_vips": 2,
                                     "max_backends": 4, "max_connections": 1024},
                        "vip": []})
    netns.create(ns)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "sw0", "type", "ifb"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "sw0", "up"], check=True)
        lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
        before = xdp.query("sw0", ns)
        assert before.mode == "generic"
        monkeypatch.setattr(xdp, "native_supported", lambda *_a: None)
        with pytest.raises(AttachError, match="attached in generic mode again, as before"):
            lifecycle.switch_xdp_mode("sw", "native", pin_root, run_root)
        after = xdp.query("sw0", ns)
        assert (after.mode, after.prog_id) == ("generic", before.prog_id)
        assert lifecycle.read_state("sw", run_root)["mode"] == "generic"
    finally:
        if os.path.isdir(os.path.join(pin_root, "sw")):
            lifecycle.unload_instance("sw", remove_pins=True, pin_root=pin_root,
                                      run_root=run_root)
        netns.remove(ns)


def test_snat_counters_reach_the_snapshot_and_metrics(pooled: AgentProc) -> None:
    """The data plane's snat_stats row of a VIP (written here as its traffic would leave
    it, growing each 0.1 s) become the VIP's per-mode rates, its no-port total and the
    SNAT metrics; DSR is the rest of the VIP's packets."""
    import urllib.request

    with pooled.client() as c:
        c.call("mode", vip="web", mode="snat")
    with Dataplane("agt", pooled.env["XLB_PIN_ROOT"], pooled.env["XLB_RUN_ROOT"]) as dp:
        vid = next(m.vip_id for k, m in dp.vip_entries().values()
                   if key_label(k) == "10.100.0.10:80/tcp")
        stats, vips = dp.maps["snat_stats"], dp.maps["vip_stats"]
        deadline = time.monotonic() + 10
        n = 0
        with pooled.client() as c:
            while True:
                n += 1
                row = (S.SnatStats * stats.ncpu)()
                row[0].packets, row[0].bytes, row[0].reply_packets = 100 * n, 6000 * n, 80 * n
                row[0].reply_bytes, row[0].translations, row[0].no_port = 5000 * n, 10 * n, 3
                stats.set(vid, row)
                both = (S.Traffic * vips.ncpu)()
                both[0].packets, both[0].bytes = 150 * n, 9000 * n  # 50 DSR packets more
                vips.set(vid, both)
                web = vip_of(c.call("status"))
                if web["modes"]["snat_pps"] > 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            port = c.call("status")["metrics_port"]
    m = web["modes"]
    assert m["snat_pps"] > 0 and m["dsr_pps"] > 0 and m["no_port"] == 3
    assert abs(m["reply_pps"] / m["snat_pps"] - 0.8) < 0.01
    assert abs(m["translations_per_s"] / m["snat_pps"] - 0.1) < 0.01
    assert abs(m["dsr_pps"] / m["snat_pps"] - 0.5) < 0.05
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'xlb_snat_no_port_total{vip="web"} 3.0' in text
    assert 'xlb_vip_mode{mode="snat",vip="web"} 1.0' in text
    assert 'xlb_xdp_mode{mode="native"} 1.0' in text
    assert re.search(r'xlb_snat_packets_total\{direction="reply",vip="web"\} [1-9]', text)
    r = subprocess.run([sys.executable, "-m", "xlb", "backends", "--vip", "web", "--socket",
                        pooled.socket], capture_output=True, text=True, env=pooled.env,
                       timeout=60)
    assert r.returncode == 0 and "(10.100.0.10:80/tcp, snat)" in r.stdout
    assert "3 dropped without a free port" in r.stdout
