"""Training configuration (validated; saved next to the model as ``train_config.json``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cartrm.runs import KEYED_WHEN_SET

MAX_EPOCHS = 1000  # more passes than anyone trains a reward model for: a typo (1e300 would never end)
CPU_BATCH_TOKENS = 2048  # padded tokens per forward pass on a CPU: same speed as one pass, far less memory


class CartConfig(BaseModel):
    """Components and weights of the CART objective (eq. 16: ``L_head + L_aug + L_circuit + L_prog``).

    Circuits and their vulnerability report are inputs of training (``train(..., circuits=, vulnerability=)``;
    ``cart train --circuits --vulnerability``); the targets ``C_v`` are the report's or ``target_circuits``.
    Without circuits, training runs ``warmup_steps`` of plain Bradley–Terry, then discovers and assesses
    circuits on the current model itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # inf and NaN are never settings

    target_circuits: tuple[str, ...] | None = Field(
        None, description="explicit circuit ids for C_v (overrides the targets)"
    )
    targets_from: Literal["circuits", "decisive"] = Field(
        "circuits",
        description="C_v: circuits (the vulnerability report's targets, or target_circuits) or, beyond the paper, "
        "decisive (one circuit of the decisive_neurons neurons the model's tail rewards rest on most, by mean "
        "|first-order ΔR| under head-mean patching on discovery_pairs training pairs, found on the model when its "
        "targets are set)",
        json_schema_extra=KEYED_WHEN_SET,
    )
    decisive_neurons: int = Field(
        10,
        ge=1,
        description="neurons in the decisive circuit (targets_from decisive)",
        json_schema_extra=KEYED_WHEN_SET,
    )
    augmentation: bool = Field(True, description="circuit-guided augmentation (eq. 10-11)")
    aug_weight: float = Field(1.0, ge=0, description="weight of L_aug (eq. 10-11)")
    aug_scaling: Literal["separate_mean", "batch_share"] = Field(
        "separate_mean",
        description="how L_aug enters the loss: separate_mean (its own mean over the batch's augmented pairs, "
        "so each weighs about B/(tail pairs) times an original pair) or batch_share (each augmented pair joins "
        "the batch's Bradley-Terry mean with weight w_t/B, like a tail pair)",
    )
    aug_candidates: int = Field(8, ge=1, description="transformations G(x) drawn per tail pair")
    aug_keep: int = Field(1, ge=1, description="M: candidates kept per tail pair (largest circuit activation)")
    aug_transforms: tuple[str, ...] = Field(
        ("rare_token", "drop_shared_sentence", "reorder", "format"),
        description=(
            "rule-based G(x) (see cartrm.training.transforms.TRANSFORMS); 'synonym' is left out by default because "
            "it kept the gold label on only ~71% of benchmark tail pairs"
        ),
    )
    aug_vocabulary: Literal["pooled", "per_group"] = Field(
        "pooled",
        description="where rare_token draws its replacement words: pooled (words of all tail pairs against the "
        "head's; on the benchmark mostly another tail domain's, whose gold rules may differ) or per_group (words of "
        "the source pair's own group against every other pair's: its aug_group_column value, else its k-means "
        "cluster of tail embeddings)",
    )
    aug_group_column: str = Field("domain", description="data column naming a pair's group for per_group")
    aug_selection: Literal["circuits", "random"] = Field(
        "circuits",
        description="which candidates are kept: circuits (the largest Σ_c a_c(x'), eq. 10) or random (a seeded "
        "draw: the control that isolates eq. 10's argmax)",
    )
    generator: str | None = Field(None, description="local causal LM folder for sampled rewrites")
    circuit_reg: bool = Field(True, description="circuit variance regulariser (eq. 12)")
    circuit_reg_weight: float = Field(1.0, ge=0, description="λ of eq. 12")
    grad_norm_every: int = Field(
        0,
        ge=0,
        description="every N optimizer steps, log each loss term's gradient norm and its share of their sum "
        "(grad_norm/*, grad_share/*; costs a backward pass per term on those steps; 0: never)",
    )
    circuit_reg_form: Literal["pooled", "within_sides", "invariance"] = Field(
        "pooled",
        description="eq. 12's variance over the batch's tail texts: pooled (chosen and rejected together, as "
        "written; the chosen-rejected gap then counts as variance, so the term fights the preference), "
        "within_sides (the mean of the variance over chosen texts and over rejected texts), or invariance "
        "(λ Σ_c mean (a_c(x̃) − a_c(x))² between each kept augmentation and its source text; needs augmentation)",
    )
    progressive: bool = Field(True, description="progressive tail weights (eq. 13)")
    progressive_eta: float | None = Field(
        None, gt=0, description="η of eq. 13; default w_max / (progressive_ramp · total steps)"
    )
    progressive_ramp: float = Field(
        0.5, gt=0, le=1, description="share of training over which tail weights reach w_max"
    )
    w_max: float = Field(1.0, gt=0, description="cap of the tail weight; 1 reproduces the paper")
    circuit_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="beyond the paper: zero each target circuit's neurons in a tail text's forward pass with this "
        "probability, so the tail reward cannot rest on the vulnerable circuits alone (0: off)",
    )
    min_tail_per_batch: int = Field(4, ge=0, description="k: tail pairs guaranteed in every batch")
    tail_sampling: Literal["swap", "add"] = Field(
        "swap",
        description="how batches get their k tail pairs: swap (replace head pairs of a batch short of them; CART "
        "then sees fewer distinct head pairs than bt) or add (k tail pairs on top of bt's own batches)",
    )
    rediscover_every: int = Field(0, ge=0, description="re-run discovery and assessment every N steps (0: never)")
    warmup_steps: int | None = Field(None, ge=1, description="BT steps before self-discovery; default 10% of the steps")
    discovery_pairs: int = Field(256, ge=16, description="pairs used when discovering / assessing during training")
    top_targets: int = Field(3, ge=1, description="circuits in C_v when training picks the targets itself")

    @model_validator(mode="after")
    def _compatible_options(self) -> CartConfig:
        if self.circuit_reg and self.circuit_reg_form == "invariance" and not self.augmentation:
            raise ValueError(
                "circuit_reg_form invariance compares augmentations with their sources: turn augmentation on"
            )
        if self.targets_from == "decisive" and self.target_circuits:
            raise ValueError("target_circuits names circuits, targets_from decisive finds its own: choose one")
        if self.circuit_dropout and self.circuit_reg:
            raise ValueError(
                "circuit_dropout replaces the circuit regulariser (eq. 12 would read the dropped activations): "
                "turn circuit_reg off (--no-circuit-reg)"
            )
        return self


