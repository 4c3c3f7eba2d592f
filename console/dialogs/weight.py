"""WeightScreen: a backend's new weight, checked before anything is sent."""

from __future__ import annotations

from console.dialogs.number import NumberDialog
from xlb.api.protocol import MAX_WEIGHT


class WeightScreen(NumberDialog):
    """A new weight, 0..MAX_WEIGHT; the input refuses anything else and says why (None: Esc)."""

    NAME = "weight"
    LOW, HIGH = 0, MAX_WEIGHT

    def __init__(self, backend: str, vip: str, current: int):
        super().__init__(f"Weight of {backend} in VIP {vip}",
                         f"Now {current}. 0..{MAX_WEIGHT}; 0 takes no new flows (like a "
                         "drain). Enter applies, Esc cancels.", current)
        self.backend, self.vip = backend, vip
