"""The model card (README.md in the registered folder): what it is, from what, how good."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops.config import ModelSpec


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    roles = [r for r in ("base", "production", "candidate_adapter", "candidate")
             if r in metrics]
    names = sorted({k for m in metrics.values() for k in m})
    rows = ["| metric | " + " | ".join(roles) + " |", "|---" * (len(roles) + 1) + "|"]
    for n in names:
        rows.append(f"| {n} | " + " | ".join(_fmt(metrics[r].get(n)) for r in roles) + " |")
    return "\n".join(rows)


def render(spec: ModelSpec, data: dict[str, Any], metrics: dict[str, dict[str, float]],
           gate: dict[str, Any], lineage: dict[str, str],
           provenance: dict[str, str] | None = None) -> str:
    """Markdown from the run's reports: base model, data digests, config, metrics, gate.
    Nothing that differs between two tries of one `register` job (the job's id and URL:
    the version's tags and `llmops lineage` have them): the card is hashed with the
    version's files, and a retry must compute the digest of the half-uploaded first try."""
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
- base model: `{lineage.get('base_model', spec.base_model)}`{_base_pin(lineage)}
- git commit: `{lineage.get('mlflow.source.git.commit', 'unknown')}`
- CI pipeline: {lineage.get('gitlab.CI_PIPELINE_URL', 'not built in CI')}
- release gate: {'passed' if gate.get('passed') else 'refused'}
- signed by: {lineage.get('signature.signer', 'nobody (unsigned)')} (`model.sig`)
{_provenance_line(provenance)}\
- `llmops lineage {spec.name} <version>`: the whole chain, with every deployment

## Compute
{compute_section(lineage)}

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


STAGES = {"train": "training", "eval": "evaluation"}


def compute_lines(tags: dict[str, str]) -> list[str]:
    """Device-hours per stage from the `cost.<stage>.*` tags of a run or version, e.g.
    'training: 0.0123 device-hours (1 × cpu, 44.3 s)'."""
    lines = []
    for stage, label in STAGES.items():
        hours = tags.get(f"cost.{stage}.device_hours")
        if hours is None:
            continue
        device, devices = tags.get(f"cost.{stage}.device", "?"), tags.get(f"cost.{stage}.devices",
                                                                         "?")
        seconds = float(tags.get(f"cost.{stage}.seconds") or 0.0)
        lines.append(f"{label}: {float(hours):.4g} device-hours ({devices} × {device}, "
                     f"{seconds:.1f} s)")
    return lines


def compute_section(tags: dict[str, str]) -> str:
    lines = compute_lines(tags)
    if not lines:
        return "Not recorded (a run trained before compute was recorded)."
    return "\n".join(f"- {line}" for line in lines) + (
        "\n\nA device is one GPU, or one CPU machine (all its cores). The serving cost per "
        "million generated tokens is measured by each verified deploy's load test: "
        "`llmops lineage` and the release notes show it.")


def _provenance_line(p: dict[str, str] | None) -> str:
    """The provenance summary (`llmops.registry.provenance.summary`), one line."""
    if not p:
        return "- provenance: none recorded\n"
    return (f"- provenance (`provenance.json`, in-toto SLSA v1): {p['datasets']} datasets, "
            f"{p['locks']} locks, images {p['images']}, vLLM {p['engine']}; "
            f"`llmops lineage <model> <version> --verify` checks it\n")


def _base_pin(lineage: dict[str, str]) -> str:
    if digest := lineage.get("base_model.digest"):
        return f" (digest `{digest}`)"
    if revision := lineage.get("base_model.revision"):
        return f" (revision `{revision}`)"
    return ""
