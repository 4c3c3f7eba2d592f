"""Dialog: the frame every modal dialog of the console is drawn in.

Centred at any terminal size, a titled box on the theme's surface, Esc to
cancel. The layout is the class's own DEFAULT_CSS, inherited by every dialog
(theme variables only: the colours stay in the theme files), so no dialog can
be left out of the centring rule, as the backend details once were.
"""

from __future__ import annotations

from typing import TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label

ResultT = TypeVar("ResultT")


class Dialog(ModalScreen[ResultT]):
    """A modal dialog: `heading` on top, then what compose_body yields.

    The frame is #dialog; its classes are FRAME (or `frame`): "tall" for long
    content, "danger" for a destructive question.
    """

    DEFAULT_CSS = """
    Dialog {
        align: center middle;

        & > #dialog {
            width: 72;
            max-width: 95%;
            height: auto;
            max-height: 90%;
            border: thick $primary;
            background: $surface;
            padding: 1 2;

            &.danger { border: thick $error; }
            &.tall { width: 90; height: 90%; }
        }
        #dialog-title { text-style: bold; margin-bottom: 1; }
        #dialog-body { margin-bottom: 1; }
        #dialog-hint { color: $text-muted; }
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    FRAME = ""

    def __init__(self, heading: str, frame: str | None = None) -> None:
        super().__init__()
        self.heading = heading
        self.frame = self.FRAME if frame is None else frame

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes=self.frame):
            yield Label(self.heading, id="dialog-title", markup=False)  # addresses: [fd00::1]
            yield from self.compose_body()

    def compose_body(self) -> ComposeResult:
        """The dialog's content, under the heading."""
        yield from ()

    def action_cancel(self) -> None:
        """Esc: close without an answer (None)."""
        self.dismiss(None)
