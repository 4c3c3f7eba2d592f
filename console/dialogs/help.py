"""HelpScreen: every key of the current view and of the whole console."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.dialogs.base import Dialog


class HelpScreen(Dialog[None]):
    """The keys of `view` (its KEYS) and the console's; Esc, q or ? closes."""

    FRAME = "tall"
    BINDINGS = [Binding("q,question_mark", "cancel", "Close")]

    def __init__(self, view: str, view_keys: list[tuple[str, str]],
                 global_keys: list[tuple[str, str]], note: str = ""):
        super().__init__("Keys")
        self.view, self.view_keys, self.global_keys, self.note = (view, view_keys, global_keys,
                                                                  note)

    def compose_body(self) -> ComposeResult:
        def table(rows: list[tuple[str, str]]) -> str:
            return "\n".join(f"  {k:<12} {text}" for k, text in rows) or "  (none)"

        text = (f"[b]{self.view}[/b]\n{table(self.view_keys)}\n\n"
                f"[b]Everywhere[/b]\n{table(self.global_keys)}")
        if self.note:
            text += f"\n\n{self.note}"
        with VerticalScroll():
            yield Static(text, id="help-body", markup=True)
        yield Static("Esc or ? closes", id="dialog-hint")
