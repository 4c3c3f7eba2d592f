"""The probes under the agent: attached at start, read each tick into the snapshot,
costed by the kernel's run-time statistics (turned off again when the agent ends),
attached and detached through the API by operators only, audited, and exported."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from tests.agent.test_agent import NS, AgentProc, as_nobody, running_agent
from tests.helpers import wait_for
from xlb.api import protocol as P
from xlb.api.client import AgentClient
from xlb.dataplane import bpfsys
from xlb.errors import ErrorCode, InvalidParams
from xlb.lab import netns
from xlb.probes import kernel

pytestmark = pytest.mark.root


@pytest.fixture
def agent(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """An agent with the [probes] defaults (every probe on, tcp auto), all attached."""
    for a in running_agent(roots, "none", probes=""):
        with a.client() as c:
            wait_for(lambda: [p["state"] for p in c.call("status")["kernel"]["probes"]]
                     == ["attached"] * len(P.PROBES),
                     "the probes attached at start, in a snapshot", timeout=180, every=0.5)
        yield a


def probe(c: AgentClient, name: str) -> P.Probe:
    return next(p for p in c.call("probes") if p["name"] == name)


def frames(n: int) -> list[bytes]:
    """n frames the XDP program passes (not to a VIP), different source ports."""
    return [bytes(Ether(src="02:00:00:00:00:11", dst="02:00:00:00:00:12")
                  / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=1000 + i, dport=7))
            for i in range(n)]


def send(n: int) -> None:
    proc = netns.send_frames(NS, "peer0", frames(n), n)
    assert proc.wait(timeout=60) == 0


def own_runs(prog_id: int) -> int:
    info = bpfsys.prog_info_by_id(prog_id)
    assert info is not None
    return int(info.run_cnt)


def stats_sysctl() -> str:
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        return f.read().strip()


def test_the_snapshot_and_the_commands_carry_the_probes_figures(agent: AgentProc) -> None:
    with agent.client() as c:
        st = c.call("status")
        assert P.conforms(st, P.Status) == []
        states = {p["name"]: p["state"] for p in st["kernel"]["probes"]}
        assert states == dict.fromkeys(P.PROBES, "attached")
        assert P.conforms(c.call("probes"), list[P.Probe]) == []

    def xlb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "xlb", *args, "--socket", agent.socket],
                              capture_output=True, text=True, env=agent.env, timeout=60)

    r = xlb("probes")
    assert r.returncode == 0 and r.stdout.startswith("drops    tracepoint     attached"), r.stdout
    if not kernel.has_kprobes()[0]:  # the fallback, said where people look
        assert "using tracepoint tcp:tcp_send_reset" in r.stdout
    assert [p["name"] for p in json.loads(xlb("probes", "--json").stdout)] == list(P.PROBES)
    r = xlb("drops", "--json")
    doc = json.loads(r.stdout)
    assert set(doc) == {"dataplane", "kernel", "xdp_errors"}
    assert all(P.conforms(d, P.KernelDrop) == [] for d in doc["kernel"])
    r = xlb("drops")
    assert "kernel drops by reason" in r.stdout and "XDP exceptions" in r.stdout
    r = xlb("probes", "detach", "napi", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["probe"]["state"] == "off"


def test_xlb_program_run_time_and_stats_off_after_the_agent(agent: AgentProc) -> None:
    assert stats_sysctl() == "0"
    with agent.client() as c:
        prog_id = agent_prog(c)
        before = own_runs(prog_id)
        send(400)

        def ours() -> P.Program | None:
            k = c.call("status")["kernel"]
            return next((p for p in k["programs"] if p["id"] == prog_id
                         and p["runs"] - before >= 400), None)

        wait_for(ours, "400 runs of xlb's XDP program in the snapshot", timeout=20)
        prog = ours()
        assert prog is not None and prog["owner"] == "xlb"
        assert 400 <= prog["runs"] - before <= 420, "runs ≈ packets sent"
        assert 5 < prog["run_time_ns"] / prog["runs"] < 50_000, "a plausible ns per run"
        probes = {p["name"]: p for p in c.call("probes")}
        assert probes["runtime"]["state"] == "attached"
        assert probes["drops"]["ns_per_run"] is not None
    agent.stop()
    assert stats_sysctl() == "0"  # never written by the agent...
    after = own_runs(prog_id)
    send(200)  # ...and the statistics it held are off: the program still runs, uncounted
    assert own_runs(prog_id) == after


def agent_prog(c: AgentClient) -> int:
    """The id of xlb's XDP program, as the runtime probe lists it."""
    def found() -> list[int]:
        return [p["id"] for p in c.call("status")["kernel"]["programs"] if p["owner"] == "xlb"]

    wait_for(found, "xlb's program in the list", timeout=10)
    return found()[0]


def test_attach_and_detach_are_audited_and_for_operators_only(agent: AgentProc) -> None:
    with agent.client() as c:
        r = c.call("probe_detach", name="napi")
        assert r["changed"] and r["probe"]["state"] == "off"
        assert probe(c, "napi")["reason"] == "detached by an operator"
        assert c.call("probe_detach", name="napi")["changed"] is False
        r = c.call("probe_attach", name="napi")
        assert r["changed"] and r["probe"]["state"] == "attached"
        with pytest.raises(InvalidParams, match="no probe 'bogus'"):
            c.call("probe_attach", name="bogus")
        entries = [(e["action"], e["user"], e["before"], e["after"], e["result"])
                   for e in c.call("audit", n=10) if e["action"].startswith("probe_")]
        napi = "probe napi"
        assert entries == [
            ("probe_detach", "root", {napi: {"state": "attached"}}, {napi: {"state": "off"}},
             "ok"),
            ("probe_detach", "root", {napi: {"state": "off"}}, {napi: {"state": "off"}}, "ok"),
            ("probe_attach", "root", {napi: {"state": "off"}}, {napi: {"state": "attached"}},
             "ok")]
    out = as_nobody(agent, READONLY)
    result = json.loads(out.stdout)
    assert result["probes"] == len(P.PROBES), "read-only peers see the probes"
    assert result["detach"][0] == ErrorCode.READ_ONLY
    with agent.client() as c:
        assert probe(c, "drops")["state"] == "attached"
        refused = c.call("audit", n=1)[0]
        assert (refused["user"], refused["action"], refused["result"]) == (
            "nobody", "probe_detach", "refused: read-only")


READONLY = """
import json, sys
from xlb.api.client import AgentClient
from xlb.errors import XlbError
c = AgentClient(sys.argv[1])
out = {"probes": len(c.call("probes"))}
try:
    c.call("probe_detach", name="drops")
    out["detach"] = "allowed"
except XlbError as e:
    out["detach"] = [e.rpc_code, str(e)]
print(json.dumps(out))
"""


def test_the_probes_figures_are_metrics(agent: AgentProc) -> None:
    with agent.client() as c:
        port = c.call("status")["metrics_port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'xlb_probe_attached{kind="tracepoint",probe="drops"} 1.0' in text
    assert "# TYPE xlb_kernel_drops_total counter" in text
    assert "# TYPE xlb_bpf_program_runs_total counter" in text
