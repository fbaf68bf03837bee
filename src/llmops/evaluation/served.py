"""What the gate evaluates: the artefact the target environment will serve.

A deployment does not always serve the adapter on its base: `deploy/local.yml` serves the
adapter merged into the weights (`serve: merged`, the default) and, for support-bot, those
weights with int8 decoder layers (`quantization: w8a8-int8`); a Kubernetes target serves
the adapter as a LoRA module or merged (`gpu.serve`). The gate's subject, the role
`candidate`, is that artefact, built here the way a deployment builds it
(`llmops.models.merge`, `llmops.models.quantize`: derived folders with their own manifest,
`llmops.models.derived`). The adapter on its bf16 base is measured beside it as
`candidate_adapter` (not gated: the evidence of what merging or quantizing changed).
Production is measured as the artefact it serves too, so the regression rules compare like
with like.

Each distinct artefact needs its own vLLM server (one model per server): the base model with
the adapters that are served as LoRA modules, then one server per merged or int8 model.
`plan_servers` maps the roles to those servers; `evalserve.evaluate_with_vllm` runs them
one after the other.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from llmops.compute import ComputePlan, serve_settings
from llmops.config import DeployConfig, ServeSettings
from llmops.evaluation.answercache import Served, artefact_id
from llmops.models.derived import cache_key

Artefact = Literal["adapter", "merged", "int8"]

# The candidate's adapter, measured beside the served artefact when that is not the adapter.
ADAPTER_ROLE = "candidate_adapter"
# Roles in the order reports show them; the gate's subject last.
ROLES = ("base", "production", ADAPTER_ROLE, "candidate")

DESCRIPTIONS: dict[str, str] = {
    "adapter": "adapter: LoRA module on the bf16 base",
    "merged": "merged: adapter merged into bf16 weights",
    "int8": "int8: merged weights, int8 decoder layers (w8a8)",
}


def served_artefact(config: DeployConfig, model: str,
                    plan: ComputePlan | None = None) -> Artefact:
    """What `deploy/<env>.yml` serves for `model`: the adapter as a LoRA module, the merged
    weights, or those weights in int8. A GPU target's own `gpu.quantization` (fp8, AWQ,
    GPTQ: vLLM's, on CUDA) is not reproduced on the CPU: its merged weights are evaluated."""
    if config.gpu is not None:
        return "merged" if config.gpu.serve == "merged" else "adapter"
    settings = serve_settings(config, model, plan)
    if settings.serve == "lora":
        return "adapter"
    return "int8" if settings.quantization == "w8a8-int8" else "merged"


@dataclass(frozen=True)
class EvalServer:
    """One evaluation server: `model` (a base model or a merged/int8 folder) served under
    `name`, with each LoRA module of `loras` served under its key (a role)."""

    label: str
    model: str
    name: str
    loras: Mapping[str, Path] = field(default_factory=dict)
    # The name vLLM serves `model` under, when not its role's: a candidate server kept for
    # the release's deploy (`llmops.serve.handoff`) serves it as the deployment does.
    served_as: str = ""

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.name, *self.loras)

    @property
    def served_name(self) -> str:
        return self.served_as or self.name

    def names(self) -> dict[str, str]:
        """role → the name its requests ask for, where that is not the role."""
        return {self.name: self.served_as} if self.served_as else {}


def plan_servers(base_model: str, adapters: Mapping[str, Path],
                 weights: Mapping[str, Path]) -> list[EvalServer]:
    """The servers that evaluate every role, in the order they run.

    `adapters`: role → adapter folder (candidate, production); `weights`: role → the merged
    or int8 folder of the roles served as weights (the others are served as LoRA modules).
    The first server is the base model with the LoRA roles, plus the candidate's adapter as
    `candidate_adapter` when the candidate itself is served as weights; then one server
    per role in `weights`, serving that folder under the role's name."""
    loras: dict[str, Path] = {}
    for role, adapter in adapters.items():
        if role not in weights:
            loras[role] = adapter
        elif role == "candidate":
            loras[ADAPTER_ROLE] = adapter
    label = "base model" + (" + LoRA modules" if loras else "")
    servers = [EvalServer(label, base_model, "base", loras)]
    servers += [EvalServer(f"{role}: {folder.name}", str(folder), role)
                for role, folder in weights.items()]
    return servers


def served_roles(base_model: str, adapters: Mapping[str, Path],
                 artefacts: Mapping[str, Artefact], settings: ServeSettings) -> \
        dict[str, Served]:
    """role → what answers it, by content (the answer cache's key, `answercache`): the
    base model's files, the role's adapter files and how it is served (base, adapter,
    merged, int8; `candidate_adapter`: the candidate's adapter as a LoRA module), the
    serve lock's vLLM release, and the serving dtype and quantization."""
    from llmops.digests import folder_digest
    from llmops.models.derived import source_digest
    from llmops.serve.vllm_release import vllm_version

    engine = vllm_version()
    base = folder_digest(Path(base_model)) if Path(base_model).is_dir() else \
        f"name:{base_model}"

    def served(kind: str, adapter: Path | None = None) -> Served:
        artefact = artefact_id(kind, base, source_digest(adapter) if adapter else None)
        return Served(artefact, engine, settings.dtype, settings.quantization)

    out = {"base": served("base")}
    for role, adapter in adapters.items():
        out[role] = served(artefacts.get(role, "adapter"), adapter)
    if "candidate" in adapters:
        out[ADAPTER_ROLE] = served("adapter", adapters["candidate"])
    return out


def artefact_weights(artefact: Artefact, base_model: str, adapter_dir: Path,
                     cache: Path) -> Path | None:
    """The folder vLLM serves for `artefact` (None for the adapter), built as a deployment
    builds it and reused while it matches its manifest. The merged weights that training
    left beside the adapter (`merge_lora: true`, shipped in the version) are used as they
    are; otherwise they are built in `cache`, not in the adapter's folder (registration
    ships what that folder holds). The int8 rewrite is always built in `cache`."""
    if artefact == "adapter":
        return None
    from llmops.models.merge import merged_model

    if (adapter_dir / "merged").is_dir():
        merged = merged_model(base_model, adapter_dir)
    else:
        merged = merged_model(base_model, adapter_dir, out=cache / "merged")
    if artefact == "merged":
        return merged
    from llmops.models.quantize import INT8_DIR, int8_model

    return int8_model(merged, out=cache / INT8_DIR)


def served_weights(base_model: str, adapters: Mapping[str, Path],
                   artefacts: Mapping[str, Artefact], cache_root: Path) -> dict[str, Path]:
    """role → the merged or int8 folder each role served as weights needs, built or reused
    under `cache_root/<cache_key>/`; folders of adapters no longer evaluated are removed."""
    out: dict[str, Path] = {}
    keep: set[str] = set()
    for role, adapter in adapters.items():
        artefact = artefacts.get(role, "adapter")
        if artefact == "adapter":
            continue
        key = cache_key(base_model, adapter)  # the folder a deployment reuses
        keep.add(key)
        folder = artefact_weights(artefact, base_model, adapter, cache_root / key)
        if folder is not None:
            out[role] = folder
    if cache_root.is_dir():  # one candidate's weights per release: keep the cache bounded
        for stale in cache_root.iterdir():
            if stale.is_dir() and stale.name not in keep:
                shutil.rmtree(stale, ignore_errors=True)
    return out
