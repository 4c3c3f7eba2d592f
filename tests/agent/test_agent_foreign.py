"""The agent finds another tool's XDP program on its interface: it does not start (the
refusal's exit code, the program named, left in place); with --force it takes over, and
its audit log (over the API too) records which program it replaced."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from tests.agent.test_agent import AgentProc
from tests.helpers import ForeignXdp
from xlb.dataplane import lifecycle, xdp
from xlb.errors import ForeignProgramError
from xlb.lab import netns

NS = f"xlbaf-{os.getpid()}"

CONFIG = f"""
[agent]
socket = "{{tmp}}/agent.sock"
tick = 0.25
audit_log = "{{tmp}}/audit.jsonl"
metrics = ""
health = "none"

[instance]
name = "agf"
interface = "xlb0"
netns = "{NS}"
xdp_mode = "generic"
max_vips = 4
max_backends = 16
max_connections = 4096

[[vip]]
name = "web"
address = "10.100.0.10"
port = 80
protocol = "tcp"
[[vip.backend]]
address = "10.0.1.1"
"""


@pytest.fixture
def proc(roots: tuple[str, str]) -> Iterator[AgentProc]:
    pin_root, run_root = roots
    tmp = tempfile.mkdtemp(prefix="xlb-agent-foreign-")
    env = {**os.environ, "XLB_PIN_ROOT": pin_root, "XLB_RUN_ROOT": run_root,
           "XLB_STATE_ROOT": tmp}
    a = AgentProc(tmp, env)
    with open(a.path, "w") as f:
        f.write(CONFIG.replace("{tmp}", tmp))
    netns.create(NS)
    try:
        netns.veth(NS, "xlb0", NS, "peer0", queues=1)
        yield a
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
        if os.path.isdir(os.path.join(pin_root, "agf")):
            lifecycle.unload_instance("agf", remove_pins=True, pin_root=pin_root,
                                      run_root=run_root)
        netns.remove(NS)
        shutil.rmtree(tmp, ignore_errors=True)


def test_agent_refuses_a_foreign_program_and_force_takes_over(proc: AgentProc) -> None:
    foreign = ForeignXdp("fw_guard")
    xdp.attach("xlb0", foreign.fd, "generic", NS)
    r = subprocess.run([sys.executable, "-m", "xlb", "agent", "--config", proc.path],
                       env=proc.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == ForeignProgramError.exit_code, r.stderr
    assert f"id {foreign.id}, name fw_guard, tag {foreign.tag}, generic mode" in r.stderr
    assert xdp.query("xlb0", NS).programs == (("generic", foreign.id),)

    proc.start("--force")
    (mode, prog_id), = xdp.query("xlb0", NS).programs
    assert mode == "generic" and prog_id != foreign.id
    with proc.client() as c:
        (entry,) = [e for e in c.call("audit", n=10) if e["action"] == "xdp_takeover"]
    hook = f"XDP on xlb0 (netns {NS})"
    assert entry["before"] == {hook: {"id": foreign.id, "name": "fw_guard",
                                      "tag": foreign.tag, "mode": "generic"}}
    assert entry["after"][hook]["id"] == prog_id and entry["params"]["force"]
    proc.stop()
    assert "took over xlb0" in proc.log() and "fw_guard" in proc.log()
