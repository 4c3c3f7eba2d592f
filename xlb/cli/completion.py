"""Print the shell completion script for bash or zsh (generated from the parser).

Commands, actions and options complete everywhere; instance names, agent sockets,
VIP names and backend addresses come from /run/xlb and the running agents (an agent
that does not answer within half a second adds nothing: completion never hangs).
`scripts/bootstrap` installs the bash script where bash-completion looks.

examples:
  xlb completion bash > /etc/bash_completion.d/xlb
  xlb completion zsh > "${fpath[1]}/_xlb"
  source <(xlb completion bash)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from typing import Any

SHELLS = ("bash", "zsh")
TIMEOUT = 0.5  # seconds an agent gets to answer a completion: a TAB must not hang

Completer = Callable[..., Iterable[str]]  # a dict: word -> what zsh shows beside it


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=SHELLS, help="the shell the script is for")


def run(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(["xlb"], shell=args.shell), end="")
    return 0


def answer(parser: argparse.ArgumentParser) -> None:
    """When the shell asks (the script sets _ARGCOMPLETE): print the words for the command
    line being typed and end the process. Otherwise return at once, importing nothing."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser, always_complete_options=False)  # options after "-"


def attach(action: argparse.Action, completer: Completer) -> argparse.Action:
    """Complete `action`'s values with `completer` (called with prefix, parsed_args, ...)."""
    action.completer = completer  # type: ignore[attr-defined]  # argcomplete reads it
    return action


# -- what the words come from ----------------------------------------------------------
def sockets(**_: Any) -> list[str]:
    """Every agent socket under the run root (/run/xlb)."""
    from xlb.api.client import find_sockets

    return find_sockets()


def instances(**_: Any) -> list[str]:
    """Instance names: of the agents' sockets and of the loaded data planes."""
    from xlb.paths import pinned_instances

    names = {os.path.basename(s)[: -len(".sock")] for s in sockets()}
    return sorted(names | set(pinned_instances()))


def vip_names(parsed_args: argparse.Namespace | None = None, **_: Any) -> dict[str, str]:
    """VIP name -> its address:port/protocol (zsh shows it beside the name)."""
    return {v["name"]: v["vip"] for v in _vips(parsed_args)}


def modes(**_: Any) -> dict[str, str]:
    """Forwarding modes -> what they do (zsh shows it beside the word)."""
    from xlb.api.protocol import MODES

    return {m: doc.split(":")[0] for m, doc in MODES.items()}


def xdp_modes(**_: Any) -> dict[str, str]:
    """XDP modes -> what they are."""
    return {"native": "in the driver (fastest; the driver must support it)",
            "generic": "in the kernel's network stack (any device, slower)"}


def backend_addresses(parsed_args: argparse.Namespace | None = None,
                      **_: Any) -> dict[str, str]:
    """Address -> the VIPs it is in, of the VIP given with --vip, else of every VIP."""
    vip = getattr(parsed_args, "vip", None)
    found: dict[str, list[str]] = {}
    for v in _vips(parsed_args):
        if vip in (None, v["name"]):
            for b in v["backends"]:
                found.setdefault(b["address"], []).append(f"{v['name']} ({b['state']})")
    return {a: "in " + ", ".join(where) for a, where in sorted(found.items())}


def _vips(parsed_args: argparse.Namespace | None) -> list[dict[str, Any]]:
    """The VIPs of the agent named by --socket, else of every agent found; an agent that
    cannot be asked (none, not ours, hung) adds nothing, and nothing is printed."""
    from xlb.api.client import AgentClient

    given = getattr(parsed_args, "socket", None)
    paths = ([given] if isinstance(given, str) else given) or sockets()
    found: list[dict[str, Any]] = []
    for path in paths:
        try:
            with AgentClient(path, timeout=TIMEOUT) as c:
                found += c.call("status")["vips"]
        except Exception:  # noqa: S110  (whatever went wrong: no words, no noise)
            continue
    return found
