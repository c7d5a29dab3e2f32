"""Training configuration (validated; saved next to the model as ``train_config.json``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "bt"
    epochs: float = Field(1.0, gt=0, description="passes over the data; a fraction stops part-way")
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs when set")
    batch_size: int = Field(16, gt=0, description="pairs (or scored examples) per device per micro-batch")
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_length: int | None = Field(None, gt=8, description="tokens; default min(512, the model's limit)")
    center_rewards_coefficient: float | None = Field(None, ge=0, description="TRL's reward-centering term")
    seed: int = 0
    save_steps: int = Field(0, ge=0, description="also checkpoint every N optimizer steps (0: at each epoch end)")
    logging_steps: int = Field(10, gt=0)
    tail_by: str | None = None
