"""One model across the folders (axolotl_configs/, validation/, datasets), and the loaders of
every operator YAML. Loading checks the files and names the file, key and line of a problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from llmops.config.axolotl import AxolotlConfig
from llmops.config.datasets import format_of
from llmops.config.golden import GoldenItem, read_golden
from llmops.config.paths import repo_root, resolve_in_repo
from llmops.config.schema import DeployConfig, GoldenSet, RegistryPins, ValidationConfig
from llmops.config.yamlfile import format_validation_error, line_of, load_model_file, read_yaml
from llmops.errors import UsageError

# --- one model across the folders ---------------------------------------------------------


@dataclass(frozen=True)
class DatasetRef:
    """A dataset named in the Axolotl YAML, with where it was named (for error messages)."""

    path: Path
    type: str
    split: Literal["train", "eval"]
    entry: dict[str, Any]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline knows about one model, read from the repository."""

    name: str
    axolotl_path: Path
    axolotl: AxolotlConfig
    validation: ValidationConfig
    datasets: tuple[DatasetRef, ...]

    @property
    def base_model(self) -> str:
        return self.axolotl.base_model

    @property
    def sequence_len(self) -> int:
        return self.axolotl.sequence_len

    def golden_paths(self) -> list[Path]:
        return [resolve_in_repo(g.path) for g in self.validation.eval.golden]

    def golden_sets(self) -> list[tuple[GoldenSet, list[GoldenItem]]]:
        """Each golden set of the validation config with its items, read and checked."""
        return [(g, read_golden(p)) for g, p in zip(self.validation.eval.golden,
                                                     self.golden_paths(), strict=True)]

    def source_files(self) -> list[Path]:
        """The repository files this model is released from: its Axolotl YAML, its
        validation suite, its datasets, its golden sets, and its evaluation suites' files
        (safety probes, retention set, lm-eval task folder) when it has them."""
        ev, probes = self.validation.eval, self.validation.probes
        suites = [resolve_in_repo(p) for p in (probes.path if probes else None,
                                               ev.retention.path if ev.retention else None)
                  if p]
        if ev.lm_eval:  # the task folder's files: task YAMLs and the data they read
            suites += sorted(p for p in resolve_in_repo(ev.lm_eval.include_path).glob("*")
                             if p.is_file())
        return [self.axolotl_path, repo_root() / "validation" / f"{self.name}.yml",
                *(ref.path for ref in self.datasets), *self.golden_paths(), *suites]


# A model's name is a file name in four folders, an MLflow and GitLab model name and part of
# Kubernetes names (DNS-1123 labels: `<model>-<env>` at most 63 characters).
MODEL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?")


def check_model_name(name: str) -> str:
    """`name` if a new model may have it; UsageError (exit 2) saying the rule otherwise."""
    if not MODEL_NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not a valid model name: lowercase letters, digits and "
                         "'-', starting and ending with a letter or digit, at most 48 "
                         "characters (it names files, registry entries and Kubernetes objects)")
    return name


def known_models() -> list[str]:
    """Model names: one per Axolotl YAML in axolotl_configs/."""
    return sorted(p.stem for p in (repo_root() / "axolotl_configs").glob("*.yml"))


def load_model(name: str) -> ModelSpec:
    """Read and check a model's YAML files; UsageError (exit 2) names what is wrong."""
    known = known_models()
    if name not in known:
        raise UsageError(f"unknown model {name!r}; known models: {', '.join(known) or '(none)'}")
    root = repo_root()
    axolotl_path = root / "axolotl_configs" / f"{name}.yml"
    raw, node = read_yaml(axolotl_path)
    if not isinstance(raw, dict) or "base_model" not in raw:
        raise UsageError(f"{axolotl_path}: base_model: required key is missing")
    try:
        axolotl = AxolotlConfig.from_yaml(raw)
    except ValidationError as exc:
        raise UsageError(format_validation_error(axolotl_path, node, exc)) from exc
    validation = load_model_file(root / "validation" / f"{name}.yml", ValidationConfig)
    datasets = _dataset_refs(axolotl_path, raw, node)
    for golden in validation.eval.golden:
        if not resolve_in_repo(golden.path).is_file():
            raise UsageError(
                f"{root / 'validation' / f'{name}.yml'}: eval.golden.path: "
                f"{golden.path} not found"
            )
        # parse now: a bad line exits 2 before training
        read_golden(resolve_in_repo(golden.path))
    probes = validation.probes
    if probes is not None and probes.path and not resolve_in_repo(probes.path).is_file():
        raise UsageError(f"{root / 'validation' / f'{name}.yml'}: probes.path: {probes.path} "
                         "not found")
    return ModelSpec(name, axolotl_path, axolotl, validation, datasets)


def _dataset_refs(path: Path, axolotl: dict[str, Any], node: Any) -> tuple[DatasetRef, ...]:
    refs = []
    for key, split in (("datasets", "train"), ("test_datasets", "eval")):
        for i, entry in enumerate(axolotl.get(key) or []):
            where = f"{path}:{line_of(node, (key, i, 'path')) or '?'}: {key}.{i}.path"
            if not isinstance(entry, dict) or "path" not in entry:
                raise UsageError(f"{where}: each dataset needs a path")
            file = resolve_in_repo(entry["path"])
            if not file.is_file():
                raise UsageError(f"{where}: {entry['path']} not found (relative to {repo_root()})")
            at = _key_at(path, node, key, i)
            fmt = format_of(entry, at)  # a block no stage could read exits 2 here
            if split == "eval" and fmt.type == "completion":
                raise UsageError(f"{at('type')}: 'completion' cannot be an eval set: eval "
                                 "loss is measured on the assistant turn through the chat "
                                 "template; use a chat_template or alpaca eval set")
            refs.append(DatasetRef(file, str(entry.get("type", "")), split, entry))  # type: ignore[arg-type]
    if not any(r.split == "train" for r in refs):
        raise UsageError(f"{path}: datasets: at least one training dataset is required")
    return tuple(refs)


def _key_at(path: Path, node: Any, key: str, i: int) -> Callable[[str], str]:
    """key -> "file:line: datasets.i.key", the line of that key (else of the entry)."""
    def at(name: str) -> str:
        line = line_of(node, (key, i, name)) or line_of(node, (key, i)) or "?"
        return f"{path}:{line}: {key}.{i}.{name}"
    return at


def known_envs(folder: Literal["deploy", "registry"] = "deploy") -> list[str]:
    """Environment names: one per YAML in deploy/ (targets) or registry/ (pins)."""
    return sorted(p.stem for p in (repo_root() / folder).glob("*.yml"))


def load_deploy(env: str) -> DeployConfig:
    """deploy/<env>.yml; an unknown environment lists the known ones."""
    path = repo_root() / "deploy" / f"{env}.yml"
    if not path.is_file():
        known = known_envs()
        raise UsageError(f"unknown environment {env!r}; known: {', '.join(known) or '(none)'}")
    return load_model_file(path, DeployConfig)


def load_pins(env: str) -> RegistryPins:
    """registry/<env>.yml, or no pins when the environment has never been promoted to."""
    path = repo_root() / "registry" / f"{env}.yml"
    return load_model_file(path, RegistryPins) if path.is_file() else RegistryPins()
