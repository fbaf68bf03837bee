"""The Axolotl YAML checked before any compute: Axolotl's own config model, then our rules.

Axolotl validates a config only once its CLI runs (after imports and, for some keys, after
the model is loaded). `check_training_config` runs Axolotl's pydantic model on the YAML in
this process and adds the rules this pipeline relies on, so that a mistake comes back in
seconds with the file, the key and what to do.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llmops.config.axolotl import OWNED_KEYS
from llmops.config.paths import machine_cache
from llmops.errors import UsageError
from llmops.redact import secret_keys

VLLM_MAX_LORA_RANK = 512


def project_problems(cfg: dict[str, Any], allow_remote_code: bool = False
                     ) -> list[tuple[str, str]]:
    """(key, what to do) for each of the pipeline's own rules the config breaks."""
    problems: list[tuple[str, str]] = []
    # The resolved config is logged to MLflow and shipped in the version: no secret in it.
    for key in secret_keys(cfg):
        problems.append((key, "holds a secret (a token, password or key, or a URI with "
                         "credentials), and this file is logged to MLflow and shipped with "
                         "the version: remove it and give the secret to the process through "
                         "its environment"))
    if cfg.get("trust_remote_code") is True and not allow_remote_code:
        problems.append(("trust_remote_code", "runs Python code from the model's repository "
                         "in training and serving: remove it, or allow it for this model with "
                         "`allow_trust_remote_code: true` in validation/<model>.yml"))
    if cfg.get("adapter") not in ("lora", "qlora"):
        problems.append(("adapter", "set `adapter: lora` (or qlora): releases ship a LoRA "
                         "adapter that vLLM serves"))
    rank = cfg.get("lora_r")
    if isinstance(rank, int) and rank > VLLM_MAX_LORA_RANK:
        problems.append(("lora_r", f"{rank} is above vLLM's largest LoRA rank "
                         f"({VLLM_MAX_LORA_RANK}): lower it"))
    if not cfg.get("save_steps") and not cfg.get("saves_per_epoch"):
        problems.append(("save_steps", "set save_steps (or saves_per_epoch): without "
                         "checkpoints `llmops train --resume` has nothing to resume from"))
    if not cfg.get("test_datasets") and not cfg.get("val_set_size"):
        problems.append(("test_datasets", "name an eval set (test_datasets or val_set_size): "
                         "the release gate compares eval losses"))
    for key in OWNED_KEYS:
        if key in cfg:
            problems.append((key, "remove it: the pipeline sets it for each run"))
    if cfg.get("merge_lora") is not None and not isinstance(cfg.get("merge_lora"), bool):
        problems.append(("merge_lora", "true or false"))
    return problems


def axolotl_problems(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, message) from Axolotl's own config model (pydantic), without loading a model.
    The verdict depends on the config and Axolotl's release only, so it is kept per machine:
    importing Axolotl's config model (torch, torchao, bitsandbytes) costs more than the
    rest of check-config, and a YAML that did not change need not pay it again."""
    path = _verdict_path(cfg)
    try:
        return [(str(k), str(m)) for k, m in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        pass  # not checked yet on this machine (or an unreadable entry): check it
    problems = _validate_with_axolotl(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(problems))
    tmp.replace(path)
    return problems


def _verdict_path(cfg: dict[str, Any]) -> Path:
    from importlib.metadata import version

    key = json.dumps({"axolotl": version("axolotl"), "config": cfg}, sort_keys=True,
                     default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()
    return machine_cache() / "axolotl-config" / f"{digest}.json"


def _validate_with_axolotl(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    import pydantic
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    try:
        validate_config(DictDefault(copy.deepcopy(cfg)))
    except pydantic.ValidationError as exc:
        return [(".".join(str(p) for p in err["loc"]) or "(top level)",
                 str(err["msg"]).removeprefix("Value error, ")) for err in exc.errors()]
    except ValueError as exc:  # Axolotl raises plain ValueErrors from its model validators
        return [("(config)", str(exc))]
    return []


def check_training_config(cfg: dict[str, Any], source: Path,
                          allow_remote_code: bool = False) -> None:
    """Raise UsageError (exit 2) listing every problem as `file: key: fix` (a secret's
    key is named, never its value)."""
    problems = project_problems(cfg, allow_remote_code)
    if not any(msg.startswith("holds a secret") for _, msg in problems):
        # Axolotl's own messages may quote a value: they are not asked for a secret.
        problems += axolotl_problems(cfg)
    if problems:
        raise UsageError(f"{source} is not a valid training config:\n" + "\n".join(
            f"  {source.name}: {key}: {msg}" for key, msg in problems))
