"""SampleScreen: keep 1 in N of the packets the trace's filter matches."""

from __future__ import annotations

from console.dialogs.number import NumberDialog

MAX_SAMPLE = 1_000_000


class SampleScreen(NumberDialog):
    """N, 1..MAX_SAMPLE (1: every matching packet); None: Esc."""

    NAME = "sample"
    LOW, HIGH = 1, MAX_SAMPLE

    def __init__(self, current: int, filter_text: str):
        super().__init__("Trace sampling",
                         f"Keep 1 in N of the packets matching {filter_text or 'every packet'}. "
                         f"Now 1 in {current}; 1 keeps them all. Enter restarts the trace "
                         "with it, Esc cancels.", current)
