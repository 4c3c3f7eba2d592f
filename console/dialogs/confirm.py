"""ConfirmScreen: yes or no before a change."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Button, Static

from console.dialogs.base import Dialog


class ConfirmScreen(Dialog[bool]):
    """Yes/no for a change; dismisses with True only on an explicit yes."""

    DEFAULT_CSS = """
    ConfirmScreen #dialog-buttons {
        height: auto;
        align-horizontal: right;
        & > Button { margin-left: 2; }
    }
    """
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No")]

    def __init__(self, title: str, body: str, yes: str = "Yes", danger: bool = True):
        super().__init__(title, frame="danger" if danger else "")
        self.body, self.yes, self.danger = body, yes, danger

    def compose_body(self) -> ComposeResult:
        yield from self.compose_message()
        with Horizontal(id="dialog-buttons"):
            yield Button(f"{self.yes} (y)", variant="error" if self.danger else "primary",
                         id="yes")
            yield Button("Cancel (n)", id="no")

    def compose_message(self) -> ComposeResult:
        """What is asked, above the buttons."""
        yield Static(self.body, id="dialog-body", markup=False)  # addresses like [fd00::1]

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # Enter on the default does nothing harmful

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def action_cancel(self) -> None:
        """Esc is a no."""
        self.dismiss(False)
