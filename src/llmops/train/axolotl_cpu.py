"""An Axolotl plugin for training on a CPU.

- transformers refuses bf16 autocast unless the trainer is told that it runs on the CPU
  (`TrainingArguments.use_cpu`), and Axolotl's YAML has no key for that.
- `torch_compile: true` compiles each decoder block in place (regional compilation: one
  compilation serves every layer), instead of the Trainer's compilation. The Trainer's
  path compiles the whole model (slow on a CPU), and its regional variant
  (accelerate's `compile_regions`) copies the model's instance attributes, among them the
  `forward` that bf16 autocast wrapped around the original model: the copy then runs the
  original, uncompiled blocks, so nothing is compiled at all (seen with accelerate 1.13).
- Launched as several processes (`accelerate launch`, `llmops.train.node`), each joins
  the gloo process group before Axolotl creates its distributed state, and
  ACCELERATE_USE_CPU is set for the Trainer's Accelerator (created after Axolotl resets that
  state): accelerate makes a multi-process CPU world only when told it runs on the CPU,
  which Axolotl never says, so each process would otherwise train alone on all the data.
- The training loss runs the LM head on the labelled positions only
  (`llmops.train.labelled_logits`): the same loss and gradients, without the logits of the
  prompts.

The pipeline adds this plugin to the resolved config when the machine has no CUDA GPU.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from axolotl.integrations.base import BasePlugin

# Under "axolotl": Axolotl's logging shows other loggers' records from WARNING up only.
LOG = logging.getLogger("axolotl.integrations.llmops_cpu")


def compile_blocks(model: Any) -> int:
    """Compile, in place, every module of each list of same-class modules (the decoder
    blocks): returns how many. Parameters keep their names; adapters save as before."""
    import torch

    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 1 and \
                len({type(m) for m in module}) == 1:
            for block in module:
                block.compile()
                count += 1
    return count


def tell_accelerate(use_cpu: bool = False, trainer_compiles: bool = True) -> None:
    """The plugin's only writes to its process's environment, which is Axolotl's (a child of
    `llmops train`, never the CLI's): accelerate takes these settings from the environment,
    read by the Accelerator that the Trainer creates, and Axolotl passes it no argument.

    - `use_cpu`: ACCELERATE_USE_CPU, so that the Accelerator (created after Axolotl resets
      the distributed state) keeps the CPU world `join_cpu_world` set up;
    - not `trainer_compiles`: no ACCELERATE_DYNAMO_BACKEND (Axolotl sets it from
      `torch_compile`), or the Trainer would compile again what the plugin compiled."""
    if use_cpu:
        os.environ["ACCELERATE_USE_CPU"] = "true"
    if not trainer_compiles:
        os.environ.pop("ACCELERATE_DYNAMO_BACKEND", None)


def join_cpu_world() -> str | None:
    """In a process that torchrun started (WORLD_SIZE > 1) on a machine without CUDA: set up
    accelerate's state as a CPU world over gloo, before Axolotl's own (which keeps it);
    returns what it joined, None when there is nothing to join."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.cuda.is_available():
        return None
    from datetime import timedelta

    from accelerate import PartialState

    tell_accelerate(use_cpu=True)
    state = PartialState(cpu=True, timeout=timedelta(
        seconds=int(os.environ.get("AXOLOTL_NCCL_TIMEOUT", "1800"))))
    joined = (f"distributed on the CPU: rank {state.process_index} of world size "
              f"{state.num_processes} ({state.backend})")
    LOG.warning(joined)  # Axolotl shows other loggers' warnings, on every rank
    return joined


class CpuTraining(BasePlugin):  # type: ignore[misc]
    """Joins the CPU processes of a launch into one world; sets `use_cpu` on the trainer's
    arguments; compiles the decoder blocks in place; runs
    the LM head on the labelled positions only."""

    def register(self, cfg: Any) -> None:
        join_cpu_world()

    def load_datasets(self, cfg: Any, preprocess: bool = False) -> None:
        # The first hook after Axolotl's normalize_config and before its model loader, which
        # reads `device_map`: over several processes Axolotl sets {"": LOCAL_RANK}, a CUDA
        # device index; on the CPU every rank loads its copy onto the CPU.
        if (cfg.world_size or 1) > 1 and str(cfg.device) == "cpu":
            cfg.device_map = {"": "cpu"}
        return None  # Axolotl loads the datasets as usual

    def pre_model_load(self, cfg: Any) -> None:
        if cfg.torch_compile:
            tell_accelerate(trainer_compiles=False)

    def post_model_load(self, cfg: Any, model: Any) -> None:
        from llmops.train.labelled_logits import labelled_logits_only

        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        if labelled_logits_only(causal_lm):
            LOG.info("training loss: the LM head runs on the labelled positions only")
        else:
            LOG.info("training loss: %s has no standard LM head; every position is computed",
                     type(causal_lm).__name__)
        if cfg.torch_compile:
            LOG.info("torch_compile: compiled %d decoder blocks in place (regional)",
                     compile_blocks(model))

    def get_training_args(self, cfg: Any) -> dict[str, Any]:
        return {"use_cpu": True, "torch_compile": False}
