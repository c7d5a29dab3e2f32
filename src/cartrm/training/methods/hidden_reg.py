"""``hidden-reg``: Bradley–Terry plus a penalty on the drift of the final hidden states (after GRM)."""

from __future__ import annotations

from typing import Any

import torch

from cartrm.training.batches import BatchBuilder, TrainBatch
from cartrm.training.methods.base import TrainingContext, register
from cartrm.training.methods.bt import BradleyTerry
from cartrm.training.settings import HiddenRegSettings

ANCHOR_BATCH = 32


@register
class HiddenStateRegularisation(BradleyTerry):
    """Bradley–Terry plus ``hidden_reg_weight · mean_j (h_j(x) − h⁰_j(x))²``, the drift of the mean-pooled
    final-layer hidden state from the initial model's.

    In the spirit of GRM (Yang et al. 2024), which regularises a reward model's hidden states so they keep
    the base model's abilities (there via a language-modelling loss through the frozen LM head). Encoder
    reward models such as MiniLM have no LM head, so the hidden states are anchored directly; h⁰ is computed
    once for every training text with the model as it is before training.
    """

    name = "hidden-reg"
    Settings = HiddenRegSettings
    settings: HiddenRegSettings

    def setup(self, reward_model: Any, dataset: Any, context: TrainingContext) -> None:
        builder = BatchBuilder(reward_model, dataset, max_length=context.max_length)
        self.n, self.pairwise = len(dataset), builder.pairwise
        self.anchor = torch.zeros(self.n * (2 if self.pairwise else 1), reward_model.model.config.hidden_size)
        with reward_model.eval_mode(), torch.inference_mode():
            for start in range(0, self.n, ANCHOR_BATCH):
                batch = builder(list(range(start, min(start + ANCHOR_BATCH, self.n))))
                self.anchor[self._rows(batch)] = _pooled_hidden(reward_model.model, batch)[1].float().cpu()

    def _rows(self, batch: TrainBatch) -> torch.Tensor:
        rows = batch.index
        return torch.cat([rows, rows + self.n]) if self.pairwise else rows

    def loss(self, module: Any, batch: TrainBatch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rewards, hidden = _pooled_hidden(module, batch)
        loss, logs = self.preference_loss(rewards, batch)
        squared = (hidden - self.anchor[self._rows(batch).cpu()].to(hidden.device, hidden.dtype)) ** 2
        drift = squared.sum() / (batch.examples() * squared.shape[0] / len(batch.weight) * squared.shape[1])
        logs["hidden_drift"] = squared.mean().item()
        return loss + self.settings.hidden_reg_weight * drift, logs


def _pooled_hidden(module: Any, batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards (B,) and the final hidden state mean-pooled over attended tokens (B, d), from one forward."""
    device = next(module.parameters()).device
    mask = batch.attention_mask.to(device)
    output = module(input_ids=batch.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
    weights = mask.unsqueeze(-1).to(output.hidden_states[-1].dtype)
    pooled = (output.hidden_states[-1] * weights).sum(1) / weights.sum(1)
    return output.logits.squeeze(-1), pooled
