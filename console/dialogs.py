"""Modal screens: confirm a change, enter a weight, help for the current view."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.validation import Integer
from textual.widgets import Button, Input, Label, Static

MAX_WEIGHT = 65535


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no for a change; dismisses with True only on an explicit yes."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n", "answer(False)", "No"),
                Binding("escape", "answer(False)", "Cancel")]

    def __init__(self, title: str, body: str, yes: str = "Yes", danger: bool = True):
        super().__init__()
        self.title_text, self.body, self.yes, self.danger = title, body, yes, danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="danger" if self.danger else ""):
            yield Label(self.title_text, id="dialog-title", markup=False)
            yield Static(self.body, id="dialog-body", markup=False)  # addresses like [fd00::1]
            with Horizontal(id="dialog-buttons"):
                yield Button(f"{self.yes} (y)", variant="error" if self.danger else "primary",
                             id="yes")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # Enter on the default does nothing harmful

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class WeightScreen(ModalScreen[int | None]):
    """A new weight, 0..65535; the input refuses anything else and says why."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, backend: str, vip: str, current: int):
        super().__init__()
        self.backend, self.vip, self.current = backend, vip, current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Weight of {self.backend} in VIP {self.vip}", id="dialog-title",
                        markup=False)
            yield Static(f"Now {self.current}. 0..{MAX_WEIGHT}; 0 takes no new flows "
                         "(like a drain). Enter applies, Esc cancels.", id="dialog-body")
            yield Input(str(self.current), id="weight-input", type="integer",
                        validators=[Integer(0, MAX_WEIGHT,
                                            failure_description=f"a whole number 0..{MAX_WEIGHT}")],
                        validate_on=["changed", "submitted"])
            yield Label("", id="weight-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show(event.validation_result)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.validation_result is not None and not event.validation_result.is_valid:
            self._show(event.validation_result)
            return
        try:
            value = int(event.value)
        except ValueError:
            self.query_one("#weight-error", Label).update(f"✗ a whole number 0..{MAX_WEIGHT}")
            return
        self.dismiss(value)

    def _show(self, result: object) -> None:
        label = self.query_one("#weight-error", Label)
        problems = getattr(result, "failure_descriptions", [])
        label.update("✗ " + "; ".join(problems) if problems else "")

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key of the current view and of the whole console."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, view: str, view_keys: list[tuple[str, str]],
                 global_keys: list[tuple[str, str]], note: str = ""):
        super().__init__()
        self.view, self.view_keys, self.global_keys, self.note = (view, view_keys, global_keys,
                                                                  note)

    def compose(self) -> ComposeResult:
        def table(rows: list[tuple[str, str]]) -> str:
            return "\n".join(f"  {k:<12} {text}" for k, text in rows) or "  (none)"

        text = (f"[b]{self.view}[/b]\n{table(self.view_keys)}\n\n"
                f"[b]Everywhere[/b]\n{table(self.global_keys)}")
        if self.note:
            text += f"\n\n{self.note}"
        with Vertical(id="dialog", classes="help"):
            yield Label("Keys", id="dialog-title")
            with VerticalScroll():
                yield Static(text, id="help-body", markup=True)
            yield Static("Esc or ? closes", id="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)


class BackendScreen(ModalScreen[None]):
    """One backend in full, and the audit trail of changes to it (fetched in a worker)."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, title: str, facts: list[tuple[str, str]]):
        super().__init__()
        self.title_text, self.facts = title, facts

    def compose(self) -> ComposeResult:
        width = max(len(k) for k, _ in self.facts)
        with Vertical(id="dialog", classes="help"):
            yield Label(self.title_text, id="dialog-title", markup=False)
            yield Static("\n".join(f"{k:<{width}}  {v}" for k, v in self.facts), id="dialog-body",
                         markup=False)
            yield Label("Recent changes (audit log)", id="audit-title")
            with VerticalScroll():
                yield Static("loading …", id="audit-body", markup=False)
            yield Static("Esc closes", id="dialog-hint")

    def show_audit(self, lines: list[str]) -> None:
        self.query_one("#audit-body", Static).update("\n".join(lines) or "no changes recorded")

    def action_close(self) -> None:
        self.dismiss(None)
