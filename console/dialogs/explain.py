"""ExplainScreen: what the data plane would do with one flow, step by step, asked of the agents.

The flow is typed as the CLI takes it (`xlb explain`): SRC[:SPORT] DST:DPORT
[tcp|udp] [syn], v6 in brackets. What can be checked here (addresses, ports,
the words) is checked before asking; the agent answers the rest, from its
pinned maps, without sending a packet.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Input, Label, Static

from console.dialogs.base import Dialog
from xlb.api.protocol import Explain

FLOW_FORM = "SRC[:SPORT] DST:DPORT [tcp|udp] [syn]"
# asks every agent concerned; answers (instance, Explain or why not)
Ask = Callable[[dict[str, Any]], Awaitable[list[tuple[str, Explain | str]]]]


def parse_flow(text: str) -> dict[str, Any]:
    """The explain method's parameters for `text`; ValueError says what is wrong."""
    words = text.split()
    if len(words) < 2:
        raise ValueError(f"expected {FLOW_FORM}")
    src, sport = _endpoint(words[0], "source", port_needed=False)
    dst, dport = _endpoint(words[1], "destination", port_needed=True)
    protocol, syn = "tcp", False
    for word in words[2:]:
        w = word.lower()
        if w in ("tcp", "udp"):
            protocol = w
        elif w in ("syn", "--syn"):
            syn = True
        else:
            raise ValueError(f"expected tcp, udp or syn, got {word!r} (explain covers TCP "
                             "and UDP flows)")
    if syn and protocol != "tcp":
        raise ValueError("syn goes with tcp only")
    return {"src": src, "sport": sport, "dst": dst, "dport": dport, "protocol": protocol,
            "syn": syn}


def _endpoint(word: str, what: str, port_needed: bool) -> tuple[str, int | None]:
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", word)
    if bracketed:
        host, port = bracketed.group(1), bracketed.group(2)
    elif word.count(":") == 1:
        host, port = word.split(":")
    else:
        host, port = word, None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{what}: {host!r} is not an IP address") from None
    if port is None:
        if port_needed:
            raise ValueError(f"{what}: a port is needed ({host}:PORT, or [v6]:PORT)")
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what}: port {port!r} is not 1..65535")
    return host, int(port)


def explain_lines(answers: list[tuple[str, Explain | str]]) -> str:
    """The answers for people: per instance its flow, one line per step, the outcome."""
    out = []
    for instance, ex in answers:
        if isinstance(ex, str):
            out.append(f"{instance}: not explained: {ex}")
            continue
        out.append(f"{instance}: {ex['flow']}")
        width = max((len(s["step"]) for s in ex["steps"]), default=0)
        out += [f"  {s['step']:<{width}}  {s['text']}" for s in ex["steps"]]
        shares = ex.get("shares") or {}
        if shares:
            out.append("  share of the source ports: " + ", ".join(
                f"{b} {100 * x:.1f} %" for b, x in sorted(shares.items(), key=lambda i: -i[1])))
        outcome = f"  ⇒ {ex['action']} ({ex['reason']})"
        if ex["backend"]:
            outcome += f": backend {ex['backend']} by {ex['path']}"
        if ex["outer_src"]:
            outcome += f", outer source {ex['outer_src']}"
        out.append(outcome)
        out.append("")
    return "\n".join(out).rstrip()


class ExplainScreen(Dialog[None]):
    """A flow in, the agents' explanation out; the box stays for the next flow."""

    FRAME = "tall"
    DEFAULT_CSS = """
    ExplainScreen #explain-error { color: $error; height: auto; }
    ExplainScreen #explain-scroll { height: 1fr; }
    """
    BINDINGS = [Binding("ctrl+q", "cancel", "Close", show=False)]

    def __init__(self, ask: Ask, flow: str = "", where: str = ""):
        super().__init__("Explain a flow" + (f" on {where}" if where else ""))
        self.ask, self.flow = ask, flow

    def compose_body(self) -> ComposeResult:
        yield Static(f"{FLOW_FORM}, e.g. 198.18.0.12:40000 198.19.0.10:80 tcp, or "
                     "[fd00::12] [fd00::10]:443. The agent reads its maps; no packet is sent.",
                     id="dialog-body", markup=False)
        yield Input(self.flow, id="explain-input", placeholder=FLOW_FORM)
        yield Label("", id="explain-error")
        with VerticalScroll(id="explain-scroll"):
            yield Static("", id="explain-body", markup=False)
        yield Static("Enter explains, Esc closes", id="dialog-hint")

    def on_mount(self) -> None:
        box = self.query_one("#explain-input", Input)
        box.focus()
        if self.flow:
            self._explain(self.flow)

    @on(Input.Submitted, "#explain-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self._explain(event.value)

    def _explain(self, text: str) -> None:
        error = self.query_one("#explain-error", Label)
        try:
            params = parse_flow(text)
        except ValueError as e:
            error.update(f"✗ {e}")
            return
        error.update("")
        self.query_one("#explain-body", Static).update("asking …")
        self.run_worker(self._ask(params), exclusive=True, group="explain")

    async def _ask(self, params: dict[str, Any]) -> None:
        answers = await self.ask(params)
        self.query_one("#explain-body", Static).update(explain_lines(answers))
