"""Another tool's XDP program on the interface: loading xlb refuses it, names it and leaves
it in place; --force takes over and the audit log records it; xlb replaces its own program
only through the kernel's compare-and-swap (XDP_FLAGS_REPLACE + IFLA_XDP_EXPECTED_FD), so a
writer that gets in between makes xlb fail instead of clobbering it; the agent's watch puts
its program back only onto an empty hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import ForeignXdp
from xlb.agent.watch import Owned, Watch
from xlb.dataplane import bpfsys, lifecycle, loader, xdp
from xlb.dataplane.config import dump_toml, parse_config
from xlb.dataplane.maps import InstanceMaps
from xlb.errors import ForeignProgramError
from xlb.lab import netns

NS = f"xlbfo-{os.getpid()}"


@pytest.fixture
def veth_ns() -> Iterator[str]:
    netns.create(NS)
    try:
        netns.veth(NS, "xlb0", NS, "peer0", queues=2)
        yield NS
    finally:
        netns.remove(NS)


@pytest.fixture(scope="module")
def foreign() -> ForeignXdp:
    return ForeignXdp("fw_pass")


def lb_config(name: str, mode: str = "native") -> dict[str, Any]:
    return {"instance": {"name": name, "interface": "xlb0", "netns": NS, "xdp_mode": mode,
                         "max_vips": 4, "max_backends": 16, "max_connections": 4096},
            "vip": [{"name": "dns", "address": "10.100.0.10", "port": 53, "protocol": "udp",
                     "backend": [{"address": "10.0.1.1"}]}]}


def on_hook() -> tuple[tuple[str, int], ...]:
    return xdp.query("xlb0", NS).programs


def unload(name: str, roots: tuple[str, str]) -> None:
    if os.path.isdir(os.path.join(roots[0], name)):
        lifecycle.unload_instance(name, remove_pins=True, pin_root=roots[0], run_root=roots[1])


@pytest.mark.parametrize("foreign_mode", ["native", "generic"])
def test_load_refuses_a_foreign_program_names_it_and_leaves_it(
        veth_ns: str, roots: tuple[str, str], foreign: ForeignXdp, foreign_mode: str) -> None:
    """Same mode (it would be replaced) or the other (it would be detached for a mode
    switch): refused before anything is compiled or pinned."""
    xdp.attach("xlb0", foreign.fd, foreign_mode, veth_ns)
    cfg = parse_config(lb_config("refused", "native"))
    try:
        with pytest.raises(ForeignProgramError) as e:
            lifecycle.load_instance(cfg, pin_root=roots[0], run_root=roots[1])
        assert (f"id {foreign.id}, name fw_pass, tag {foreign.tag}, {foreign_mode} mode"
                in str(e.value)) and "--force" in str(e.value)
        assert e.value.program == {"id": foreign.id, "name": "fw_pass", "tag": foreign.tag,
                                   "mode": foreign_mode}
        assert on_hook() == ((foreign_mode, foreign.id),), "the foreign program stays"
        assert not os.path.exists(os.path.join(roots[0], "refused")), "nothing was loaded"
    finally:
        unload("refused", roots)


def test_force_takes_over_and_the_audit_log_records_it(
        veth_ns: str, roots: tuple[str, str], foreign: ForeignXdp, tmp_path: Any) -> None:
    """Through the CLI: refused with the refusal's exit code, then --force."""
    pin_root, run_root = roots
    env = {**os.environ, "XLB_PIN_ROOT": pin_root, "XLB_RUN_ROOT": run_root,
           "XLB_STATE_ROOT": str(tmp_path)}
    path = os.path.join(str(tmp_path), "lb.toml")
    with open(path, "w") as f:
        f.write(dump_toml(parse_config(lb_config("forced", "generic"))))
    xdp.attach("xlb0", foreign.fd, "generic", veth_ns)

    def load(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "xlb", "dataplane", "load", "--config",
                               path, "--json", *extra], capture_output=True, text=True,
                              env=env, timeout=120)
    try:
        r = load()
        assert r.returncode == ForeignProgramError.exit_code, r.stderr
        assert f"id {foreign.id}, name fw_pass" in r.stderr and "Traceback" not in r.stderr
        assert on_hook() == (("generic", foreign.id),)
        audit = os.path.join(str(tmp_path), "forced", "audit.jsonl")
        assert not os.path.exists(audit), "a refusal changes nothing"
        r = load("--force")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["replaced"] == {"id": foreign.id, "name": "fw_pass", "tag": foreign.tag,
                                   "mode": "generic"}
        assert on_hook() == (("generic", doc["prog_id"]),) and doc["prog_id"] != foreign.id
        with open(audit) as f:
            (entry,) = [json.loads(line) for line in f]
        hook = f"XDP on xlb0 (netns {NS})"
        assert entry["action"] == "xdp_takeover" and entry["result"] == "ok"
        assert entry["params"]["force"] and entry["params"]["name"] == "forced"
        assert entry["before"] == {hook: doc["replaced"]}
        assert entry["after"][hook]["id"] == doc["prog_id"]
        assert entry["after"][hook]["name"] == "xlb_main"
        r = load()  # its own program now: a reload replaces it without --force
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["replaced"] is None
    finally:
        unload("forced", roots)


