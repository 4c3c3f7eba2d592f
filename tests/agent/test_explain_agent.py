"""`explain` through a real agent: the answer's shape, the agent's names and word on each
backend, a drained backend keeping its established flow while a new one goes elsewhere,
read-only callers, bad parameters, and `xlb explain` on the command line.

Packets come from BPF_PROG_TEST_RUN of the agent's own pinned program over its own maps
(the instance's prog pin), so no traffic leaves the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.agent.test_agent import AgentProc, agent, as_nobody  # noqa: F401
from tests.helpers import REPO, XDP_TX, syn
from xlb.api import protocol as P
from xlb.dataplane import bpfsys
from xlb.dataplane.maps import pin_dir
from xlb.errors import InvalidParams


def send(a: AgentProc, packet: bytes) -> int:
    """Run one frame through the agent's program (its pinned one, on its maps)."""
    fd = bpfsys.obj_get(os.path.join(pin_dir("agt", a.env["XLB_PIN_ROOT"]), "prog"))
    try:
        return bpfsys.test_run(fd, packet)[0]
    finally:
        os.close(fd)


def test_a_drained_backend_keeps_its_flow_and_a_new_flow_goes_elsewhere(
        agent: AgentProc) -> None:  # noqa: F811
    flow = {"src": "198.51.100.7", "sport": 40000, "dst": "10.100.0.10", "dport": 80}
    with agent.client() as c:
        first = c.call("explain", **flow, syn=True)
        assert P.conforms(first, P.Explain) == []
        assert (first["vip"], first["path"], first["reason"]) == ("web", "maglev_syn",
                                                                  "tx_encap")
        assert send(agent, syn(sport=40000)) == XDP_TX  # the connection entry is made
        chosen = first["backend"]
        c.call("drain", address=chosen, vip="web")
        kept = c.call("explain", **flow)
        assert (kept["path"], kept["backend"], kept["reason"]) == ("conn", chosen, "tx_encap")
        assert kept["connection_age"] is not None and kept["connection_age"] < 60
        (line,) = [s["text"] for s in kept["steps"] if s["step"] == "backend"]
        assert "takes no new flows here" in line and "the agent says: drain" in line, line
        fresh = c.call("explain", **{**flow, "sport": 40001}, syn=True)
        other = "10.0.1.1" if chosen == "10.0.1.2" else "10.0.1.2"
        assert (fresh["path"], fresh["backend"]) == ("maglev_syn", other)
        shares = c.call("explain", src="198.51.100.7", dst="10.100.0.10", dport=80)
        assert P.conforms(shares, P.Explain) == [] and shares["shares"] == {other: 1.0}
        with pytest.raises(InvalidParams, match="not of one family"):
            c.call("explain", src="2001:db8::7", dst="10.100.0.10", dport=80)
        with pytest.raises(InvalidParams, match="'sctp' is not tcp or udp"):
            c.call("explain", **flow, protocol="sctp")


READ_ONLY_EXPLAIN = """
import json, sys
from xlb.api.client import AgentClient
print(json.dumps(AgentClient(sys.argv[1]).call("explain", src="198.51.100.9",
                                               dst="10.100.0.10", dport=53, sport=5353,
                                               protocol="udp")))
"""


def test_read_only_callers_may_ask_and_the_cli_prints_steps(
        agent: AgentProc) -> None:  # noqa: F811
    doc = json.loads(as_nobody(agent, READ_ONLY_EXPLAIN).stdout)
    assert (doc["vip"], doc["backend"], doc["path"]) == ("dns", "10.0.1.1", "maglev")
    r = subprocess.run([sys.executable, "-m", "xlb", "explain", "198.51.100.9:5353",
                        "10.100.0.10:53", "udp", "--socket", agent.socket],
                       capture_output=True, text=True, env=agent.env, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "198.51.100.9:5353 -> 10.100.0.10:53/udp"
    assert [ln.split()[0] for ln in lines[1:]] == ["vip", "service", "connection", "hash",
                                                   "maglev", "backend", "encap", "verdict"]
    r = subprocess.run([sys.executable, "-m", "xlb", "explain", "198.51.100.9", "10.100.0.99:80",
                        "--json", "--socket", agent.socket],
                       capture_output=True, text=True, env=agent.env, timeout=60, cwd=REPO)
    assert r.returncode == 0 and json.loads(r.stdout)["reason"] == "pass_not_vip", r.stderr
