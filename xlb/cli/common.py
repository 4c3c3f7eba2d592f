"""What the command modules share: one spelling of each common option, output as text
or --json, asking for confirmation, and the agent client."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from xlb.addresses import canonical_address
from xlb.api.protocol import change_text
from xlb.cli import completion
from xlb.errors import InvalidParams, UsageError

if TYPE_CHECKING:
    from xlb.api.client import AgentClient

Runner = Callable[[argparse.Namespace], int]


def command_help(doc: str | None) -> tuple[str, str]:
    """(one-line help, full description) from a command's docstring (a function's too: its
    indentation goes)."""
    first, _, rest = (doc or "").strip().partition("\n")
    text = f"{first}\n{textwrap.dedent(rest)}".strip()
    summary = " ".join(text.split("\n\n", 1)[0].split())  # the first paragraph
    return summary.rstrip("."), text


def parser_for(sub: Any, name: str, doc: str | None, run: Runner | None = None,
               **kw: Any) -> argparse.ArgumentParser:
    """A (sub)command whose help and description are `doc`, examples and all."""
    help_, description = command_help(doc)
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_, description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    if run is not None:
        p.set_defaults(func=run)
    return p


def actions(p: argparse.ArgumentParser) -> Any:
    """The actions of a group command (xlb lab up|down|...), one required."""
    return p.add_subparsers(dest="action", required=True, metavar="ACTION",
                            help="one of these (`ACTION -h` for its options):")


def action(sub: Any, run: Runner, name: str | None = None) -> argparse.ArgumentParser:
    """A subcommand of a group (xlb lab up, xlb vip add): the function's docstring is its
    help, the function runs it."""
    return parser_for(sub, name or run.__name__.rstrip("_"), run.__doc__, run)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")


def add_socket(p: argparse.ArgumentParser) -> None:
    completion.attach(p.add_argument(
        "--socket", metavar="PATH", help="the agent's socket (default: the only one in "
        "/run/xlb)"), completion.sockets)


def add_yes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def add_force(p: argparse.ArgumentParser, what: str = "a VIP") -> None:
    p.add_argument("--force", action="store_true",
                   help=f"even if it leaves {what} without a healthy backend")


def add_vip(p: argparse.ArgumentParser, help_: str, required: bool = False) -> None:
    """--vip NAME, which completes the agent's VIP names."""
    completion.attach(p.add_argument("--vip", metavar="NAME", required=required, help=help_),
                      completion.vip_names)


def add_instance(p: argparse.ArgumentParser, help_: str, required: bool = False) -> None:
    """--instance NAME, which completes the instances of this host."""
    completion.attach(p.add_argument("--instance", metavar="NAME", required=required,
                                     help=help_), completion.instances)


def add_client(p: argparse.ArgumentParser) -> None:
    """The options of every command that asks the agent: --socket and --json."""
    add_socket(p)
    add_json(p)


def output(doc: Any, args: argparse.Namespace, text: Callable[[Any], str]) -> None:
    """`doc` as JSON with --json, else as `text(doc)` for people."""
    print(json.dumps(doc, indent=2) if getattr(args, "json", False) else text(doc))


def client(args: argparse.Namespace) -> AgentClient:
    from xlb.api.client import AgentClient

    return AgentClient(getattr(args, "socket", None))


def confirm(args: argparse.Namespace, target: str, consequences: Callable[[], str]) -> bool:
    """Go on with `target`? --yes, or "y" on a terminal; with no terminal, --yes is needed
    (UsageError). `consequences` is worked out only when someone is asked."""
    if getattr(args, "yes", False):
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{target}: add --yes to confirm (no terminal to ask on)")
    answer = input(f"{target[0].upper()}{target[1:]}? {consequences()} [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("nothing changed")
    return False


def address(text: str) -> str:
    """An address argument, in its canonical spelling (what the agent compares); one that
    is not an address is a usage error."""
    try:
        return canonical_address(text)
    except InvalidParams as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_backend_change(p: argparse.ArgumentParser, guarded: bool = True) -> None:
    """The grammar of drain, undrain and weight: ADDRESS [--vip NAME], and --force --yes
    where the change can stop new flows (`guarded`: drain, weight; not undrain)."""
    completion.attach(p.add_argument("address", type=address,
                                     help="backend address (IPv4 or IPv6)"),
                      completion.backend_addresses)
    add_vip(p, "only in this VIP (by name; default: every VIP with it)")
    if guarded:
        add_force(p)
        add_yes(p)
    add_client(p)


def confirm_no_new_flows(args: argparse.Namespace, target: str) -> bool:
    """Ask before a change that stops new flows to args.address (a drain, weight 0);
    `target` says what is done ("drain", "set weight 0 of")."""
    where = f"VIP {args.vip}" if args.vip else "every VIP that has it"
    return confirm(args, f"{target} {args.address} in {where}",
                   lambda: "New connections avoid it; established ones stay.")


def backend_change(args: argparse.Namespace, method: str, **params: Any) -> int:
    """Send drain / undrain / weight for args.address and print what changed."""
    with client(args) as c:
        doc = c.call(method, address=args.address, vip=args.vip, **params)
    output(doc, args, lambda d: f"{method} {args.address}: done; "
           + change_text(d["before"], d["after"]))
    return 0
