"""Configuration: the operator's YAML files as typed models, and the loaders that check them.

`schema` holds the pydantic models, `spec` the loaders and the per-model view (`ModelSpec`),
`axolotl` the typed Axolotl YAML, `golden` the golden sets, `settings` the environment,
`paths` where the repository and the state folder are. The names below load their module
on first use, so that `llmops.config.paths` alone stays cheap to import (the CLI's light
commands need only it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops.config.schema import (
        HTTP_KEEP_ALIVE_S,
        DataChecks,
        DeployConfig,
        EvalSettings,
        GateRule,
        GoldenSet,
        GpuTarget,
        LoadSettings,
        Pin,
        RegistryPins,
        ServeSettings,
        ServingChoice,
        Strict,
        ValidationConfig,
        VerifySettings,
    )
    from llmops.config.spec import (
        DatasetRef,
        ModelSpec,
        known_envs,
        known_models,
        load_deploy,
        load_model,
        load_pins,
    )

_SCHEMA = ("HTTP_KEEP_ALIVE_S", "DataChecks", "DeployConfig", "EvalSettings", "GateRule",
           "GoldenSet", "GpuTarget", "LoadSettings", "Pin", "RegistryPins", "ServeSettings",
           "ServingChoice", "Strict", "ValidationConfig", "VerifySettings")
_SPEC = ("DatasetRef", "ModelSpec", "known_envs", "known_models", "load_deploy", "load_model",
         "load_pins")
__all__ = [
    "HTTP_KEEP_ALIVE_S", "DataChecks", "DatasetRef", "DeployConfig", "EvalSettings", "GateRule",
    "GoldenSet", "GpuTarget", "LoadSettings", "ModelSpec", "Pin", "RegistryPins", "ServeSettings",
    "ServingChoice", "Strict", "ValidationConfig", "VerifySettings", "known_envs", "known_models",
    "load_deploy", "load_model", "load_pins",
]


def __getattr__(name: str) -> Any:
    if name in _SCHEMA or name in _SPEC:
        module = importlib.import_module(
            "llmops.config.schema" if name in _SCHEMA else "llmops.config.spec")
        return getattr(module, name)
    raise AttributeError(f"module 'llmops.config' has no attribute {name!r}")
