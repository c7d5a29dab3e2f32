"""CART's targets C_v: from the given circuits and vulnerability report, or found on the model being trained
(discovery and assessment after a warm-up, or the decisive circuit), with the artifacts of each choice in
``OUT/cart/step-N/``."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cartrm.capture.stream import FeatureIndex
from cartrm.circuits.config import DiscoveryConfig
from cartrm.circuits.patching import random_feature_sets
from cartrm.circuits.result import CircuitRecord, Circuits, check_circuits_fit
from cartrm.errors import CartError
from cartrm.io import write_text_atomic
from cartrm.training.methods.cart.augmentation import Augmentation
from cartrm.training.methods.cart.objective import TargetCircuit
from cartrm.vulnerability.diagnostics import no_causal_circuit
from cartrm.vulnerability.result import VulnerabilityReport

ARTIFACTS = "cart"
ASSESS_SENSITIVITY_EXAMPLES = 16


class Targets(Augmentation):
    """Setting C_v (a part of CART's method): the regulariser's target circuits, the capture sites they live on,
    their augmentations, and when discovery runs next."""

    targets: list[TargetCircuit]
    sites: list[Any]
    pooling: str
    artifacts: str | None
    next_discovery: int | None

    def _target_ids(self, circuits: Circuits, report: VulnerabilityReport | None) -> list[str]:
        cart = self.settings
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
        chosen = [c for c in circuits.circuits if c.id in set(target_ids)]
        untested = no_causal_circuit(circuits.model_copy(update={"circuits": chosen}))
        if untested:
            warnings.warn(f"step {step}: CART targets {', '.join(target_ids)}, but {untested}", stacklevel=2)
        targets, features = self._targets_of(circuits, target_ids)
        augmented = self._augment(circuits, targets, features) if self.settings.augmentation else []
        folder = Path(self.context.output_dir) / ARTIFACTS / f"step-{step}"
        circuits.save(folder / "circuits.json")
        write_text_atomic(folder / "targets.json", json.dumps(target_ids))
        if self.settings.targets_from == "random":
            members = {t.id: t.members.tolist() for t in targets}
            write_text_atomic(folder / "random_targets.json", json.dumps(members))
        write_text_atomic(folder / "augmented.jsonl", "".join(json.dumps(asdict(a)) + "\n" for a in augmented))
        self._use(circuits, targets, features, augmented, folder)

    def _targets_of(self, circuits: Circuits, target_ids: list[str]) -> tuple[list[TargetCircuit], FeatureIndex]:
        """The target circuits on this model's feature axis; refuses circuits of another architecture."""
        features = check_circuits_fit(circuits, self.reward_model.model)
        by_id = {c.id: c for c in circuits.circuits}
        targets = []
        for index, circuit_id in enumerate(target_ids):
            members = np.array([m.feature for m in by_id[circuit_id].members])
            if self.settings.targets_from == "random":  # the control: layer-matched random neurons
                (members,) = random_feature_sets(features, members, 1, np.random.default_rng([self.config.seed, index]))
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
        self._use_augmented(augmented)
        self.artifacts = str(folder)

    def _discover(self, step: int) -> None:
        """Discovery + assessment on a seeded subset of the training data, with the model as it is now."""
        from cartrm.circuits.discover import DiscoveryConfig, discover

        cart = self.settings
        data, tail = self._training_subset(step)
        circuits = discover(
            self.reward_model,
            data,
            tail,
            DiscoveryConfig(patch_pairs=0, seed=self.config.seed),
            progress=self.context.progress,
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
        report = self._assess(data, tail, circuits)
        folder = Path(self.context.output_dir) / ARTIFACTS / f"step-{step}"
        report.save(folder / "vulnerability.json")
        self._choose_targets(circuits, report, step)

    def _assess(self, data: Any, tail: Any, circuits: Circuits) -> VulnerabilityReport:
        from cartrm.vulnerability.assess import AssessConfig, assess

        config = AssessConfig(
            top_targets=self.settings.top_targets,
            sensitivity_examples=ASSESS_SENSITIVITY_EXAMPLES,
            seed=self.config.seed,
        )
        return assess(self.reward_model, data, tail, circuits, config, progress=self.context.progress)

    def _choose_targets(self, circuits: Circuits, report: VulnerabilityReport | None, step: int) -> None:
        """C_v from the circuits (the report's targets or ``target_circuits``) or, ``targets_from`` decisive, the
        decisive circuit of the model as it is now, added to the circuits (replacing an earlier one)."""
        if self.settings.targets_from != "decisive":
            self._set_targets(circuits, self._target_ids(circuits, report), step)
            return
        record = self._decisive_circuit(circuits.config, step)
        found = [c for c in circuits.circuits if c.id != record.id] + [record]
        self._set_targets(circuits.model_copy(update={"circuits": found}), [record.id], step)

    def _decisive_circuit(self, config: DiscoveryConfig, step: int) -> CircuitRecord:
        """The decisive circuit on the step's training subset."""
        from cartrm.circuits.decisive import decisive_circuit

        data, tail = self._training_subset(step)
        return decisive_circuit(self.reward_model, data, tail, config, self.settings.decisive_neurons)

    def _training_subset(self, step: int) -> tuple[Any, Any]:
        """``discovery_pairs`` training pairs, tail and head balanced, drawn by the run's seed and ``step``, with
        their tail split: what discovery, assessment and the decisive circuit read during training."""
        from cartrm.circuits.discover import balanced_subset
        from cartrm.data.tail import TailSplit

        subset = balanced_subset(self.context.tail_mask, self.settings.discovery_pairs, self.config.seed + step)
        return self.dataset.select(subset), TailSplit(self.context.tail_mask[subset], "training tail")
