"""The Axolotl YAML as the pipeline reads it: the keys it uses, typed; every other key kept
as written for Axolotl, whose own config model checks them (`llmops check-config`)."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

# Keys the pipeline sets for each run: a config that sets them is refused (`llmops
# check-config`), and `llmops init --from` removes them from the file it copies.
OWNED_KEYS = ("output_dir", "mlflow_tracking_uri", "mlflow_run_name", "mlflow_experiment_name")


class AxolotlDataset(BaseModel):
    """One entry of `datasets` / `test_datasets`; its format keys are read by
    `llmops.config.datasets.format_of`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    path: str = Field(min_length=1, description="A JSONL or JSON file, relative to the "
                      "repository (the data gate reads it).")
    type: str = Field(default="", description="The format: chat_template, alpaca or "
                      "completion (the ones every stage reads).")

    def entry(self) -> dict[str, Any]:
        """The entry as written."""
        return self.model_dump(exclude_unset=True)


class AxolotlConfig(BaseModel):
    """axolotl_configs/<model>.yml."""

    model_config = ConfigDict(extra="allow", frozen=True)

    base_model: str = Field(min_length=1, description="A Hub id or a path (relative to "
                            "the repository).")
    sequence_len: int = Field(default=2048, ge=1, description="Longest example, in tokens "
                              "(the data gate counts those longer).")
    datasets: list[AxolotlDataset] = Field(default_factory=list, description="Training sets "
                                           "(at least one).")
    test_datasets: list[AxolotlDataset] = Field(
        default_factory=list, description="Eval sets: the release gate compares their loss.")
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_yaml(cls, data: dict[str, Any]) -> AxolotlConfig:
        config = cls.model_validate(data)
        config._raw = copy.deepcopy(data)
        return config

    def as_dict(self) -> dict[str, Any]:
        """The YAML as written, keys in their order: what Axolotl is given (a copy)."""
        return copy.deepcopy(self._raw) if self._raw else self.model_dump(exclude_unset=True)

    def get(self, key: str, default: Any = None) -> Any:
        """A key as written (typed keys included), for the rules that read a few more."""
        return self.as_dict().get(key, default)

    @property
    def lora_rank(self) -> int | None:
        """`lora_r` when it is an integer (Axolotl's own check reports anything else)."""
        rank = self._raw.get("lora_r")
        return rank if isinstance(rank, int) and not isinstance(rank, bool) else None


class AxolotlTraining(AxolotlConfig):
    """The training keys of a resolved Axolotl config that a second backend (Unsloth)
    translates, typed, each with the one default it trains with when the YAML leaves it
    out or sets it to null. A key Axolotl passes on only when set falls back to
    transformers' default, as it does under Axolotl (`seed` 42, `save_steps` 500)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    output_dir: str = Field(min_length=1, description="Set by the pipeline for each run.")
    mlflow_run_name: str | None = None
    adapter: str | None = None
    load_in_4bit: bool = False
    lora_r: int = Field(ge=1)
    lora_alpha: int
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str | None = None
    lora_target_linear: bool = False
    gradient_checkpointing: bool | str = False
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    max_steps: int | None = None  # None: num_epochs decides
    num_epochs: float = 1.0
    weight_decay: float = 0.0
    optimizer: str = "adamw_torch"
    sample_packing: bool = False
    bf16: bool | str | None = None
    logging_steps: int = 1
    save_steps: int | float = 500  # a float below 1: a fraction of the steps, as in Axolotl
    eval_steps: int | float | None = None  # None: every save_steps
    seed: int = 42

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        """A key set to null is a key left out (Axolotl passes neither on)."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) \
            else data
