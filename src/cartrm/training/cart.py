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
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cartrm.capture.hooks import ActivationCapture, drop_features, pooling_mask
from cartrm.capture.stream import FeatureIndex
from cartrm.circuits.config import DiscoveryConfig
from cartrm.circuits.result import CircuitRecord, Circuits, check_circuits_fit
from cartrm.data.dataset import PreferenceDataset
from cartrm.errors import CartError
from cartrm.io import write_text_atomic
from cartrm.models.reward_model import reward_forward
from cartrm.training.methods import BradleyTerry, TrainingContext, pairwise_losses, register, reward_centring
from cartrm.training.registry import Design
from cartrm.vulnerability.result import VulnerabilityReport

ARTIFACTS = "cart"
AUGMENTED = "augmented"  # marks L_aug's pass among a batch's passes
INVARIANCE = "invariance"  # L_aug's pass also holds the source pairs (the invariance form of eq. 12)
ASSESS_SENSITIVITY_EXAMPLES = 16
AUG_CLUSTER_SIZE, AUG_MAX_CLUSTERS = 20, 10  # per_group replacement words on data without a group column


@dataclass(frozen=True)
class TargetCircuit:
    """A circuit of C_v as the regulariser reads it: per site, the local indices of its members."""

    id: str
    members: np.ndarray
    by_site: dict[str, np.ndarray]


def progressive_weight(step: int, eta: float, w_max: float) -> float:
    """eq. 13: ``w_t = min(w_max, η·t)`` with ``t = step + 1`` (the optimizer step being taken)."""
    return min(w_max, eta * (step + 1))


def circuit_variance(pooled: dict[str, torch.Tensor], targets: list[TargetCircuit], rows: torch.Tensor) -> torch.Tensor:
    """eq. 12 without λ: Σ_c Var over ``rows`` of a_c(x), the mean of the members' pooled activations."""
    total = next(iter(pooled.values())).new_zeros(())
    if int(rows.sum()) < 2:
        return total
    for target in targets:
        parts = [pooled[name][:, torch.as_tensor(local)] for name, local in target.by_site.items()]
        activation = torch.cat(parts, dim=1).mean(dim=1)
        total = total + activation[rows].var(unbiased=False)
    return total


