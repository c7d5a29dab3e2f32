"""Training configuration (validated; saved next to the model as ``train_config.json``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails

from cartrm.models.lora import LoraSettings
from cartrm.runs import KEYED_WHEN_SET
from cartrm.training.settings import SETTINGS, CartConfig, MethodSettings

__all__ = ["CPU_BATCH_TOKENS", "MAX_EPOCHS", "CartConfig", "MethodSettings", "TrainConfig"]

MAX_EPOCHS = 1000  # more passes than anyone trains a reward model for: a typo (1e300 would never end)
LORA_OPTIONS = ("lora_alpha", "lora_dropout", "lora_target_modules")
CPU_BATCH_TOKENS = 2048  # padded tokens per forward pass on a CPU: same speed as one pass, far less memory


class TrainConfig(BaseModel):
    """Settings of one training run: the loop's, and every method's own (``settings``, by method name; each
    method reads its entry). Its inputs (data, tail split, circuits) are arguments of ``train``.

    Built and dumped in the flat spelling of a config file: ``TrainConfig(label_smoothing=0.2, cart={...})``,
    ``model_dump()`` gives the same shape (see :mod:`cartrm.training.settings`); change a method's settings with
    :meth:`with_settings`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # inf and NaN are never settings

    @model_validator(mode="before")
    @classmethod
    def _method_settings(cls, values: Any) -> Any:
        """Each method's settings gathered from their file spellings into ``settings``, validated by their models.

        Configs saved by earlier versions hold ``tail_by``, a record training never read (the tail is ``train``'s
        argument now, described in ``train_result.json``): dropped, so earlier runs' config files still load."""
        if not isinstance(values, dict):
            return values
        values = {k: v for k, v in values.items() if k != "tail_by"}
        given = dict(values.pop("settings", None) or {})
        table, errors = {}, []
        for method, model in SETTINGS.items():
            own = given.get(method, {})
            own = own.model_dump() if isinstance(own, BaseModel) else dict(own)
            section = model.section
            if section is not None:
                spelled = values.pop(section, None) or {}
                own.update(spelled.model_dump() if isinstance(spelled, BaseModel) else spelled)
            else:
                own.update({name: values.pop(name) for name in model.model_fields if name in values})
            try:
                table[method] = model.model_validate(own)
            except ValidationError as exc:
                errors += _placed(exc, section)
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return {**values, "settings": table}

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
    lora_r: int = Field(
        0,
        ge=0,
        description="LoRA rank (peft, the lora extra): 0 trains every weight; r > 0 trains rank-r adapters on "
        "lora_target_modules and the reward head in full; the saved model is merged (a plain HF folder) and the "
        "adapter is saved beside it in adapter/",
        json_schema_extra=KEYED_WHEN_SET,
    )
    lora_alpha: float = Field(
        16.0, gt=0, description="LoRA scale alpha (adapters add alpha/r · BA)", json_schema_extra=KEYED_WHEN_SET
    )
    lora_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="dropout on the adapters' input (kept with disable_dropout)",
        json_schema_extra=KEYED_WHEN_SET,
    )
    lora_target_modules: tuple[str, ...] | None = Field(
        None,
        description="modules LoRA adapts, by name (q_proj,v_proj) or all-linear; default: peft's choice for the "
        "architecture (its attention query and value projections)",
        json_schema_extra=KEYED_WHEN_SET,
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute activations in the backward pass: less memory for about a third more time",
        json_schema_extra=KEYED_WHEN_SET,
    )
    dtype: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="the weights' storage type while training and in the saved model; bf16 halves their memory "
        "(for a GPU: CPUs without bf16 instructions run it several times slower); mixed_precision is separate",
        json_schema_extra=KEYED_WHEN_SET,
    )
    report_to: tuple[str, ...] = Field(
        ("tensorboard",),
        description="experiment trackers the loss, metrics and this config go to, through accelerate: tensorboard "
        "(in OUT/logs), wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio (when installed), or none",
        json_schema_extra=KEYED_WHEN_SET,
    )
    settings: dict[str, SerializeAsAny[MethodSettings]] = Field(
        default_factory=dict, description="each method's own settings, by method name"
    )

    @model_validator(mode="after")
    def _lora_options_need_a_rank(self) -> TrainConfig:
        """A LoRA option without ``lora_r`` would silently train every weight: refused."""
        given = [name for name in LORA_OPTIONS if getattr(self, name) != type(self).model_fields[name].default]
        if given and not self.lora_r:
            raise ValueError(f"{', '.join(given)} set without lora_r: set lora_r (the adapters' rank) to train LoRA")
        return self

    @model_validator(mode="after")
    def _known_trackers(self) -> TrainConfig:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        unknown = [name for name in self.report_to if name not in (*LOGGER_TYPE_TO_CLASS, "none")]
        if unknown or ("none" in self.report_to and len(self.report_to) > 1):
            raise ValueError(
                f"report_to {', '.join(unknown or self.report_to)}: choose trackers among "
                f"{', '.join(LOGGER_TYPE_TO_CLASS)}, or none alone"
            )
        return self

    def lora(self) -> LoraSettings | None:
        """The LoRA settings, or None for a full fine-tune."""
        if not self.lora_r:
            return None
        return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout, self.lora_target_modules)

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The file spelling: each method's settings flat, or under its section."""
        dumped = handler(self)
        for method, values in dumped.pop("settings", {}).items():
            section = SETTINGS[method].section if method in SETTINGS else None
            dumped.update({section: values} if section else values)
        return dumped

    def settings_of(self, method: str) -> MethodSettings:
        """``method``'s own settings (the empty settings of a method without knobs)."""
        return self.settings.get(method) or MethodSettings()

    def with_settings(self, method: str, **changes: Any) -> TrainConfig:
        """This config with some of ``method``'s settings changed (validated by its settings model)."""
        current = self.settings_of(method)
        changed = type(current).model_validate({**current.model_dump(), **changes})
        return self.model_copy(update={"settings": {**self.settings, method: changed}})

    def only_settings_of(self, method: str) -> TrainConfig:
        """This config with every other method's settings at their defaults: what training ``method`` reads."""
        table = {name: self.settings[name] if name == method else type(self.settings[name])() for name in self.settings}
        return self.model_copy(update={"settings": table})

    def batch_tokens(self, device_type: str) -> int | None:
        """Padded tokens per forward pass on ``device_type`` (None: the whole batch in one pass)."""
        if self.max_batch_tokens is None:
            return CPU_BATCH_TOKENS if device_type == "cpu" else None
        return self.max_batch_tokens or None


def _placed(error: ValidationError, section: str | None) -> list[InitErrorDetails]:
    """A method's settings' errors, located as the file spells them (under its section, or flat)."""
    prefix = (section,) if section else ()
    return [
        InitErrorDetails(type=e["type"], loc=(*prefix, *e["loc"]), input=e["input"], ctx=e.get("ctx", {}))
        for e in error.errors()
    ]
