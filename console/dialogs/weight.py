"""WeightScreen: a backend's new weight, checked before anything is sent."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.validation import Integer, ValidationResult
from textual.widgets import Input, Label, Static

from console.dialogs.base import Dialog
from xlb.api.protocol import MAX_WEIGHT


class WeightScreen(Dialog[int | None]):
    """A new weight, 0..MAX_WEIGHT; the input refuses anything else and says why (None: Esc)."""

    DEFAULT_CSS = """
    WeightScreen #weight-error { color: $error; height: 1; }
    """

    def __init__(self, backend: str, vip: str, current: int):
        super().__init__(f"Weight of {backend} in VIP {vip}")
        self.backend, self.vip, self.current = backend, vip, current

    def compose_body(self) -> ComposeResult:
        yield Static(f"Now {self.current}. 0..{MAX_WEIGHT}; 0 takes no new flows "
                     "(like a drain). Enter applies, Esc cancels.", id="dialog-body")
        yield Input(str(self.current), id="weight-input", type="integer",
                    validators=[Integer(0, MAX_WEIGHT,
                                        failure_description=f"a whole number 0..{MAX_WEIGHT}")],
                    validate_on=["changed", "submitted"])
        yield Label("", id="weight-error")

    def on_mount(self) -> None:
        self.query_one("#weight-input", Input).focus()

    @on(Input.Changed, "#weight-input")
    def _changed(self, event: Input.Changed) -> None:
        self._show(event.validation_result)

    @on(Input.Submitted, "#weight-input")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.validation_result is not None and not event.validation_result.is_valid:
            self._show(event.validation_result)
            return
        try:
            value = int(event.value)
        except ValueError:
            self.query_one("#weight-error", Label).update(f"✗ a whole number 0..{MAX_WEIGHT}")
            return
        self.dismiss(value)

    def _show(self, result: ValidationResult | None) -> None:
        problems = result.failure_descriptions if result is not None else []
        self.query_one("#weight-error", Label).update("✗ " + "; ".join(problems)
                                                      if problems else "")
