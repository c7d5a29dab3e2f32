"""``tail-upsample``: plain Bradley–Terry on bt's own batches with tail pairs added on top of each.

Every batch is the batch plain training sees, followed by ``TAIL_PAIRS_PER_BATCH`` tail pairs drawn from a cycling,
reshuffled tail order: exactly the order of CART's ``tail_sampling: add`` sampler
(:class:`~cartrm.training.sampling.TailAddingSampler`), so it sees the pairs CART sees, without the circuit parts
(no augmentation, no regulariser, no curriculum). The number of added pairs is the module's
``TAIL_PAIRS_PER_BATCH`` (4, as CART's default ``min_tail_per_batch``), not a run setting. In warm-started runs it
continues bt, as CART does (its control is then bt-continued). It is CART's ``data_control``: ``cart run`` adds it
beside CART, and the verdict reads CART − tail-upsample as what the circuits add over showing more tail pairs.
"""

from __future__ import annotations

import numpy as np

from cartrm.training.methods.base import Draw, register
from cartrm.training.methods.bt import BradleyTerry
from cartrm.training.registry import Design
from cartrm.training.sampling import TailAddingSampler

TAIL_PAIRS_PER_BATCH = 4


@register
class TailUpsample(BradleyTerry):
    """Bradley–Terry over batches of ``batch_size + TAIL_PAIRS_PER_BATCH`` pairs, the added ones from the tail."""

    name = "tail-upsample"
    design = Design(start="bt-when-warm")
    needs_tail = True

    def sampler(self, tail_mask: np.ndarray, batch_size: int, seed: int, lengths: np.ndarray | None) -> Draw:
        sampler = TailAddingSampler(tail_mask, batch_size, TAIL_PAIRS_PER_BATCH, seed, lengths=lengths)
        return Draw(sampler, batch_size + TAIL_PAIRS_PER_BATCH)
