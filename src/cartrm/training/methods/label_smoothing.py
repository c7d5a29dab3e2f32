"""``label-smoothing``: Bradley–Terry towards the target preference 1 − ε."""

from __future__ import annotations

from cartrm.training.methods.base import register
from cartrm.training.methods.bt import BradleyTerry


@register
class LabelSmoothing(BradleyTerry):
    """Bradley–Terry with label smoothing ε (``TrainConfig.label_smoothing``): the target preference is 1 − ε."""

    name = "label-smoothing"

    def smoothing(self) -> float:
        return self.config.label_smoothing
