"""``--method cart``: the combined CART objective (SPEC §Phase 3, eq. 10–16).

``L_CART = L_head + L_prog + L_aug + L_circuit`` (eq. 16):

- ``L_head + L_prog``: the Bradley–Terry loss with per-pair weights 1 (head) and ``w_t = min(w_max, η·t)``
  (tail, eq. 13), summed and divided by the batch's base weight (so the curriculum scales the tail's share).
- ``L_aug`` (eq. 10–11): for the batch's tail pairs, their circuit-guided augmentations (the candidates of
  G(x) with the largest Σ_{c∈C_v} a_c(x'), chosen when the targets were set) with the pair's label.
- ``L_circuit`` (eq. 12): ``λ Σ_{c∈C_v} Var_tail[a_c(x)]``, the population variance over the batch's tail
  texts of each target circuit's pooled activation, with gradients through the forward hooks.

Targets ``C_v`` come from the circuits and vulnerability report given to ``train`` (found on the baseline model,
which starts from the same initialisation, so the neuron ids name the same units) or, without them, from discovery
and assessment run on the model itself after ``warmup_steps`` of plain training; ``rediscover_every`` repeats that.
Beyond the paper, ``targets_from="decisive"`` makes C_v one circuit of the neurons the model's tail rewards rest on
most (:mod:`cartrm.circuits.decisive`), found on the model being trained when its targets are set.
Each time targets are set, ``OUT/cart/step-N/`` receives the circuits, vulnerability and augmented pairs.

Modules: :mod:`.method` (the method class), :mod:`.objective` (eq. 12, 13), :mod:`.variants` (the ablation options
as strategies), :mod:`.targets` (C_v), :mod:`.augmentation` (eq. 10-11 glue).
"""

from cartrm.training.methods.cart.method import CircuitAwareTraining
from cartrm.training.methods.cart.objective import (
    TargetCircuit,
    circuit_invariance,
    circuit_variance,
    progressive_weight,
)

__all__ = ["CircuitAwareTraining", "TargetCircuit", "circuit_invariance", "circuit_variance", "progressive_weight"]
