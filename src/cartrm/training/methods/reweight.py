"""``reweight``: Bradley–Terry with tail importance weights."""

from __future__ import annotations

from typing import Any

import torch

from cartrm.errors import CartError
from cartrm.training.batches import TrainBatch
from cartrm.training.methods.base import TrainingContext, register
from cartrm.training.methods.bt import BradleyTerry
from cartrm.training.settings import ReweightSettings


@register
class TailReweight(BradleyTerry):
    """Importance weights: tail pairs weigh ``tail_weight`` (default ``N_head / N_tail``, so head and tail
    contribute equally), head pairs 1; the loss is the weighted mean."""

    name = "reweight"
    Settings = ReweightSettings
    settings: ReweightSettings
    needs_tail = True

    def setup(self, reward_model: Any, dataset: Any, context: TrainingContext) -> None:
        n_tail = int(context.tail_mask.sum())
        if n_tail == 0 or n_tail == len(context.tail_mask):
            raise CartError("reweight needs both head and tail examples in the training data")
        self.tail_weight = self.settings.tail_weight or (len(context.tail_mask) - n_tail) / n_tail

    def example_weights(self, batch: TrainBatch) -> torch.Tensor:
        return batch.weight * torch.where(batch.is_tail, self.tail_weight, 1.0)
