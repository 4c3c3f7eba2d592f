"""The command line: every command documents itself with examples, and every error xlb
knows is one line on stderr with its exit code, never a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from xlb import cli
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
    for action in parser._actions:
        if action.option_strings and action.help != argparse.SUPPRESS:
            assert action.help, f"`xlb {line}`: {action.option_strings} has no help"


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
    (AgentUnavailable("no agent is running"), 1),
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


def test_lab_traffic_help_needs_no_lab(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["lab", "traffic", "-h"])
    assert e.value.code == 0
    assert "--rate" in capsys.readouterr().out
