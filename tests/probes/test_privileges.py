"""The probes without the privileges they need: a process that lacks CAP_BPF, CAP_PERFMON
or CAP_SYS_ADMIN gets every probe "unavailable" with the kernel's own error and what it
lacks, never a crash, a misleading compile error or a probe that claims to be attached.
The capabilities are dropped in a child process (setpriv, from util-linux: the bounding
set is what a root process keeps across exec)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xlb.api import protocol as P
from xlb.probes import kernel

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent.parent

CHILD = """
import json, logging
logging.basicConfig(level=logging.INFO)
from xlb.probes.manager import ProbeManager
with open("/proc/self/status") as f:
    capeff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
m = ProbeManager()
m.start()
kernel_doc = m.tick()
m.close()
print(json.dumps({"capeff": capeff, "probes": kernel_doc["probes"]}))
"""

TRACING = [n for n in P.PROBES if n != "runtime"]
CAP_PERFMON, CAP_BPF = 38, 39  # linux/capability.h


def without(bounding: str, user: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """Start and tick a probe manager in a child with only the capabilities `bounding`
    allows (setpriv's syntax), as root or as `user` (setpriv's options); (its figures,
    its log)."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to drop capabilities")
    caps = ("--inh-caps=-all", "--ambient-caps=-all")
    if user:  # another user keeps capabilities only as ambient ones (they need inheritable)
        caps = (f"--inh-caps={bounding}", f"--ambient-caps={bounding}")
    r = subprocess.run(["setpriv", *user, *caps, f"--bounding-set={bounding}",
                        sys.executable, "-c", CHILD],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def by_name(doc: dict[str, Any]) -> dict[str, P.Probe]:
    return {p["name"]: p for p in doc["probes"]}


def test_without_any_capability_every_probe_says_why_with_the_kernels_error() -> None:
    doc, log = without("-all")
    assert doc["capeff"] == 0  # the child really has no capability
    probes = by_name(doc)
    assert list(probes) == list(P.PROBES)
    for name in TRACING:
        assert probes[name]["state"] == "unavailable", probes[name]
        assert probes[name]["reason"] == (
            "attach failed: Operation not permitted (needs CAP_BPF and CAP_PERFMON; this "
            "process lacks CAP_BPF and CAP_PERFMON)"), probes[name]
        assert probes[name]["events_per_s"] == 0 and probes[name]["cpu_percent"] is None
    assert probes["runtime"]["state"] == "unavailable"
    assert probes["runtime"]["reason"] == (
        "attach failed: BPF_ENABLE_STATS: Operation not permitted (needs CAP_SYS_ADMIN; "
        "this process lacks CAP_SYS_ADMIN)")
    # refused before any compile: no BCC error about maps it could not create
    assert "could not open bpf map" not in log and "Failed to compile" not in log, log
    assert log.count("unavailable: attach failed") == len(P.PROBES), log


def test_with_cap_bpf_alone_the_tracing_probes_name_the_missing_cap_perfmon() -> None:
    doc, _ = without("-all,+bpf")
    assert doc["capeff"] == 1 << CAP_BPF
    probes = by_name(doc)
    for name in TRACING:
        assert probes[name]["state"] == "unavailable", probes[name]
        assert probes[name]["reason"] == (
            "attach failed: Operation not permitted (needs CAP_BPF and CAP_PERFMON; this "
            "process lacks CAP_PERFMON)"), probes[name]
    assert probes["runtime"]["state"] == "unavailable"
    assert "lacks CAP_SYS_ADMIN" in probes["runtime"]["reason"]


def test_cap_bpf_and_cap_perfmon_are_enough_for_the_tracing_probes() -> None:
    """The least privilege the probes document: only the run-time statistics need more."""
    doc, _ = without("-all,+bpf,+perfmon")
    assert doc["capeff"] == 1 << CAP_BPF | 1 << CAP_PERFMON
    probes = by_name(doc)
    assert {n: probes[n]["state"] for n in TRACING} == dict.fromkeys(TRACING, "attached")
    assert probes["runtime"]["state"] == "unavailable"
    assert probes["runtime"]["reason"] == (
        "attach failed: BPF_ENABLE_STATS: Operation not permitted (needs CAP_SYS_ADMIN; "
        "this process lacks CAP_SYS_ADMIN)")


def test_an_agent_user_that_cannot_read_tracefs_is_told_so() -> None:
    """The agent's own user (systemd: CAP_BPF and CAP_PERFMON, no root) cannot look into
    tracefs, which is root's (mode 0700) unless the host says otherwise: the probes say
    that, not that tracefs or the tracepoints are missing."""
    tracefs = kernel.tracefs()
    assert tracefs is not None
    if os.stat(tracefs).st_mode & 0o005 == 0o005:
        pytest.skip(f"{tracefs} is readable by every user on this host")
    doc, _ = without("-all,+bpf,+perfmon", ("--reuid=65534", "--regid=65534",
                                             "--clear-groups"))
    assert doc["capeff"] == 1 << CAP_BPF | 1 << CAP_PERFMON
    probes = by_name(doc)
    for name in TRACING:
        assert probes[name]["state"] == "unavailable", probes[name]
        assert probes[name]["reason"].startswith(
            f"tracefs ({tracefs}) is not readable by this user (uid 65534; it belongs to "
            "uid 0, mode "), probes[name]