def test_reload_and_mode_switch_replace_only_the_own_program(
        veth_ns: str, roots: tuple[str, str]) -> None:
    cfg = parse_config(lb_config("own", "native"))
    try:
        first = lifecycle.load_instance(cfg, pin_root=roots[0], run_root=roots[1])
        again = lifecycle.load_instance(cfg, pin_root=roots[0], run_root=roots[1])
        assert again["adopted"] and again["prog_id"] != first["prog_id"]
        assert on_hook() == (("native", again["prog_id"]),)
        switched = lifecycle.load_instance(cfg, mode="generic", pin_root=roots[0],
                                           run_root=roots[1])
        assert on_hook() == (("generic", switched["prog_id"]),)
    finally:
        unload("own", roots)


class StaleLook:
    """xdp.query answering `state` the first `times` calls (looks taken before another
    writer got in), the truth afterwards."""

    def __init__(self, state: xdp.XdpState, times: int = 1):
        self.state, self.times = state, times
        self.real = xdp.query

    def __call__(self, *args: Any, **kwargs: Any) -> xdp.XdpState:
        self.times -= 1
        return self.state if self.times >= 0 else self.real(*args, **kwargs)


def test_a_writer_between_the_look_and_the_replace_makes_it_fail(
        veth_ns: str, foreign: ForeignXdp, monkeypatch: pytest.MonkeyPatch) -> None:
    """xlb's program A is attached and looked at; before A is replaced by B, another
    writer replaces A by its own. The kernel compares with A (IFLA_XDP_EXPECTED_FD): the
    replace fails, naming the newcomer, which stays."""
    mine = ForeignXdp("xlb_own_a")
    newer = ForeignXdp("xlb_own_b")
    xdp.attach("xlb0", mine.fd, "native", veth_ns)
    look = xdp.query("xlb0", veth_ns)
    xdp.detach("xlb0", veth_ns)                          # the other writer, clobbering
    xdp.attach("xlb0", foreign.fd, "native", veth_ns)
    monkeypatch.setattr(xdp, "query", StaleLook(look))
    with pytest.raises(ForeignProgramError, match=f"id {foreign.id}, name fw_pass.*"
                                                  r"\(attached meanwhile\)"):
        xdp.attach("xlb0", newer.fd, "native", veth_ns, expected_fd=mine.fd)
    monkeypatch.undo()
    assert on_hook() == (("native", foreign.id),)
    # the same race on an empty hook: UPDATE_IF_NOEXIST fails instead of replacing
    monkeypatch.setattr(xdp, "query", StaleLook(
        xdp.XdpState("xlb0", veth_ns, look.ifindex, None, 0, ())))
    with pytest.raises(ForeignProgramError, match="attached meanwhile"):
        xdp.attach("xlb0", newer.fd, "native", veth_ns)
    monkeypatch.undo()
    assert on_hook() == (("native", foreign.id),)


