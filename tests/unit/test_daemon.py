"""The agent as a well-kept daemon, without root: default paths where admins look, the
capabilities it names when they are missing, the systemd unit it ships (checked by
systemd-analyze), sd_notify and the journal."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from xlb import privileges
from xlb.agent import logs
from xlb.agent.notify import Notifier
from xlb.errors import PrivilegeError, UsageError

UNIT = REPO / "packaging" / "systemd" / "xlb-agent@.service"
SYSUSERS = REPO / "packaging" / "systemd" / "xlb.sysusers"
XLB_ENV = ("XLB_CONFIG_ROOT", "XLB_PIN_ROOT", "XLB_RUN_ROOT", "XLB_STATE_ROOT")


def xlb(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`xlb ARGS` with the default paths (no XLB_* roots) unless `env` moves them."""
    base = {k: v for k, v in os.environ.items() if k not in XLB_ENV}
    return subprocess.run([sys.executable, "-m", "xlb", *args], capture_output=True,
                          text=True, timeout=60, env={**base, **env}, cwd=REPO)


# -- default paths ---------------------------------------------------------------------------
def test_help_lists_the_default_paths() -> None:
    for args in (["--help"], ["agent", "--help"]):
        out = xlb(*args).stdout
        for path in ("/etc/xlb/INSTANCE.toml", "/run/xlb/INSTANCE.sock", "/run/xlb/INSTANCE/",
                     "/var/lib/xlb/INSTANCE/audit.jsonl", "/sys/fs/bpf/xlb/INSTANCE/"):
            assert path in out, f"`xlb {' '.join(args)}` does not list {path}:\n{out}"


