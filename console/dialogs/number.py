"""NumberDialog: one whole number in a range, checked before anything is sent.

The weight and sampling dialogs are this with their own words: the input
refuses anything outside LOW..HIGH and says why, Enter answers the number,
Esc answers None.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.validation import Integer
from textual.widgets import Input, Label, Static

from console.dialogs.base import Dialog


class NumberDialog(Dialog[int | None]):
    NAME = "number"   # the ids: #NAME-input, #NAME-error
    LOW, HIGH = 0, 1

    DEFAULT_CSS = """
    NumberDialog .number-error { color: $error; height: 1; }
    """

    def __init__(self, heading: str, body: str, current: int):
        super().__init__(heading)
        self.body, self.current = body, current

    def compose_body(self) -> ComposeResult:
        yield Static(self.body, id="dialog-body", markup=False)
        yield Input(str(self.current), id=f"{self.NAME}-input", type="integer",
                    validators=[Integer(self.LOW, self.HIGH, failure_description=self._range())],
                    validate_on=["changed", "submitted"])
        yield Label("", id=f"{self.NAME}-error", classes="number-error")

    def _range(self) -> str:
        return f"a whole number {self.LOW}..{self.HIGH}"

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        result = event.validation_result
        self._say("; ".join(result.failure_descriptions) if result is not None else "")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.validation_result is not None and not event.validation_result.is_valid:
            self._say("; ".join(event.validation_result.failure_descriptions))
            return
        try:
            value = int(event.value)
        except ValueError:
            self._say(self._range())
            return
        self.dismiss(value)

    def _say(self, problem: str) -> None:
        self.query_one(f"#{self.NAME}-error", Label).update(f"✗ {problem}" if problem else "")
