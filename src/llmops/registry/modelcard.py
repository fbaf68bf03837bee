"""The model card (README.md in the registered folder): what it is, from what, how good."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops.config import ModelSpec


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    roles = [r for r in ("base", "production", "candidate") if r in metrics]
    names = sorted({k for m in metrics.values() for k in m})
    rows = ["| metric | " + " | ".join(roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for n in names:
        rows.append(f"| {n} | " + " | ".join(_fmt(metrics[r].get(n)) for r in roles) + " |")
    return "\n".join(rows)


def render(spec: ModelSpec, data: dict[str, Any], metrics: dict[str, dict[str, float]],
           gate: dict[str, Any], lineage: dict[str, str]) -> str:
    """Markdown from the run's reports: base model, data digests, config, metrics, gate."""
    cfg = spec.axolotl.as_dict()
    datasets = "\n".join(
        f"- `{Path(d['path']).name}` ({d['split']}): {d['examples']} examples, "
        f"sha256 `{d['sha256']}`" for d in data.get("datasets", []))
    rules = "\n".join(f"- {'pass' if r['passed'] else 'FAIL'}: {r['reason']}"
                      for r in gate.get("rules", []))
    keys = ("adapter", "lora_r", "lora_alpha", "sequence_len", "learning_rate", "max_steps",
            "num_epochs", "micro_batch_size", "sample_packing", "bf16")
    training = "\n".join(f"- {k}: `{cfg[k]}`" for k in keys if k in cfg)
    return f"""# {spec.name}

A LoRA adapter fine-tuned with Axolotl from `{spec.base_model}`{_merged_note(cfg)}.

## Lineage
- MLflow run: `{lineage.get('run_id', '')}`
- git commit: `{lineage.get('mlflow.source.git.commit', 'unknown')}`
- CI pipeline: {lineage.get('gitlab.CI_PIPELINE_URL', 'not built in CI')}

## Data
{datasets}

## Training
{training}

## Evaluation
{_metrics_table(metrics)}

## Release gate
{rules}

## Intended use and limits
Answers questions within the domain of its training data. It was evaluated only on the
golden sets listed in `validation/{spec.name}.yml`; outside them it behaves like its base
model, with that model's limits and biases. Do not use it for decisions about people.
"""


def _merged_note(cfg: dict[str, Any]) -> str:
    if not cfg.get("merge_lora"):
        return ""
    from llmops.models.merge import MAX_SHARD

    return (", and the same weights merged into the base model in `merged/` (bf16 "
            f"safetensors, shards under {MAX_SHARD})")
