"""The command line: every command documents itself with examples, and every error xlb
knows is one line on stderr with its exit code, never a traceback."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO
from xlb import cli
from xlb import errors as E
from xlb.errors import AgentUnavailable, UsageError, XlbError


def every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    """(command line, parser) for every command and every action of a group command."""
    out = []

    def walk(prefix: str, p: argparse.ArgumentParser) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if prefix:
            out.append((prefix, p))
        for s in subs:
            for name, child in s.choices.items():
                walk(f"{prefix} {name}".strip(), child)

    walk("", cli.build_parser())
    return out


@pytest.mark.parametrize("line,parser", every_parser(), ids=lambda x: x if isinstance(x, str)
                         else "")
def test_every_command_has_help_with_examples(line: str, parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()
    assert "examples:" in text, f"`xlb {line} --help` shows no examples"
    assert f"xlb {line}" in text.split("examples:", 1)[1], f"`xlb {line}`: examples of another"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def run_with(monkeypatch: pytest.MonkeyPatch, error: BaseException,
             capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    def boom(_args: Any) -> int:
        raise error

    monkeypatch.setattr("xlb.cli.vips.run", boom)
    code = cli.main(["vips"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("error,code", [
    (AgentUnavailable("no agent is running"), 3),
    (UsageError("add --yes to confirm"), 2),
    (XlbError("something clear"), 1),
])
def test_known_errors_are_one_line_with_their_exit_code(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        error: XlbError, code: int) -> None:
    got, err = run_with(monkeypatch, error, capsys)
    assert got == code == error.exit_code
    assert err == f"xlb: {error}\n"


def test_a_bug_is_not_dressed_up_as_a_known_error(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ZeroDivisionError):
        run_with(monkeypatch, ZeroDivisionError("bug"), capsys)


def test_a_bad_theme_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    themes = tmp_path / "themes"
    themes.mkdir()
    (themes / "xlb-dark.toml").write_text('name = "xlb-dark"\nprimary = "#112233"\n')
    (themes / "broken.toml").write_text("primary = [unclosed\n")
    sock = tmp_path / "lb1.sock"
    sock.touch()
    monkeypatch.setattr("console.themes.data_dir", lambda name, package: themes)
    code = cli.main(["console", "--socket", str(sock)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("xlb: theme file ") and "broken.toml" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("cls,code", [
    (E.XlbError, 1), (E.ConfigError, 1), (E.InvalidParams, 1), (E.ApplyError, 1),
    (E.AuditError, 1), (E.AgentError, 1), (E.LabError, 1), (E.NotLoadedError, 1),
    (E.UsageError, 2),
    (E.AgentUnavailable, 3), (E.AgentBusy, 3),
    (E.ReadOnlyError, 4), (E.PrivilegeError, 4),
    (E.RefusedError, 5), (E.OwnedError, 5),
], ids=lambda x: x.__name__ if isinstance(x, type) else str(x))
def test_exit_code_of_each_error_class(cls: type[XlbError], code: int) -> None:
    assert cls.exit_code == code
    # an answer from the agent keeps its class, so its exit code, on the client's side
    if cls.rpc_code != E.ErrorCode.INTERNAL and cls not in (E.OwnedError, E.UsageError):
        assert type(E.from_rpc(cls.rpc_code, "x")).exit_code == code


def test_readme_documents_every_exit_code() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    codes = [int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)]
    assert codes == sorted(int(c) for c in E.ExitCode)


def test_undrain_offers_no_options_that_do_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """An undrain only gives a backend flows: there is nothing to force or to confirm."""
    for extra in ("--force", "--yes"):
        with pytest.raises(SystemExit) as e:
            cli.main(["undrain", "10.0.1.2", extra])
        assert e.value.code == 2
        assert f"unrecognized arguments: {extra}" in capsys.readouterr().err


@pytest.mark.parametrize("argv,code,said", [
    (["weight", "10.0.1.2", "0"], 2, "xlb: set weight 0 of 10.0.1.2 in every VIP that has it: "
                                     "add --yes to confirm (no terminal to ask on)\n"),
    (["weight", "10.0.1.2", "0", "--vip", "web"], 2,
     "xlb: set weight 0 of 10.0.1.2 in VIP web: add --yes to confirm (no terminal to ask on)\n"),
    (["drain", "10.0.1.2"], 2, "xlb: drain 10.0.1.2 in every VIP that has it: add --yes to "
                               "confirm (no terminal to ask on)\n"),
    # nothing to confirm: straight to the (missing) agent
    (["weight", "10.0.1.2", "5"], 3, None),
    (["weight", "10.0.1.2", "0", "--yes"], 3, None),
])
def test_weight_zero_is_confirmed_like_a_drain(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        argv: list[str], code: int, said: str | None) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert cli.main([*argv, "--socket", str(tmp_path / "none.sock")]) == code
    err = capsys.readouterr().err
    assert err == said if said else "none.sock" in err


def test_lab_traffic_hands_its_options_to_the_generator(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`xlb lab traffic` checks the options (help, completion, usage errors without a lab);
    the generator in the client namespace gets them all and parses them the same way."""
    from xlb.lab import traffic_args

    seen: list[list[str]] = []

    class Started:
        returncode = 0

        def communicate(self) -> tuple[bytes, None]:
            return b'{"tcp_ok": 1}\n', None

    def start(argv: list[str], stdout: int | None = None) -> Started:
        seen.append(argv)
        return Started()

    monkeypatch.setattr("xlb.lab.run.traffic", start)
    monkeypatch.setattr("xlb.lab.modes.packets", lambda: {})
    monkeypatch.setattr("xlb.lab.modes.report", lambda before: {"lb1": {}})
    assert cli.main(["lab", "traffic", "--rate", "7.5", "--v6-every", "0", "--json"]) == 0
    # --json: the generator's summary and the LBs' view by mode, one JSON line
    assert json.loads(capsys.readouterr().out) == {"tcp_ok": 1, "lbs": {"lb1": {}}}
    ap = argparse.ArgumentParser()
    traffic_args.add_arguments(ap)
    assert vars(ap.parse_args(seen[0])) == {"rate": 7.5, "concurrency": 32, "duration": 0.0,
                                            "udp_every": 1, "v6_every": 0, "json": True}
    with pytest.raises(SystemExit) as e:  # refused before the lab is looked at
        cli.main(["lab", "traffic", "--concurrency", "0"])
    assert e.value.code == 2 and len(seen) == 1


@pytest.mark.parametrize("argv", [
    ["vips"], ["backends"], ["drops"], ["audit"], ["console"], ["drain", "10.0.1.2", "--yes"],
    ["undrain", "10.0.1.2"], ["weight", "10.0.1.2", "5"], ["backend", "add", "10.0.1.9",
                                                          "--vip", "web"],
    ["backend", "remove", "10.0.1.9", "--vip", "web", "--yes"], ["vip", "remove", "api",
                                                                  "--yes"],
    ["mode", "web", "snat", "--yes"], ["xdp-mode"], ["xdp-mode", "generic", "--yes"],
], ids=" ".join)
def test_no_agent_is_exit_code_3_for_every_command_that_asks_one(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--socket", str(tmp_path / "lb1.sock")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("xlb: ") and "lb1.sock" in err and len(err.splitlines()) == 1
