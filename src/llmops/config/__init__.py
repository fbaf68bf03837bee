"""Configuration: the operator's YAML files as typed models, and the loaders that check them.

`schema` holds the pydantic models, `spec` the loaders and the per-model view (`ModelSpec`),
`golden` the golden sets, `paths` where the repository and the state folder are.
"""

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

__all__ = [
    "HTTP_KEEP_ALIVE_S", "DataChecks", "DatasetRef", "DeployConfig", "EvalSettings", "GateRule",
    "GoldenSet", "GpuTarget", "LoadSettings", "ModelSpec", "Pin", "RegistryPins", "ServeSettings",
    "Strict", "ValidationConfig", "VerifySettings", "known_envs", "known_models", "load_deploy",
    "load_model", "load_pins",
]
