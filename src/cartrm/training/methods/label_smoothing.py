"""``label-smoothing``: Bradley–Terry towards the target preference 1 − ε."""

from __future__ import annotations

from cartrm.training.methods.base import register
from cartrm.training.methods.bt import BradleyTerry
from cartrm.training.settings import LabelSmoothingSettings


@register
class LabelSmoothing(BradleyTerry):
    """Bradley–Terry with label smoothing ε (its ``label_smoothing`` setting): the target preference is 1 − ε."""

    name = "label-smoothing"
    Settings = LabelSmoothingSettings
    settings: LabelSmoothingSettings

    def smoothing(self) -> float:
        return self.settings.label_smoothing
