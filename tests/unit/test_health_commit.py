"""How health verdicts reach the data plane (xlb/agent/core.py): all that arrive within a
tick are one apply, the slow part runs without the agent's lock, a failed apply is tried
again, a backend's flows move a tick after it went down, and a VIP with (nearly) no
healthy backend fails open with an alarm. Against a recording data plane: no root."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xlb.agent import core
from xlb.agent.settings import load
from xlb.dataplane import structs as S
from xlb.dataplane.config import Config, vip_label
from xlb.dataplane.manager import ApplyResult, Counters
from xlb.errors import ApplyError

N = 1000  # backends, in 10 TCP VIPs of 100


def config(tmp: Path, extra: str = "") -> str:
    vips = []
    for v in range(10):
        vips.append(f'[[vip]]\nname = "v{v}"\naddress = "10.100.0.{v + 1}"\nport = 80\n'
                    'protocol = "tcp"\n')
        vips += [f'[[vip.backend]]\naddress = "10.0.{v}.{b + 1}"\n' for b in range(100)]
    return (f'[agent]\nsocket = "{tmp}/a.sock"\naudit_log = "{tmp}/audit.jsonl"\n'
            f'metrics = ""\n{extra}\n[instance]\nname = "hc"\ninterface = "eth0"\n'
            f'max_backends = 2048\n' + "\n".join(vips))


class Recorder:
    """A data plane that records what it is asked and whether the agent's lock is held."""

    def __init__(self, agent: core.Agent) -> None:
        self.agent = agent
        self.staged: list[tuple[Config, bool]] = []
        self.applied: list[tuple[Config, bool]] = []
        self.fail: Exception | None = None

    def stage(self, cfg: Config, stop: Any = None) -> int:
        self.staged.append((cfg, self.agent.lock.locked()))
        return 0

    def apply(self, cfg: Config) -> ApplyResult:
        self.applied.append((cfg, self.agent.lock.locked()))
        if self.fail is not None:
            raise self.fail
        ids = {str(a): i for i, a in enumerate(cfg.backend_addresses())}
        return ApplyResult(backend_ids=ids, vip_ids={})

    def counters(self, **_: Any) -> Counters:
        return Counters(time.monotonic(), np.zeros((S.XLB_MAX_QUEUES, 2 + S.XLB_NUM_ACTIONS)),
                        np.zeros((16, 2)), np.zeros((2048, 3)), np.zeros((len(S.Reason), 2)))

    def drop_flows(self, pairs: Any, stop: Any = None) -> dict[Any, int]:
        return {}


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any) -> core.Agent:
    monkeypatch.setattr(core, "run_dir", lambda name: str(tmp_path))
    path = tmp_path / "hc.toml"
    path.write_text(config(tmp_path, getattr(request, "param", "")))
    a = core.Agent(load(str(path)))
    a.dp = Recorder(a)  # type: ignore[assignment]
    return a


def recorder(a: core.Agent) -> Recorder:
    assert isinstance(a.dp, Recorder)
    return a.dp


def events(a: core.Agent) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    a.listeners.append(lambda kind, doc: out.append(doc) if kind == "event" else None)
    return out


def vip(a: core.Agent, name: str) -> dict[str, Any]:
    return next(dict(v) for v in a.last["vips"] if v["name"] == name)


def test_verdicts_arriving_within_a_tick_are_one_apply(agent: core.Agent) -> None:
    seen = events(agent)
    half = [str(b.address) for v in agent.desired.vips for b in v.backends][::2]
    for addr in half:
        agent.report_health(addr, False, "tcp connect: timeout")
    assert recorder(agent).applied == [], "a verdict is only noted"
    agent.tick()
    dp = recorder(agent)
    assert len(dp.applied) == 1 and len(dp.staged) == 1
    assert dp.staged[0][1] is False, "the slow part runs without the agent's lock"
    assert dp.applied[0][1] is True
    assert set(agent.down) == set(half)
    assert sum(vip(agent, f"v{v}")["healthy"] for v in range(10)) == N // 2
    assert len([e for e in seen if e["kind"] == "health"]) == N // 2
    agent.tick()  # one tick later the flows move: one more apply, no verdict needed
    assert len(dp.applied) == 2
    assert not set(half) & {str(a) for a in dp.applied[-1][0].backend_addresses()}
    agent.tick()
    assert len(dp.applied) == 2, "nothing new: no apply"


