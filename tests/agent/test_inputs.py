"""The agent's inputs, over its API: an address in any spelling finds its backend and a
non-address is invalid params; a Maglev ring too small for a VIP's backends is refused at
run time as in the config file. Nothing a refused request asks for changes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.test_agent import AgentProc, backends, running_agent
from tests.helpers import REPO
from xlb.errors import InvalidParams

V6 = "fd00:5f1b:18:2::11"
SPELLINGS = ["FD00:5F1B:18:2::11", "fd00:5f1b:18:2:0:0:0:11", "fd00:5f1b:0018:0002::0011"]


@pytest.fixture
def agent(roots: tuple[str, str]) -> Iterator[AgentProc]:
    yield from running_agent(roots, "none")


@pytest.fixture
def small_ring(roots: tuple[str, str]) -> Iterator[AgentProc]:
    """ring_size 251: room for 2 backends per VIP (web has 2, dns 1)."""
    yield from running_agent(roots, "none", instance="ring_size = 251")


def test_every_spelling_of_an_address_finds_its_backend(agent: AgentProc) -> None:
    with agent.client() as c:
        added = c.call("add_backend", vip="web", address=SPELLINGS[1])
        assert added["after"]["web"]["address"] == V6
        for spelling in SPELLINGS:
            c.call("drain", address=spelling, vip="web")
            assert backends(c)[V6]["state"] == "drained"
            c.call("undrain", address=spelling)  # without --vip: every VIP that has it
            assert backends(c)[V6]["state"] == "active"
        c.call("weight", address=SPELLINGS[0], weight=2, vip="web")
        assert backends(c)[V6]["weight"] == 2
        assert {e["params"]["address"] for e in c.call("audit", n=20)} == {V6}
        c.call("remove_backend", vip="web", address=SPELLINGS[2])
        assert V6 not in backends(c)


def test_a_non_address_is_invalid_params_and_changes_nothing(agent: AgentProc) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("drain", {}), ("undrain", {}), ("weight", {"weight": 2}),
        ("add_backend", {"vip": "web"}), ("remove_backend", {"vip": "web"})]
    with agent.client() as c:
        before = c.call("backends")
        for method, params in calls:
            for bad in ("not-an-ip", "10.0.1.256", "fe80::1%xlb0", ""):
                with pytest.raises(InvalidParams, match="is not an IP address") as e:
                    c.call(method, address=bad, **params)
                assert e.value.rpc_code == -32602
                assert f"{method}: parameter 'address'" in str(e.value)
        assert c.call("backends") == before
        assert c.call("audit") == []


def test_the_cli_takes_any_spelling_and_refuses_a_non_address(agent: AgentProc) -> None:
    def xlb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "xlb", *args, "--socket", agent.socket],
                              capture_output=True, text=True, cwd=REPO, timeout=60,
                              env=agent.env)

    r = xlb("drain", "10.0.1.2", "--vip", "web", "--yes")
    assert r.returncode == 0, r.stderr
    r = xlb("backend", "add", SPELLINGS[0], "--vip", "web")
    assert r.returncode == 0 and V6 in r.stdout, r.stderr
    r = xlb("drain", SPELLINGS[1], "--yes")
    assert r.returncode == 0 and f"drain {V6}: done" in r.stdout, r.stderr
    r = xlb("drain", "not-an-ip", "--yes")
    assert r.returncode == 2 and "'not-an-ip' is not an IP address" in r.stderr, r.stderr
    r = xlb("backend", "remove", SPELLINGS[2], "--vip", "web", "--yes")
    assert r.returncode == 0, r.stderr
    with agent.client() as c:
        assert V6 not in backends(c)


def test_a_ring_too_small_for_the_backends_is_refused_at_run_time(small_ring: AgentProc) -> None:
    with small_ring.client() as c:
        before = c.call("backends")
        with pytest.raises(InvalidParams, match=r"3 backends need instance.ring_size >= 300"):
            c.call("add_backend", vip="web", address="10.0.1.3")
        with pytest.raises(InvalidParams, match=r"vip\['api'\].backend: 3 backends need"):
            c.call("add_vip", name="api", address="10.100.0.20", port=443, protocol="tcp",
                   backends=[{"address": f"10.0.2.{i}"} for i in (1, 2, 3)])
        assert c.call("backends") == before
        assert c.call("audit") == []
        c.call("add_backend", vip="dns", address="10.0.1.2")  # 2 fit
        assert set(backends(c, "dns")) == {"10.0.1.1", "10.0.1.2"}
