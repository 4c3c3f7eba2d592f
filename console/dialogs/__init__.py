"""Modal dialogs, one module each, all drawn in the one frame of `Dialog` (base.py)."""

from console.dialogs.backend import BackendScreen
from console.dialogs.base import Dialog
from console.dialogs.confirm import ConfirmScreen
from console.dialogs.examples import ExamplesScreen
from console.dialogs.help import HelpScreen
from console.dialogs.weight import MAX_WEIGHT, WeightScreen

__all__ = ["MAX_WEIGHT", "BackendScreen", "ConfirmScreen", "Dialog", "ExamplesScreen",
           "HelpScreen",
           "WeightScreen"]
