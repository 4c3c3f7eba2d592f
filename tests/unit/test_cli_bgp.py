"""`xlb bgp`, `xlb bgp withdraw`, `xlb bgp announce` against the agent test double's BGP
model (tests/bgp_double.py): what they print, what they change in the agent, and their
exit codes (refused 5, read-only 4, no agent 3, usage 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agent_double import AgentDouble
from tests.helpers import run_cli as xlb
from tests.unit.test_completion import complete, environment
from xlb import cli
from xlb.api import protocol as P

Capsys = pytest.CaptureFixture[str]




def prefix(d: AgentDouble, name: str) -> P.BgpPrefix:
    with d.lock:
        return next(p for p in d.bgp.status()["prefixes"] if p["prefix"] == name)


def test_it_shows_sessions_prefixes_why_and_events(double: AgentDouble, capsys: Capsys) -> None:
    code, out, _ = xlb(double, capsys, "bgp")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "ExaBGP running (pid 4242)  AS 65001  router id 198.18.1.2"
    peer = next(line for line in lines if line.startswith("198.18.1.1 "))
    assert "65000" in peer and "● established" in peer and "ipv4" in peer
    web = next(line for line in lines if line.startswith("198.19.0.10/32"))
    assert "▲ announced" in web and "web: 3 of 3 backends healthy" in web
    assert "(to 198.18.1.1)" in web
    assert "last events:" in lines and "198.19.0.11/32 announced" in out


def test_json_is_the_agents_document(double: AgentDouble, capsys: Capsys) -> None:
    code, out, _ = xlb(double, capsys, "bgp", "--json")
    doc = json.loads(out)
    assert code == 0 and P.conforms(doc, P.Bgp) == [] and len(doc["prefixes"]) == 2


def test_withdraw_and_announce_one_vip(double: AgentDouble, capsys: Capsys) -> None:
    code, out, _ = xlb(double, capsys, "bgp", "withdraw", "web")
    assert code == 0
    assert out.splitlines()[0] == "198.19.0.10/32: withdraw done"
    assert "▽ withdrawn" in out and "withdrawn by tester" in out
    assert prefix(double, "198.19.0.10/32")["cause"] == "operator"
    assert prefix(double, "198.19.0.11/32")["announced"]  # the other VIP is untouched
    assert ("bgp_withdraw", {"vip": "web"}) in double.calls
    code, out, _ = xlb(double, capsys, "bgp", "withdraw", "198.19.0.10")  # by its address
    assert code == 0 and "changed nothing (it was so already)" in out
    code, out, _ = xlb(double, capsys, "bgp", "announce", "web", "--json")
    doc = json.loads(out)
    assert code == 0 and P.conforms(doc, P.BgpChange) == [] and doc["changed"]
    assert doc["prefixes"][0]["announced"] and prefix(double, "198.19.0.10/32")["announced"]
    assert [e["action"] for e in double.audit] == ["bgp_withdraw", "bgp_withdraw",
                                                   "bgp_announce"]


def test_maintenance_withdraws_everything_until_announce_all(double: AgentDouble,
                                                             capsys: Capsys) -> None:
    code, out, _ = xlb(double, capsys, "bgp", "withdraw", "--all")
    assert code == 0 and out.startswith("maintenance: every prefix withdrawn")
    assert "established flows keep their backend" in out
    assert not any(p["announced"] for p in double.bgp.status()["prefixes"])
    code, out, err = xlb(double, capsys, "bgp", "announce", "web")
    assert code == 5 and out == ""
    assert err.startswith("xlb: lb1 is in maintenance (since tester at ")
    assert err.endswith(" UTC): `xlb bgp announce --all` ends it\n")
    code, out, _ = xlb(double, capsys, "bgp")
    assert "MAINTENANCE: every prefix withdrawn (tester at" in out
    code, out, _ = xlb(double, capsys, "bgp", "announce", "--all")
    assert code == 0 and out.startswith("maintenance ended")
    assert all(p["announced"] for p in double.bgp.status()["prefixes"])


def test_a_prefix_without_a_serving_backend_says_so(double: AgentDouble, capsys: Capsys) -> None:
    for b in double.vips[1]["backends"]:
        b["health"] = "down"
    code, out, _ = xlb(double, capsys, "bgp")
    dns = next(line for line in out.splitlines() if line.startswith("198.19.0.11/32"))
    assert "▽ withdrawn" in dns and "dns: 0 of 3 backends healthy and undrained" in dns


@pytest.mark.parametrize("argv,code,said", [
    (["bgp", "withdraw", "nope"], 5, "xlb: no VIP 'nope' on lb1\n"),
    (["bgp", "withdraw"], 2, "one of the arguments VIP --all is required"),
    (["bgp", "announce", "web", "--all"], 2, "argument --all: not allowed with argument VIP"),
])
def test_bad_input_changes_nothing(double: AgentDouble, capsys: Capsys, argv: list[str],
                                   code: int, said: str) -> None:
    if code == 2:
        with pytest.raises(SystemExit) as e:
            xlb(double, capsys, *argv)
        assert e.value.code == code and said in capsys.readouterr().err
    else:
        got, _, err = xlb(double, capsys, *argv)
        assert got == code and err == said
    assert not [c for c in double.calls if c[0].startswith("bgp_")] or code == 5
    assert double.audit == [] and all(p["announced"] for p in double.bgp.status()["prefixes"])


def test_read_only_callers_are_refused_with_4(tmp_path: Path, capsys: Capsys) -> None:
    d = AgentDouble(str(tmp_path / "ro.sock"), operator=False).start()
    try:
        code, _, err = xlb(d, capsys, "bgp", "withdraw", "--all")
        assert code == 4 and "read-only" in err
        assert not d.bgp.maintenance_by
        assert xlb(d, capsys, "bgp")[0] == 0  # reading is for everyone
    finally:
        d.stop()


def test_an_instance_without_bgp(tmp_path: Path, capsys: Capsys) -> None:
    d = AgentDouble(str(tmp_path / "nobgp.sock"), bgp=False).start()
    try:
        assert xlb(d, capsys, "bgp")[:2] == (0, "BGP off: this instance has no [bgp] table\n")
        code, _, err = xlb(d, capsys, "bgp", "withdraw", "web")
        assert code == 5 and "no [bgp] table" in err
    finally:
        d.stop()


@pytest.mark.parametrize("argv", [["bgp"], ["bgp", "withdraw", "web"], ["bgp", "announce",
                                                                         "--all"]], ids=" ".join)
def test_no_agent_is_exit_code_3(argv: list[str], tmp_path: Path, capsys: Capsys) -> None:
    assert cli.main([*argv, "--socket", str(tmp_path / "lb1.sock")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("xlb: ") and "lb1.sock" in err and len(err.splitlines()) == 1


def test_completion_offers_the_actions_and_the_vips(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    d = AgentDouble(str(run / "lb1.sock")).start()
    try:
        env = environment(tmp_path, run)
        assert complete(env, "xlb bg", "xlb bgp ", "xlb bgp withdraw ", "xlb bgp announce --a") \
            == [["bgp"], ["announce", "withdraw"], ["dns", "web"], ["--all"]]
    finally:
        d.stop()