def test_agent_finds_its_config_under_etc_xlb(tmp_path: Path) -> None:
    """`xlb agent lb1` reads <config root>/lb1.toml (/etc/xlb by default)."""
    (tmp_path / "lb1.toml").write_text('[instance]\nname = "lb1"\n')  # no interface
    r = xlb("agent", "lb1", XLB_CONFIG_ROOT=str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[:2] == [
        "xlb: invalid config:",
        f"{tmp_path}/lb1.toml: instance.interface: missing required key"], r.stderr
    if not os.path.exists("/etc/xlb/lb1.toml"):
        r = xlb("agent", "lb1")
        assert r.returncode == 1
        assert "/etc/xlb/lb1.toml: cannot read: No such file or directory" in r.stderr


def test_agent_needs_an_instance_or_a_config_and_they_must_agree(tmp_path: Path) -> None:
    r = xlb("agent")
    assert r.returncode == UsageError.exit_code and "name the instance" in r.stderr, r.stderr
    path = tmp_path / "a.toml"
    path.write_text('[instance]\nname = "lb1"\ninterface = "eth0"\n')
    r = xlb("agent", "lb2", "--config", str(path))
    assert r.returncode == UsageError.exit_code, r.stderr
    assert f"xlb agent lb2: {path} is the config of instance 'lb1'" in r.stderr


def test_default_socket_and_audit_log() -> None:
    from xlb.agent.settings import check_settings
    from xlb.paths import RUN_ROOT, STATE_ROOT
    from xlb.schema import Checker

    st = check_settings(Checker(), {}, "lb1")
    assert st is not None
    assert st.socket == f"{RUN_ROOT}/lb1.sock"
    assert st.audit_log == f"{STATE_ROOT}/lb1/audit.jsonl"


# -- capabilities ----------------------------------------------------------------------------
def bits(*names: str) -> int:
    return sum(1 << privileges.CAPABILITIES[n] for n in names)


def test_missing_capabilities_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert privileges.missing(privileges.needed(), bits("CAP_BPF", "CAP_NET_ADMIN")) == [
        "CAP_PERFMON"]
    assert privileges.missing(privileges.needed("ns1"), bits(*privileges.DATAPLANE)) == [
        "CAP_SYS_ADMIN"]
    assert privileges.missing(privileges.needed("ns1"), -1) == []  # root: every bit
    monkeypatch.setattr(privileges, "effective", lambda: bits("CAP_BPF"))
    with pytest.raises(PrivilegeError) as e:
        privileges.require("xlb agent", "ns1")
    assert "missing: CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN" in str(e.value)
    assert "network namespace 'ns1'" in str(e.value)


def test_effective_capabilities_are_read_from_proc(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n")
    assert privileges.missing(("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"),
                              privileges.effective(str(status))) == ["CAP_SYS_ADMIN"]


# -- the systemd unit ------------------------------------------------------------------------
def unit_lines() -> list[tuple[str, str]]:
    out = []
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def test_the_unit_runs_the_agent_as_a_notify_service_with_capabilities() -> None:
    unit = unit_lines()
    keys = dict(unit)
    assert keys["Type"] == "notify"
    assert re.fullmatch(r"/\S+/xlb agent %i", keys["ExecStart"])
    assert float(keys["WatchdogSec"]) > 1.0  # several ticks of the default 1 s
    assert keys["User"] == "xlb" and keys["Group"] == "xlb"
    assert keys["AmbientCapabilities"].split() == list(privileges.DATAPLANE)
    assert keys["CapabilityBoundingSet"].split() == list(privileges.DATAPLANE)
    assert keys["RuntimeDirectory"].split() == ["xlb", "xlb/%i"]
    assert keys["RuntimeDirectoryPreserve"] == "yes"  # the intent outlives the agent
    assert keys["StateDirectory"].split() == ["xlb", "xlb/%i"]
    pre = [v for k, v in unit if k == "ExecStartPre"]
    assert any("/sys/fs/bpf/xlb/%i" in v and "xlb" in v for v in pre)


def systemd_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("XLB_TESTS_STRICT") == "1":
            pytest.fail(f"{name} is missing (scripts/bootstrap installs systemd)")
        pytest.skip(f"{name} is missing (Debian's systemd package)")
    return path


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """As shipped, except that ExecStart= runs this checkout's xlb (systemd-analyze
    checks that the program exists). It must say nothing: it reports an unknown key or a
    bad value as a warning and exits 0 all the same."""
    tool = systemd_tool("systemd-analyze")
    here = Path(sys.executable).parent / "xlb"
    assert here.exists(), here
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={here}", UNIT.read_text(), flags=re.M)
    for name in ("xlb-agent@.service", "xlb-agent@lb1.service"):
        (tmp_path / name).write_text(text)
        r = subprocess.run([tool, "verify", str(tmp_path / name)], capture_output=True,
                           text=True, timeout=60)
        assert (r.returncode, r.stdout + r.stderr) == (0, ""), r


def test_sysusers_makes_the_user_and_group(tmp_path: Path) -> None:
    tool = systemd_tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    r = subprocess.run([tool, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    passwd = (tmp_path / "etc" / "passwd").read_text()
    assert re.search(r"^xlb:x:\d+:\d+:[^:]*:/var/lib/xlb:/usr/sbin/nologin$", passwd, re.M)
    assert re.search(r"^xlb:x:\d+:", (tmp_path / "etc" / "group").read_text(), re.M)


# -- sd_notify and the journal ---------------------------------------------------------------
def test_notifier_speaks_the_protocol_only_under_systemd(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """python3-systemd reads NOTIFY_SOCKET from the environment, as systemd sets it."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(path)
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "3000000")
        n = Notifier()
        assert n.watchdog == 3.0
        n.ready("up")
        n.alive()
        n.stopping()
        got = [s.recv(4096).decode() for _ in range(3)]
        assert got == ["READY=1\nSTATUS=up", "WATCHDOG=1",
                       "STOPPING=1\nSTATUS=stopping; the data plane keeps running"]
        # no WatchdogSec= (or the watchdog is another process's): no WATCHDOG=1
        monkeypatch.setenv("WATCHDOG_PID", "1")
        Notifier().alive()
        monkeypatch.delenv("WATCHDOG_USEC")
        monkeypatch.delenv("WATCHDOG_PID")
        quiet = Notifier()
        assert quiet.watchdog is None
        quiet.alive()
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(4096)
    monkeypatch.delenv("NOTIFY_SOCKET")
    Notifier().ready("nobody listens")  # outside systemd: nothing, no error


def test_logs_go_to_the_journal_only_when_stderr_is_its_stream(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f:
        st = os.fstat(f.fileno())
        assert logs.under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f.fileno())
        assert not logs.under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"},
                                      f.fileno())
        assert not logs.under_journal({}, f.fileno())
        assert not logs.under_journal({"JOURNAL_STREAM": "junk"}, f.fileno())