@register
class CircuitAwareTraining(BradleyTerry):
    name = "cart"
    design = Design(start="bt-when-warm", uses_circuits=True, challenger=True)
    needs_tail = True
    splittable = True
    keeps_tail_together = True  # eq. 12 is a variance over the batch's tail texts: they share one forward pass

    @property
    def min_tail_per_batch(self) -> int:
        return self.config.cart.min_tail_per_batch

    @property
    def adds_tail_pairs(self) -> bool:
        return self.config.cart.tail_sampling == "add"

    def setup(self, reward_model: Any, dataset: Any, context: TrainingContext) -> None:
        cart = self.config.cart
        if cart.augmentation and not isinstance(dataset, PreferenceDataset):
            raise CartError("CART augmentation needs preference pairs; use --no-aug for scored (pointwise) data")
        if cart.targets_from == "decisive" and not isinstance(dataset, PreferenceDataset):
            raise CartError("the decisive circuit is found on preference pairs; use --targets-from circuits here")
        self.reward_model, self.dataset, self.context = reward_model, dataset, context
        self.eta = cart.progressive_eta or cart.w_max / (cart.progressive_ramp * context.total_steps)
        self.targets: list[TargetCircuit] = []
        self.augmented: list[Any] = []
        self.artifacts: str | None = None
        self._last_step = -1
        self._aug_grad_norms: dict[str, float] = {}
        if context.circuits is not None:
            self._choose_targets(context.circuits, context.vulnerability, step=0)
            self.next_discovery = cart.rediscover_every or None
        else:
            self.next_discovery = cart.warmup_steps or max(1, round(0.1 * context.total_steps))

    def state(self) -> dict[str, Any]:
        return {"next_discovery": self.next_discovery, "artifacts": self.artifacts}

    def restore(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.next_discovery = state["next_discovery"]
        if state["artifacts"] and state["artifacts"] != self.artifacts:
            folder = Path(state["artifacts"])
            circuits = Circuits.load(folder / "circuits.json")
            targets, features = self._targets_of(circuits, json.loads((folder / "targets.json").read_text()))
            self._use(circuits, targets, features, _read_augmented(folder / "augmented.jsonl"), folder)

    def passes(self, chunks: list[dict[str, torch.Tensor]], step: int) -> list[dict[str, torch.Tensor]]:
        """The batch's passes, after L_aug's own pass when its tail pairs have augmentations (its gradient adds to
        the rest; a pass of its own keeps the two sets of activations from being held at once)."""
        if step != self._last_step:
            self._last_step = step
            if self.next_discovery is not None and step >= self.next_discovery:
                self._discover(step)
        augmented = self._augmentation_batch(torch.cat([chunk["index"][chunk["is_tail"]] for chunk in chunks]))
        if augmented:
            first = chunks[0]
            augmented["normaliser"] = first["normaliser"] if "normaliser" in first else first["weight"].sum()
        return ([augmented] if augmented else []) + chunks

    def loss(self, module: Any, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        cart = self.config.cart
        measure = bool(cart.grad_norm_every) and (step + 1) % cart.grad_norm_every == 0
        if AUGMENTED in batch:
            return self._augmentation_loss(module, batch, step, measure)
        tail_rows = bool(batch["is_tail"].any())
        dropout = self._circuit_dropout(batch, step) if cart.circuit_dropout and self.targets and tail_rows else {}
        regularise = cart.circuit_reg and cart.circuit_reg_form != "invariance" and bool(self.targets) and tail_rows
        if regularise or dropout:
            with ActivationCapture(
                _unwrap(module), self.sites, self.pooling, keep_grad=True, interventions=dropout
            ) as capture:
                capture.set_mask(pooling_mask(batch))
                rewards = reward_forward(module, batch)
        else:
            rewards = reward_forward(module, batch)
        variance = (
            self._circuit_term(capture.pooled, batch["is_tail"].to(rewards.device), "score" in batch)
            if regularise
            else None
        )
        loss, logs = self.preference_loss(rewards, batch, step)
        terms = {"preference": loss}
        if variance is not None:
            terms["circuit"] = cart.circuit_reg_weight * variance
            loss = loss + terms["circuit"]
            logs["circuit_var"] = variance.item()
        if measure and tail_rows:
            logs |= self._gradient_shares(module, terms)
        logs["loss"] = loss.item()
        return loss, logs

    def _gradient_shares(self, module: Any, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each term's gradient norm (this pass; L_aug's from its own pass of the same step) and its share of
        their sum: how much of an update each term drives."""
        norms = _grad_norms(module, terms)
        norms |= self._aug_grad_norms
        self._aug_grad_norms = {}
        total = sum(norms.values()) or 1.0
        return {f"grad_norm/{k}": v for k, v in norms.items()} | {
            f"grad_share/{k}": v / total for k, v in norms.items()
        }

    def _circuit_dropout(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, Any]:
        """Interventions zeroing each target circuit's neurons in the forward pass of a tail pair's two texts,
        per (pair, circuit) with probability ``circuit_dropout`` (seeded by the run's seed and the step)."""
        is_tail = batch["is_tail"].bool()
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        drop = torch.rand(len(is_tail), len(self.targets), generator=generator) < self.config.cart.circuit_dropout
        drop = drop & is_tail.cpu().unsqueeze(1)
        drop = torch.cat([drop, drop])  # chosen stacked over rejected: a pair's two texts lose the same circuits
        interventions = {}
        for site in self.sites:
            parts = [(i, t.by_site[site.name]) for i, t in enumerate(self.targets) if site.name in t.by_site]
            indices = torch.as_tensor(np.concatenate([local for _, local in parts]))
            keep = torch.cat([(~drop[:, [i]]).expand(-1, len(local)) for i, local in parts], dim=1)
            interventions[site.name] = drop_features(indices, keep)
        return interventions

    def _augmentation_loss(
        self, module: Any, batch: dict[str, torch.Tensor], step: int, measure: bool
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """eq. 11: the Bradley–Terry loss on the kept augmentations of the batch's tail pairs; with the invariance
        form of eq. 12 their source pairs ride along and λ Σ_c mean (a_c(x̃) − a_c(x))² is added."""
        cart = self.config.cart
        if INVARIANCE not in batch:
            losses, _ = pairwise_losses(reward_forward(module, batch), batch)
            aug_loss = cart.aug_weight * self._augmentation_share(losses, batch, step)
            if measure:
                self._aug_grad_norms = _grad_norms(module, {"aug": aug_loss})
            return aug_loss, {"aug_loss": losses.mean().item(), "loss": aug_loss.item()}
        with ActivationCapture(_unwrap(module), self.sites, self.pooling, keep_grad=True) as capture:
            capture.set_mask(pooling_mask(batch))
            rewards = reward_forward(module, batch)
        edited = rewards[: len(rewards) // 2]  # augmented chosen, augmented rejected; then their sources' texts
        losses, _ = pairwise_losses(edited, batch)
        penalty = circuit_invariance(capture.pooled, self.targets)
        terms = {
            "aug": cart.aug_weight * self._augmentation_share(losses, batch, step),
            "circuit": cart.circuit_reg_weight * penalty,
        }
        if measure:
            self._aug_grad_norms = _grad_norms(module, terms)
        loss = terms["aug"] + terms["circuit"]
        logs = {"aug_loss": losses.mean().item(), "circuit_invariance": penalty.item()}
        return loss, logs | {"loss": loss.item()}

    def _augmentation_share(self, losses: torch.Tensor, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """L_aug before ``aug_weight``: its own mean (``separate_mean``), or each augmented pair weighted like a tail
        pair of the batch, w_t over the batch's base weight B (``batch_share``)."""
        if self.config.cart.aug_scaling == "separate_mean":
            return losses.mean()
        cart = self.config.cart
        tail_weight = progressive_weight(step, self.eta, cart.w_max) if cart.progressive else 1.0
        return tail_weight * losses.sum() / batch["normaliser"].to(losses.device)

    def _circuit_term(self, pooled: dict[str, torch.Tensor], is_tail: torch.Tensor, scored: bool) -> torch.Tensor:
        """eq. 12 over the batch's tail texts; for pairs (chosen stacked over rejected) either pooled over both
        sides or, ``within_sides``, the mean of each side's variance (the chosen–rejected gap left out)."""
        if scored:
            return circuit_variance(pooled, self.targets, is_tail)
        none = torch.zeros_like(is_tail)
        if self.config.cart.circuit_reg_form == "pooled":
            return circuit_variance(pooled, self.targets, torch.cat([is_tail, is_tail]))
        chosen = circuit_variance(pooled, self.targets, torch.cat([is_tail, none]))
        rejected = circuit_variance(pooled, self.targets, torch.cat([none, is_tail]))
        return (chosen + rejected) / 2

    def preference_loss(
        self, rewards: torch.Tensor, batch: dict[str, torch.Tensor], step: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """L_head + L_prog: tail pairs weighted by eq. 13, normalised by the base weights (plus TRL's reward
        centring when ``center_rewards_coefficient`` is set, as for every method)."""
        base = batch["weight"].to(rewards.device)
        normaliser = batch["normaliser"].to(rewards.device) if "normaliser" in batch else base.sum()
        tail_weight = (
            progressive_weight(step, self.eta, self.config.cart.w_max) if self.config.cart.progressive else 1.0
        )
        weights = base * torch.where(batch["is_tail"].to(rewards.device), tail_weight, 1.0)
        if "score" in batch:
            loss = (weights * (rewards - batch["score"].to(rewards.device)) ** 2).sum() / normaliser
            return loss, {"tail_weight": tail_weight}
        losses, logits = pairwise_losses(rewards, batch)
        loss = (weights * losses).sum() / normaliser
        loss = loss + reward_centring(rewards, batch, self.config.center_rewards_coefficient)
        return loss, {"accuracy": (logits > 0).float().mean().item(), "tail_weight": tail_weight}

    def _augmentation_batch(self, tail_indices: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The kept augmentations (eq. 10) of these tail pairs as one batch, or None when they have none."""
        if not (self.config.cart.augmentation and self.augmented):
            return None
        rows = [r for s in tail_indices.tolist() for r in self.aug_rows.get(int(s), [])]
        if not rows:
            return None
        n = len(self.augmented)
        invariance = self.config.cart.circuit_reg and self.config.cart.circuit_reg_form == "invariance"
        sides = 4 if invariance else 2  # augmented chosen, rejected (and their sources' chosen, rejected)
        batch = self.reward_model.collate(self.aug_encoded, [r + side * n for side in range(sides) for r in rows])
        flags = {AUGMENTED: torch.tensor(True)} | ({INVARIANCE: torch.tensor(True)} if invariance else {})
        return {**batch, "margin": torch.zeros(len(rows)), "index": torch.tensor(rows), **flags}

    def _target_ids(self, circuits: Circuits, report: VulnerabilityReport | None) -> list[str]:
        cart = self.config.cart
        known = [c.id for c in circuits.circuits]
        if cart.target_circuits:
            missing = [i for i in cart.target_circuits if i not in known]
            if missing:
                raise CartError(
                    f"target circuits {', '.join(missing)} are not in {circuits.model}'s circuits "
                    f"({', '.join(known[:10])}…)"
                )
            return list(cart.target_circuits)
        if report is not None:
            unknown = [t for t in report.targets if t not in known]
            if unknown:
                raise CartError(
                    f"vulnerability.json targets {', '.join(unknown)}, which are not among the circuits "
                    f"({', '.join(known[:10])}): the two files come from different discoveries"
                )
            return list(report.targets)
        return known[: cart.top_targets]

    def _set_targets(self, circuits: Circuits, target_ids: list[str], step: int) -> None:
        """Make ``target_ids`` the regulariser's C_v, select their augmentations (eq. 10), record artifacts."""
        if not target_ids:
            warnings.warn(
                f"no target circuits ({len(circuits.circuits)} circuits found on {circuits.model}, none selected): "
                "CART trains without circuit terms",
                stacklevel=2,
            )
            return
        targets, features = self._targets_of(circuits, target_ids)
        augmented = self._augment(circuits, targets, features) if self.config.cart.augmentation else []
        folder = Path(self.context.output_dir) / ARTIFACTS / f"step-{step}"
        circuits.save(folder / "circuits.json")
        write_text_atomic(folder / "targets.json", json.dumps(target_ids))
        write_text_atomic(folder / "augmented.jsonl", "".join(json.dumps(asdict(a)) + "\n" for a in augmented))
        self._use(circuits, targets, features, augmented, folder)

    def _targets_of(self, circuits: Circuits, target_ids: list[str]) -> tuple[list[TargetCircuit], FeatureIndex]:
        """The target circuits on this model's feature axis; refuses circuits of another architecture."""
        features = check_circuits_fit(circuits, self.reward_model.model)
        by_id = {c.id: c for c in circuits.circuits}
        targets = []
        for circuit_id in target_ids:
            members = np.array([m.feature for m in by_id[circuit_id].members])
            targets.append(TargetCircuit(circuit_id, members, features.by_site(members)))
        return targets, features

    def _use(
        self,
        circuits: Circuits,
        targets: list[TargetCircuit],
        features: FeatureIndex,
        augmented: list[Any],
        folder: Path,
    ) -> None:
        self.targets = targets
        used = {name for t in targets for name in t.by_site}
        self.sites = [s for s in features.sites if s.name in used]
        self.pooling = circuits.config.pooling
        self.augmented = augmented
        self.aug_rows: dict[int, list[int]] = {}
        for row, pair in enumerate(augmented):
            self.aug_rows.setdefault(pair.source, []).append(row)
        if augmented:
            prompts = [a.prompt for a in augmented] * 2
            responses = [a.chosen for a in augmented] + [a.rejected for a in augmented]
            if self.config.cart.circuit_reg and self.config.cart.circuit_reg_form == "invariance":
                rendered = self.dataset.render(self.reward_model.tokenizer)
                sources = [rendered[a.source] for a in augmented]
                prompts += [p.prompt for p in sources] * 2
                responses += [p.chosen for p in sources] + [p.rejected for p in sources]
            self.aug_encoded = self.reward_model.encode(prompts, responses)
        self.artifacts = str(folder)

    def _augment(self, circuits: Circuits, targets: list[TargetCircuit], features: FeatureIndex) -> list[Any]:
        from cartrm.training.augment import LMRewriter, augment_tail_pairs

        cart = self.config.cart
        rewriter = LMRewriter(cart.generator, seed=self.config.seed) if cart.generator else None
        return augment_tail_pairs(
            self.reward_model,
            self.dataset,
            self.context.tail_mask,
            [t.members for t in targets],
            features,
            circuits.config.pooling,
            n_candidates=cart.aug_candidates,
            keep=cart.aug_keep,
            seed=self.config.seed,
            rewriter=rewriter,
            transforms=cart.aug_transforms,
            groups=self._augmentation_groups() if cart.aug_vocabulary == "per_group" else None,
            selection=cart.aug_selection,
        )

    def _augmentation_groups(self) -> np.ndarray:
        """Each pair's group for per_group replacement words: the ``aug_group_column`` value where the data has
        that column (the benchmark's domain), else the k-means cluster of the tail pair's embedding."""
        from cartrm.vulnerability.metrics import semantic_groups

        column = self.config.cart.aug_group_column
        if self.dataset.has_column(column):
            return np.array([str(v) for v in self.dataset.column(column)], dtype=object)
        tail = np.flatnonzero(self.context.tail_mask)
        pairs = self.dataset.render(self.reward_model.tokenizer)
        embeddings = self.reward_model.embed([pairs[i].prompt + pairs[i].chosen for i in tail])
        groups = np.full(len(pairs), "head", dtype=object)
        clusters = semantic_groups(embeddings, AUG_CLUSTER_SIZE, self.config.seed, max_clusters=AUG_MAX_CLUSTERS)
        groups[tail] = [f"cluster-{c}" for c in clusters]
        return groups

    def _discover(self, step: int) -> None:
        """Discovery + assessment on a seeded subset of the training data, with the model as it is now."""
        from cartrm.circuits.discover import DiscoveryConfig, discover
        from cartrm.vulnerability.assess import AssessConfig, assess

        cart = self.config.cart
        data, tail = self._training_subset(step)
        progress = self.context.progress
        circuits = discover(
            self.reward_model,
            data,
            tail,
            DiscoveryConfig(patch_pairs=0, seed=self.config.seed),
            progress=progress,
        )
        self.next_discovery = step + cart.rediscover_every if cart.rediscover_every else None
        if cart.targets_from == "decisive":  # the decisive circuit needs no discovered circuit nor their report
            self._choose_targets(circuits, None, step)
            return
        if not circuits.circuits:
            warnings.warn(
                f"step {step}: discovery found no tail circuits on {len(data)} training pairs; "
                "training goes on without circuit terms",
                stacklevel=2,
            )
            return
        report = assess(
            self.reward_model,
            data,
            tail,
            circuits,
            AssessConfig(
                top_targets=cart.top_targets, sensitivity_examples=ASSESS_SENSITIVITY_EXAMPLES, seed=self.config.seed
            ),
            progress=progress,
        )
        folder = Path(self.context.output_dir) / ARTIFACTS / f"step-{step}"
        report.save(folder / "vulnerability.json")
        self._choose_targets(circuits, report, step)

    def _choose_targets(self, circuits: Circuits, report: VulnerabilityReport | None, step: int) -> None:
        """C_v from the circuits (the report's targets or ``target_circuits``) or, ``targets_from`` decisive, the
        decisive circuit of the model as it is now, added to the circuits (replacing an earlier one)."""
        if self.config.cart.targets_from == "circuits":
            self._set_targets(circuits, self._target_ids(circuits, report), step)
            return
        record = self._decisive_circuit(circuits.config, step)
        found = [c for c in circuits.circuits if c.id != record.id] + [record]
        self._set_targets(circuits.model_copy(update={"circuits": found}), [record.id], step)

    def _decisive_circuit(self, config: DiscoveryConfig, step: int) -> CircuitRecord:
        """The decisive circuit on the step's training subset."""
        from cartrm.circuits.decisive import decisive_circuit

        data, tail = self._training_subset(step)
        return decisive_circuit(self.reward_model, data, tail, config, self.config.cart.decisive_neurons)

    def _training_subset(self, step: int) -> tuple[Any, Any]:
        """``discovery_pairs`` training pairs, tail and head balanced, drawn by the run's seed and ``step``, with
        their tail split: what discovery, assessment and the decisive circuit read during training."""
        from cartrm.circuits.discover import balanced_subset
        from cartrm.data.tail import TailSplit

        subset = balanced_subset(self.context.tail_mask, self.config.cart.discovery_pairs, self.config.seed + step)
        return self.dataset.select(subset), TailSplit(self.context.tail_mask[subset], "training tail")


def circuit_invariance(pooled: dict[str, torch.Tensor], targets: list[TargetCircuit]) -> torch.Tensor:
    """eq. 12, invariance form, without λ: Σ_c mean over text pairs of (a_c(x̃) − a_c(x))², the rows holding
    edited texts x̃ first and their originals x, in the same order, second."""
    total = next(iter(pooled.values())).new_zeros(())
    for target in targets:
        parts = [pooled[name][:, torch.as_tensor(local)] for name, local in target.by_site.items()]
        edited, original = torch.cat(parts, dim=1).mean(dim=1).chunk(2)
        total = total + ((edited - original) ** 2).mean()
    return total


def _grad_norms(module: Any, terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """The L2 norm of each term's gradient over the trainable parameters (the graph is kept for backward)."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    norms = {}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
        norms[name] = float(torch.sqrt(sum(((g.float() ** 2).sum() for g in grads if g is not None), torch.zeros(()))))
    return norms


def _unwrap(module: Any) -> Any:
    """The model inside a DDP wrapper (hooks go on the real modules)."""
    return getattr(module, "module", module)


def _read_augmented(path: Path) -> list[Any]:
    from cartrm.training.augment import AugmentedPair

    return [AugmentedPair(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
