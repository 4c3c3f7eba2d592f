"""`xlb mode`, `xlb xdp-mode`, the mode in `xlb vips`/`xlb backends`, their completion,
and the modes' metrics: against the agent test double (the protocol's shapes), exit codes
(refused 5, usage 2), promtool-clean metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest

from tests.agent_double import AgentDouble
from tests.helpers import promtool_check, samples
from tests.helpers import run_cli as xlb
from tests.unit.test_completion import complete, environment
from xlb import cli
from xlb.agent.metrics import Counted, Published, registry_of
from xlb.api import protocol as P
from xlb.dataplane import structs as S
from xlb.dataplane.manager import Counters

Capsys = pytest.CaptureFixture[str]




def test_mode_switches_a_vip_and_says_what_new_flows_do(double: AgentDouble,
                                                        capsys: Capsys) -> None:
    code, out, _ = xlb(double, capsys, "mode", "web", "snat", "--yes")
    assert code == 0 and double.vips[0]["mode"] == "snat"
    assert out.splitlines()[0] == "mode web: done; web: mode dsr → snat"
    assert "replies come back through it; established flows keep the mode" in out
    code, out, _ = xlb(double, capsys, "mode", "web", "snat", "--yes")
    assert code == 0 and out == "mode web: already snat; nothing changed\n"
    code, out, _ = xlb(double, capsys, "mode", "web", "dsr", "--yes", "--json")
    doc = json.loads(out)
    assert code == 0 and P.conforms(doc, P.ChangeResult) == []
    assert doc["after"]["web"]["mode"] == "dsr" and double.vips[0]["mode"] == "dsr"
    assert [c for c, _ in double.calls].count("mode") == 3


def test_mode_asks_first_and_refusals_change_nothing(tmp_path: Path, capsys: Capsys) -> None:
    d = AgentDouble(str(tmp_path / "lb1.sock"), snat_pool_v4=None).start()
    try:
        code, _, err = xlb(d, capsys, "mode", "web", "snat")  # no terminal, no --yes
        assert code == 2 and "add --yes" in err
        code, _, err = xlb(d, capsys, "mode", "web", "snat", "--yes")
        assert code == 5 and "snat needs instance.snat_pool_v4" in err
        assert len(err.splitlines()) == 1
        with pytest.raises(SystemExit) as e:
            cli.main(["mode", "web", "nat", "--yes", "--socket", d.path])
        assert e.value.code == 2 and "invalid choice: 'nat'" in capsys.readouterr().err
        assert d.vips[0]["mode"] == "dsr"
        assert [c for c, _ in d.calls if c == "mode"] == ["mode"]  # only the refused one
    finally:
        d.stop()


def test_xdp_mode_shows_and_switches(double: AgentDouble, capsys: Capsys) -> None:
    code, out, _ = xlb(double, capsys, "xdp-mode")
    assert (code, out) == (0, "XDP on veth-lb1: native (the driver can run native XDP)\n")
    code, out, _ = xlb(double, capsys, "xdp-mode", "generic", "--yes")
    assert code == 0 and double.xdp_mode == "generic"
    assert out.startswith("XDP on veth-lb1: native → generic; 4.2 ms without a program")
    code, out, _ = xlb(double, capsys, "xdp-mode", "generic")  # nothing to ask: no change
    assert (code, out) == (0, "XDP on veth-lb1: generic already; nothing changed\n")
    code, out, _ = xlb(double, capsys, "xdp-mode", "native", "--yes", "--json")
    assert code == 0 and P.conforms(json.loads(out), P.XdpModeChange) == []


def test_xdp_mode_native_refused_where_the_driver_has_none(tmp_path: Path,
                                                            capsys: Capsys) -> None:
    d = AgentDouble(str(tmp_path / "lb1.sock"), xdp_mode="generic", xdp_native=False).start()
    try:
        code, out, _ = xlb(d, capsys, "xdp-mode", "--json")
        assert code == 0 and json.loads(out) == {"interface": "veth-lb1",
                                                 "xdp_mode": "generic", "xdp_native": False}
        code, out, _ = xlb(d, capsys, "xdp-mode")
        assert "generic (the driver has no native XDP (generic only))" in out
        code, _, err = xlb(d, capsys, "xdp-mode", "native", "--yes")
        assert code == 5 and "no native XDP" in err and d.xdp_mode == "generic"
    finally:
        d.stop()


def test_vips_and_backends_show_each_vips_mode(double: AgentDouble) -> None:
    """(The double answers `status` only: its snapshot's VIPs through the commands' text.)"""
    from xlb.cli import backends, vips

    double.vips[0]["mode"] = "snat"
    snap = double.snapshot()["vips"]
    summaries: list[Any] = [{k: dict(v)[k] for k in P.VipSummary.__annotations__}
                            for v in snap]
    web, dns = vips.text(summaries).splitlines()
    assert web.split()[2] == "snat" and dns.split()[2] == "dsr"
    lines = backends.text(snap).splitlines()
    assert lines[0].startswith("web (198.19.0.10:80/tcp, snat): ")
    assert lines[1].startswith("  by mode: dsr 0 pps, snat ")
    assert any(line.startswith("dns (198.19.0.11:53/udp, dsr): ") for line in lines)
    assert sum("by mode" in line for line in lines) == 1  # DSR only: no by-mode line


def test_completion_offers_vips_and_modes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    d = AgentDouble(str(run / "lb1.sock")).start()
    try:
        env = environment(tmp_path, run)
        assert complete(env, "xlb mo", "xlb mode ", "xlb mode web ", "xlb xdp-mode ",
                        "xlb xd") == [["mode"], ["dns", "web"], ["dsr", "snat"],
                                      ["generic", "native"], ["xdp-mode"]]
    finally:
        d.stop()


def test_modes_metrics() -> None:
    """Per VIP: the mode as a 1/0 gauge per mode, SNAT packets by direction, translations,
    no-port drops; the XDP mode; promtool agrees."""
    snap = {"xdp_mode": "generic", "lb_mode": "dsr+snat", "vips": [
        {"name": "web", "mode": "snat", "total": 1, "healthy": 1, "panic": False,
         "active_connections": 0, "backends": []},
        {"name": "dns", "mode": "dsr", "total": 1, "healthy": 1, "panic": False,
         "active_connections": 0, "backends": []}]}
    snat = np.array([[0] * 6, [0] * 6, [10, 1000, 8, 800, 2, 1], [0] * 6], np.uint64)
    counters = Counters(1.0, np.zeros((1, 7), np.uint64), np.zeros((4, 2), np.uint64),
                        np.zeros((4, 3), np.uint64), np.zeros((len(S.Reason), 2), np.uint64),
                        snat=snat)
    counted = Counted(counters, {"web": 2, "dns": 1}, {})
    text = generate_latest(registry_of(lambda: Published(snap, counted))).decode()  # type: ignore[arg-type]
    assert promtool_check(text) == ""
    got = samples(text)
    assert got[("xlb_vip_mode", (("mode", "snat"), ("vip", "web")))] == 1
    assert got[("xlb_vip_mode", (("mode", "dsr"), ("vip", "web")))] == 0
    assert got[("xlb_vip_mode", (("mode", "dsr"), ("vip", "dns")))] == 1
    assert got[("xlb_xdp_mode", (("mode", "generic"),))] == 1
    assert got[("xlb_xdp_mode", (("mode", "native"),))] == 0
    web = ("vip", "web")
    assert got[("xlb_snat_packets_total", (("direction", "forward"), web))] == 10
    assert got[("xlb_snat_packets_total", (("direction", "reply"), web))] == 8
    assert got[("xlb_snat_bytes_total", (("direction", "reply"), web))] == 800
    assert got[("xlb_snat_translations_total", (web,))] == 2
    assert got[("xlb_snat_no_port_total", (web,))] == 1
    assert got[("xlb_snat_packets_total", (("direction", "forward"), ("vip", "dns")))] == 0
