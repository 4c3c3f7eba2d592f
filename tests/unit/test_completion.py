"""Shell completion: `xlb completion bash|zsh` prints a valid script, and the completion
function it defines, called as bash calls it, offers commands and options from the parser
and instance names, sockets, VIP names and backend addresses from the agents (here two
protocol-speaking test doubles); with no agent, or a hung one, it offers nothing, says
nothing and returns."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_double import AgentDouble
from tests.helpers import REPO

# what bash does on TAB, for a command line typed up to its end
HARNESS = r"""
source <(xlb completion bash)
words() {
  COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9
  read -ra COMP_WORDS <<< "$COMP_LINE"
  [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMPREPLY=()
  _python_argcomplete "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" \
      "${COMP_WORDS[COMP_CWORD-1]}"
  echo "${#COMPREPLY[@]}${COMPREPLY[*]/#/ }"
}
while IFS= read -r line; do words "$line"; done
"""


def environment(tmp: Path, run_root: Path) -> dict[str, str]:
    """`xlb` on PATH (this checkout, this interpreter) and the run root to look in."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    xlb = bin_dir / "xlb"
    xlb.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m xlb "$@"\n')
    xlb.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PYTHONPATH": str(REPO), "XLB_RUN_ROOT": str(run_root),
            "XLB_PIN_ROOT": str(tmp / "pins")}


def complete(env: dict[str, str], *lines: str) -> list[list[str]]:
    """The words bash is offered for each command line (as typed so far)."""
    r = subprocess.run(["bash", "-c", HARNESS], input="\n".join(lines) + "\n", env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # silent, whatever happens
    out = [line.split() for line in r.stdout.splitlines()]
    assert len(out) == len(lines), r.stdout
    for words in out:
        assert int(words[0]) == len(words) - 1, out
    return [sorted(w.strip() for w in words[1:]) for words in out]


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Path]:
    """Two agents (test doubles) in a run root of their own, and a loaded instance."""
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "pins" / "lb3").mkdir(parents=True)
    (tmp_path / "pins" / "lb3" / "meta").write_text("{}")
    doubles = [AgentDouble(str(run / "lb1.sock"), "lb1", backends=3, vips=2).start(),
               AgentDouble(str(run / "lb2.sock"), "lb2", backends=5, vips=3).start()]
    try:
        yield run
    finally:
        for d in doubles:
            d.stop()


def test_the_script_is_valid_bash_and_zsh(tmp_path: Path) -> None:
    env = environment(tmp_path, tmp_path)
    for shell in ("bash", "zsh"):
        r = subprocess.run([sys.executable, "-m", "xlb", "completion", shell], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "_python_argcomplete" in r.stdout, r.stderr
        script = tmp_path / f"xlb.{shell}"
        script.write_text(r.stdout)
        if shell == "zsh" and shutil.which("zsh") is None:
            why = "zsh is not installed (scripts/bootstrap installs it)"
            if os.environ.get("XLB_TESTS_STRICT") == "1":
                pytest.fail(why)
            pytest.skip(why)
        check = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0 and check.stderr == "", (shell, check.stderr)
    # zsh's completion system takes it as the completer of xlb
    r = subprocess.run(["zsh", "-f", "-c", "autoload -U compinit && compinit -u -D && "
                        f"source {tmp_path / 'xlb.zsh'} && print -r -- $_comps[xlb]"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.strip() == "_python_argcomplete", r.stderr


INSTALLED = Path("/etc/bash_completion.d/xlb")


@pytest.mark.skipif(not INSTALLED.parent.is_dir(), reason="no /etc/bash_completion.d here")
def test_bootstrap_installed_the_current_bash_script(tmp_path: Path) -> None:
    """scripts/bootstrap (which scripts/test runs first) keeps it up to date."""
    r = subprocess.run([sys.executable, "-m", "xlb", "completion", "bash"], capture_output=True,
                       text=True, env=environment(tmp_path, tmp_path), timeout=60)
    assert INSTALLED.exists() and INSTALLED.read_text() == r.stdout


def test_commands_and_options_come_from_the_parser(tmp_path: Path) -> None:
    env = environment(tmp_path, tmp_path / "empty")
    assert complete(env, "xlb dr", "xlb lab t", "xlb completion ", "xlb weight 10.0.0.1 5 --f",
                    "xlb lab traffic --v") == [
        ["drain", "drops"], ["traffic"], ["bash", "zsh"], ["--force"], ["--v6-every"]]


def test_names_and_addresses_come_from_the_agents(agents: Path, tmp_path: Path) -> None:
    env = environment(tmp_path, agents)
    lb1 = str(agents / "lb1.sock")
    lb1_backends = ["198.18.2.1", "198.18.2.2", "198.18.2.3"]
    got = complete(env, "xlb status --instance ", "xlb dataplane unload --instance l",
                   "xlb vips --socket ",
                   "xlb drain --vip ", f"xlb drain --socket {lb1} --vip ",
                   f"xlb undrain --socket {lb1} ", "xlb weight --vip api 198.18.2.",
                   "xlb backend remove --vip dns ", "xlb vip remove a")
    assert got == [
        ["lb1", "lb2", "lb3"], ["lb1", "lb2", "lb3"], [lb1, str(agents / "lb2.sock")],
        ["api", "dns", "web"], ["dns", "web"],
        lb1_backends, [*lb1_backends, "198.18.2.4", "198.18.2.5"],
        [*lb1_backends, "198.18.2.4", "198.18.2.5"], ["api"]]


def zsh_answer(env: dict[str, str], line: str) -> list[str]:
    """What `xlb` answers zsh's completion function (as the script asks it) for `line`:
    word:description entries, colons in the word escaped."""
    env = {**env, "COMP_LINE": line, "COMP_POINT": str(len(line)), "_ARGCOMPLETE": "1",
           "_ARGCOMPLETE_SHELL": "zsh", "_ARGCOMPLETE_SUPPRESS_SPACE": "1", "IFS": "\013"}
    r = subprocess.run(["bash", "-c", "xlb 8>&1 1>/dev/null 2>&1"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    return r.stdout.split("\013")


def test_zsh_sees_what_each_word_is(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    double = AgentDouble(str(run / "lb1.sock"), backends=2, vips=2)
    double.vips[1]["backends"].append({"address": "fd00::1", "weight": 1, "state": "drained",
                                       "health": "up"})
    double.start()
    try:
        env = environment(tmp_path, run)
        assert zsh_answer(env, "xlb drain --vip ") == ["web:198.19.0.10:80/tcp",
                                                       "dns:198.19.0.11:53/udp"]
        assert zsh_answer(env, "xlb undrain ") == [
            "198.18.2.1:in web (active), dns (active)",
            "198.18.2.2:in web (active), dns (active)", r"fd00\:\:1:in dns (drained)"]
        assert zsh_answer(env, "xlb dra") == [
            "drain:Drain a backend: no new flows to it; its established flows stay until "
            "they close"]
    finally:
        double.stop()


def test_no_agent_or_a_hung_one_completes_nothing_quietly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(run / "lb1.sock"))
    hung.listen(8)  # takes connections, never answers
    try:
        env = environment(tmp_path, run)
        lines = ("xlb drain ", "xlb drain --vip ", "xlb vip remove ")
        assert complete(env, *lines) == [[], [], []]
        assert complete(environment(tmp_path, tmp_path / "none"), *lines) == [[], [], []]
    finally:
        hung.close()