def test_many_verdicts_on_one_backend_keep_the_latest(agent: core.Agent) -> None:
    for healthy in (False, True, False):
        agent.report_health("10.0.0.1", healthy, "flap")
    agent.report_health("10.9.9.9", False, "removed meanwhile")  # in no VIP: dropped
    agent.tick()
    assert agent.down == {"10.0.0.1": "flap"}


def test_a_failed_apply_is_tried_again(agent: core.Agent,
                                       caplog: pytest.LogCaptureFixture) -> None:
    seen = events(agent)
    recorder(agent).fail = ApplyError("applying the config failed (injected)")
    agent.report_health("10.0.0.1", False, "timeout")
    agent.tick()
    assert agent.down == {} and "not applied (tried again next tick)" in caplog.text
    assert [e["kind"] for e in seen] == ["error"]
    recorder(agent).fail = None
    agent.tick()
    assert agent.down == {"10.0.0.1": "timeout"}


def test_a_vip_with_no_healthy_backend_fails_open_loudly(
        agent: core.Agent, caplog: pytest.LogCaptureFixture) -> None:
    seen = events(agent)
    for b in agent.desired.vip("v3").backends:
        agent.report_health(str(b.address), False, "blackhole")
    with caplog.at_level(logging.WARNING):
        agent.tick()
    applied = recorder(agent).applied[-1][0]
    assert applied.vip("v3") == agent.desired.vip("v3"), "all serve, as if healthy"
    assert vip(agent, "v3")["panic"] is True and vip(agent, "v2")["panic"] is False
    (panic,) = [e for e in seen if e["kind"] == "panic"]
    assert (panic["vip"], panic["panic"], panic["healthy"], panic["serving"]) == (
        "v3", True, 0, 100)
    assert "VIP v3 in panic: only 0 of 100 serving backends pass their checks" in caplog.text
    agent.tick()  # in panic nothing moves, however long it lasts
    assert recorder(agent).applied[-1][0].vip("v3") == agent.desired.vip("v3")
    for b in agent.desired.vip("v3").backends[:30]:
        agent.report_health(str(b.address), True, "2 consecutive checks passed")
    agent.tick()
    assert vip(agent, "v3")["panic"] is False
    assert [e["panic"] for e in seen if e["kind"] == "panic"] == [True, False]
    left = recorder(agent).applied[-1][0].vip("v3").backends
    assert [b.state for b in left].count("drained") == 70, "no new flows, none moved yet"
    agent.tick()  # a tick out of panic: the flows of those still down move
    assert len(recorder(agent).applied[-1][0].vip("v3").backends) == 30


def test_moving_flows_is_a_pass_the_tick_never_waits_for(
        agent: core.Agent, caplog: pytest.LogCaptureFixture) -> None:
    """The pass over the connection table that drops the flows to move runs in a thread
    of its own: the tick that asks for it ends while the pass still runs."""
    gate, asked = threading.Event(), []

    def drop_flows(pairs: Any, stop: Any = None) -> dict[Any, int]:
        asked.append(set(pairs))
        gate.wait(30)
        return {p: 3 for p in pairs}

    recorder(agent).drop_flows = drop_flows  # type: ignore[method-assign]
    v0 = agent.desired.vip("v0")
    agent.vip_ids = {vip_label(v0.address, v0.port, v0.protocol): 2}
    agent.backend_ids = {"10.0.0.1": 5}
    agent._purge = {("v0", "10.0.0.1")}
    ticked = threading.Event()

    def tick() -> None:
        agent.tick()
        ticked.set()

    threading.Thread(target=tick, daemon=True).start()
    try:
        assert ticked.wait(20), "the tick waited for the pass over the connection table"
        assert not gate.is_set()
        with caplog.at_level(logging.INFO):
            gate.set()
            for _ in range(200):
                if not agent._purge:
                    break
                time.sleep(0.05)
        assert asked == [{(2, 5)}] and agent._purge == set()
        assert "VIP v0: 3 flow(s) of backend 10.0.0.1 (down) moved" in caplog.text
    finally:
        gate.set()
        agent.stopping.set()  # the purge thread ends (within a second)