def test_a_guarded_detach_leaves_another_program(veth_ns: str, foreign: ForeignXdp) -> None:
    mine = ForeignXdp("xlb_own_a")
    xdp.attach("xlb0", foreign.fd, "generic", veth_ns)
    assert xdp.detach("xlb0", veth_ns, expected_fd=mine.fd).programs == (
        ("generic", foreign.id),)


def test_watch_restores_only_onto_an_empty_hook(
        veth_ns: str, roots: tuple[str, str], foreign: ForeignXdp,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's watch sees its program detached; before it re-attaches, another program
    is attached. The re-attach must fail and raise the alarm, the newcomer stays."""
    pin_root, run_root = roots
    cfg = parse_config(lb_config("watched", "native"))
    events: list[Any] = []
    try:
        doc = lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
        maps = InstanceMaps("watched", pin_root)
        prog_fd = bpfsys.obj_get(os.path.join(pin_root, "watched", loader.PROG_PIN))
        watch = Watch(Owned("watched", "xlb0", NS, "native", doc["prog_id"], prog_fd, maps,
                            pin_root), restore=True, emit=lambda _, e: events.append(e))
        try:
            xdp.detach("xlb0", veth_ns)
            empty = xdp.query("xlb0", veth_ns)
            xdp.attach("xlb0", foreign.fd, "native", veth_ns)
            # the watch's look and the attach's own find the hook empty: the kernel's
            # UPDATE_IF_NOEXIST is what refuses
            monkeypatch.setattr(xdp, "query", StaleLook(empty, times=2))
            (alarm,) = watch.check()
            monkeypatch.undo()
            assert alarm["active"] and f"id {foreign.id}, name fw_pass" in alarm["message"]
            assert "before xlb's could be re-attached: left in place" in alarm["message"]
            assert on_hook() == (("native", foreign.id),), "the newcomer stays"
            (alarm,) = watch.check()  # the next tick: still theirs, still alarmed
            assert alarm["active"] and on_hook() == (("native", foreign.id),)
            assert len(events) == 1 and not events[0]["cleared"]
        finally:
            watch.close()
            os.close(prog_fd)
            maps.close()
    finally:
        unload("watched", roots)


def test_a_program_attached_during_a_reload_stays_and_the_old_one_stays_xlbs(
        veth_ns: str, roots: tuple[str, str], foreign: ForeignXdp,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload compiles (a second) while another tool takes the hook from xlb's running
    program: the reload fails naming it, the newcomer stays, and the program xlb pinned
    before is still the one it calls its own (the next load still refuses the newcomer;
    once it is gone, a load adopts the maps as usual)."""
    pin_root, run_root = roots
    cfg = parse_config(lb_config("raced", "native"))
    real_load = loader.load

    def load_then_another_writer(*args: Any, **kwargs: Any) -> loader.Loaded:
        loaded = real_load(*args, **kwargs)
        xdp.detach("xlb0", veth_ns)
        xdp.attach("xlb0", foreign.fd, "native", veth_ns)
        return loaded
    try:
        first = lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
        monkeypatch.setattr(loader, "load", load_then_another_writer)
        with pytest.raises(ForeignProgramError, match=f"id {foreign.id}, name fw_pass"):
            lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
        monkeypatch.undo()
        assert on_hook() == (("native", foreign.id),)
        fd = lifecycle.own_program("raced", pin_root)
        try:
            assert bpfsys.prog_info(fd).id == first["prog_id"], "the old program, re-pinned"
        finally:
            os.close(fd)
        with pytest.raises(ForeignProgramError):
            lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
        xdp.detach("xlb0", veth_ns)
        again = lifecycle.load_instance(cfg, pin_root=pin_root, run_root=run_root)
        assert again["adopted"] and on_hook() == (("native", again["prog_id"]),)
    finally:
        monkeypatch.undo()
        unload("raced", roots)
