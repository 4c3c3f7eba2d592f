"""Help is fast, complete and needs nothing running: importing the CLI loads none of the
heavy libraries (bench/cli.py prints the time of `xlb --help`), every subcommand,
option and argument has help text, and `-h` works on every command path with no lab,
no agent and none of the libraries the commands themselves use."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.unit.test_layers import HEAVY as LAYERS_HEAVY
from xlb import cli

# what `xlb --help` must not import: the commands import them when they run
HEAVY = (*LAYERS_HEAVY, "console", "argcomplete", "scapy")


def command_paths() -> list[list[str]]:
    """Every command path of the parser: [], ["drain"], ["lab", "traffic"], ..."""
    out: list[list[str]] = []

    def walk(path: list[str], p: argparse.ArgumentParser) -> None:
        out.append(path)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    walk([*path, name], child)

    walk([], cli.build_parser())
    return out


def python(code: str, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter where no agent can be found (empty run and pin roots)."""
    env = {**os.environ, "XLB_RUN_ROOT": str(tmp / "run"), "XLB_PIN_ROOT": str(tmp / "pins"),
           "XLB_STATE_ROOT": str(tmp / "state"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=tmp, timeout=60, stdin=subprocess.DEVNULL)


IMPORTED_AFTER = f"""
import json, sys
heavy = {HEAVY!r}
import xlb.cli
after_import = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
try:
    xlb.cli.main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps([after_import,
                  sorted(m for m in sys.modules if m.split(".")[0] in heavy)]))
"""


@pytest.mark.parametrize("argv", [["--help"], ["drain", "-h"], ["lab", "traffic", "-h"],
                                  ["console", "-h"], ["dataplane", "load", "-h"]],
                         ids=" ".join)
def test_help_imports_no_heavy_library(argv: list[str], tmp_path: Path) -> None:
    r = python(IMPORTED_AFTER, *argv, tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    after_import, after_help = json.loads(r.stdout.splitlines()[-1])
    assert after_import == [], f"importing xlb.cli imports {after_import}"
    assert after_help == [], f"`xlb {' '.join(argv)}` imports {after_help}"


def test_the_xlb_command_imports_no_heavy_library(tmp_path: Path) -> None:
    """The real entry point (`python -m xlb --help`), seen by the interpreter's own record of
    every module it imported."""
    env = {**os.environ, "XLB_RUN_ROOT": str(tmp_path), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "xlb", "--help"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and "usage: xlb" in r.stdout, r.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "xlb.cli" in imported
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == [], f"`xlb --help` imports {heavy}"


def actions_without_help(path: list[str], p: argparse.ArgumentParser) -> list[str]:
    missing = []
    for a in p._actions:
        name = "/".join(a.option_strings) or a.metavar or a.dest
        if not a.help or a.help == argparse.SUPPRESS:
            missing.append(f"`xlb {' '.join(path)}`: {name}")
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            missing += [f"`xlb {' '.join([*path, n])}`" for n in a.choices if not helps.get(n)]
    return missing


def test_every_subcommand_option_and_argument_has_help() -> None:
    parser = cli.build_parser()
    missing = []
    for path in command_paths():
        p = parser
        for name in path:
            (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
            p = sub.choices[name]
        missing += actions_without_help(path, p)
    assert missing == [], "no help text (or hidden): " + ", ".join(missing)


BLOCKED = HEAVY

HELP_ALONE = f"""
import runpy, sys
for m in {BLOCKED!r}:
    sys.modules[m] = None  # importing it fails: -h must not need it
sys.argv = ["xlb", *sys.argv[1:]]
runpy.run_module("xlb", run_name="__main__")
"""


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "xlb")
def test_h_works_everywhere_with_nothing_running(path: list[str], tmp_path: Path) -> None:
    """No agent (empty run root), no lab, and the libraries of the commands' bodies
    unavailable: `-h` still prints usage and exits 0."""
    r = python(HELP_ALONE, *path, "-h", tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: {' '.join(['xlb', *path])} "), r.stdout
    assert r.stderr == ""