class TrainConfig(BaseModel):
    """Settings of one training run; its inputs (data, tail split, circuits) are arguments of ``train``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # inf and NaN are never settings

    @model_validator(mode="before")
    @classmethod
    def _drop_recorded_tail(cls, values: Any) -> Any:
        """Configs saved by earlier versions hold ``tail_by``, a record training never read (the tail is ``train``'s
        argument now, described in ``train_result.json``): dropped, so earlier runs' config files still load."""
        if isinstance(values, dict) and "tail_by" in values:
            return {k: v for k, v in values.items() if k != "tail_by"}
        return values

    method: str = Field(
        "bt",
        description="training method: bt, cart or a baseline of cartrm.training.methods (each registers its name; "
        "an unknown name is refused with the list)",
    )
    epochs: float = Field(1.0, gt=0, le=MAX_EPOCHS, description="passes over the data; a fraction stops part-way")
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs when set")
    batch_size: int = Field(16, gt=0, description="pairs (or scored examples) per device per micro-batch")
    gradient_accumulation_steps: int = Field(1, gt=0, description="micro-batches per optimizer step")
    learning_rate: float = Field(5e-5, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (none on biases and norm weights)")
    warmup_ratio: float = Field(0.1, ge=0, le=1, description="share of steps with linear warm-up")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping norm")
    max_length: int | None = Field(
        None, gt=8, description="tokens; default: the longest training text, up to the model's limit"
    )
    center_rewards_coefficient: float | None = Field(None, ge=0, description="TRL's reward-centering term")
    seed: int = Field(0, ge=0, description="fixes data order, initialisation and discovery subsets")
    save_steps: int = Field(0, ge=0, description="also checkpoint every N optimizer steps (0: at each epoch end)")
    logging_steps: int = Field(10, gt=0, description="log loss and metrics every N optimizer steps")
    eval_steps: int = Field(
        0, ge=0, description="score the evaluation data every N optimizer steps, a learning curve (0: never)"
    )
    disable_dropout: bool = Field(
        True, description="train without dropout (TRL's default for reward models); False keeps the model's dropout"
    )
    group_by_length: bool = Field(
        True,
        description="batch pairs of similar length together (less padding; the order still follows the seed); scored "
        "(pointwise) data keep a plain shuffle, since a score may follow the length",
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=0,
        description="split a batch into forward passes of at most this many padded tokens, same gradient (less "
        f"memory); default: {CPU_BATCH_TOKENS} on a CPU, one pass on a GPU (where splitting only adds launch "
        "overhead); 0: one pass per batch",
    )
    mixed_precision: Literal["auto", "no", "bf16"] = Field(
        "auto", description="bf16 autocast; auto: on a CUDA GPU with bf16 support, float32 elsewhere"
    )
    label_smoothing: float = Field(0.1, ge=0, lt=0.5, description="ε of the label-smoothing baseline")
    tail_weight: float | None = Field(
        None, gt=0, description="reweight baseline: tail weight (default N_head / N_tail)"
    )
    hidden_reg_weight: float = Field(
        0.1, ge=0, description="hidden-reg baseline: weight of the hidden-state drift penalty"
    )
    cart: CartConfig = Field(default_factory=CartConfig)

    def batch_tokens(self, device_type: str) -> int | None:
        """Padded tokens per forward pass on ``device_type`` (None: the whole batch in one pass)."""
        if self.max_batch_tokens is None:
            return CPU_BATCH_TOKENS if device_type == "cpu" else None
        return self.max_batch_tokens or None
