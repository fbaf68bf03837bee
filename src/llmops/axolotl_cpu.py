"""An Axolotl plugin for training on a CPU.

transformers refuses bf16 autocast unless the trainer is told that it runs on the CPU
(`TrainingArguments.use_cpu`), and Axolotl's YAML has no key for that. The pipeline adds
this plugin to the resolved config when the machine has no CUDA GPU.
"""

from __future__ import annotations

from typing import Any

from axolotl.integrations.base import BasePlugin


class CpuTraining(BasePlugin):  # type: ignore[misc]
    """Sets `use_cpu` on the trainer's arguments."""

    def get_training_args(self, cfg: Any) -> dict[str, Any]:
        return {"use_cpu": True}
