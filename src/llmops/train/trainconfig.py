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

# What pydantic (Axolotl's config model) reads as false; every other value of a
# trust_remote_code key is refused, since `yes`, "on", 1 and "True" all turn it on.
FALSE_SPELLINGS = frozenset({"false", "f", "no", "n", "off", "0"})


def says_false(value: Any) -> bool:
    """Whether a trust_remote_code value certainly leaves remote code off."""
    if value is None or value is False:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0
    return isinstance(value, str) and value.lower() in FALSE_SPELLINGS


def remote_code_keys(config: Any, prefix: str = "") -> list[str]:
    """Paths (`datasets[1].trust_remote_code`) of every trust_remote_code key, at any depth,
    whose value is not false. Axolotl reads it at the top, in each entry of datasets,
    test_datasets and pretraining_dataset, and in model_kwargs (passed to from_pretrained
    after its own); walking the whole tree also covers the places a later release adds."""
    found: list[str] = []
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "trust_remote_code" and not says_false(value):
                found.append(path)
            else:
                found += remote_code_keys(value, path)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            found += remote_code_keys(value, f"{prefix}[{i}]")
    return found


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
    if not allow_remote_code:
        problems += [(key, "runs Python code from the model's or the dataset's repository: "
                      "remove it, or allow it for this model with `allow_trust_remote_code: "
                      "true` in validation/<model>.yml")
                     for key in remote_code_keys(cfg)]
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
