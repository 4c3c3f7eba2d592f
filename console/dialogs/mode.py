"""ModeScreen: yes or no before a mode switch, saying what happens to which flows.

A switch is harmless only when its consequences are understood (established
flows keep their mode, a SNAT backend sees the pool, an XDP re-attach leaves a
gap), so the question is laid out as the change itself (from → to) and one
line per consequence, and a line that stands out for what will go wrong (the
agent will refuse, the driver cannot do native).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal
from textual.widgets import Label, Static

from console.dialogs.confirm import ConfirmScreen


class ModeScreen(ConfirmScreen):
    """`what` switches from `before` to `after`; `points` are (topic, what happens)."""

    DEFAULT_CSS = """
    ModeScreen {
        & > #dialog { width: 84; padding: 0 2; }
        #mode-change { height: auto; margin-bottom: 1; }
        #mode-what { width: auto; }
        .mode-name { width: auto; text-style: bold; padding: 0 1; }
        #mode-before { background: $panel; color: $text-muted; }
        #mode-arrow { width: auto; padding: 0 1; }
        #mode-after { background: $accent; color: $text; }
        #mode-points {
            grid-size: 2;
            grid-columns: 13 1fr;
            grid-gutter: 0 1;
            height: auto;
            margin-bottom: 1;
        }
        #mode-points > Static { height: auto; }
        .mode-topic { text-style: bold; color: $text-accent; }
        #mode-warning {
            height: auto;
            margin-bottom: 1;
            padding: 0 1;
            border-left: thick $warning;
            color: $text-warning;
        }
    }
    """

    def __init__(self, title: str, what: str, before: str, after: str,
                 points: list[tuple[str, str]], warning: str = "", yes: str = "Switch",
                 danger: bool = False):
        super().__init__(title, "", yes=yes, danger=danger)
        self.what, self.before, self.after = what, before, after
        self.points, self.warning = points, warning

    def compose_message(self) -> ComposeResult:
        with Horizontal(id="mode-change"):
            yield Label(self.what, id="mode-what", markup=False)
            yield Label(self.before, id="mode-before", classes="mode-name", markup=False)
            yield Label("→", id="mode-arrow")
            yield Label(self.after, id="mode-after", classes="mode-name", markup=False)
        with Grid(id="mode-points"):
            for topic, text in self.points:
                yield Static(topic, classes="mode-topic", markup=False)
                yield Static(text, markup=False)   # addresses like [fd00::1]
        if self.warning:
            yield Static(self.warning, id="mode-warning", markup=False)
