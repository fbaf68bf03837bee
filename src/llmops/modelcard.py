"""The model card (README.md in the registered folder): what it is, from what, how good."""

from __future__ import annotations

from pathlib import Path

from llmops.config import ModelSpec
from llmops.data import DataReport
from llmops.evaluate import EvalReport
from llmops.gates import GateDecision


def _metrics_table(report: EvalReport) -> str:
    names = sorted({k for m in report.metrics.values() for k in m})
    rows = ["| metric | base | candidate |", "|---|---|---|"]
    for n in names:
        base = report.metrics.get("base", {}).get(n)
        cand = report.metrics.get("candidate", {}).get(n)
        rows.append(f"| {n} | {_fmt(base)} | {_fmt(cand)} |")
    return "\n".join(rows)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def render(spec: ModelSpec, data: DataReport, report: EvalReport, decision: GateDecision,
           lineage: dict[str, str]) -> str:
    """Markdown: base model, data digests, training config keys, metrics, gate, use, limits."""
    cfg = spec.axolotl
    datasets = "\n".join(
        f"- `{Path(d.path).name}` ({d.split}): {d.examples} examples, sha256 `{d.sha256}`"
        for d in data.datasets)
    gate = "\n".join(f"- {'pass' if r.passed else 'FAIL'}: {r.reason}" for r in decision.results)
    keys = ("adapter", "lora_r", "lora_alpha", "sequence_len", "learning_rate", "max_steps",
            "num_epochs", "micro_batch_size")
    training = "\n".join(f"- {k}: `{cfg[k]}`" for k in keys if k in cfg)
    return f"""# {spec.name}

A LoRA adapter fine-tuned with Axolotl from `{spec.base_model}`.

## Lineage
- MLflow run: `{lineage.get('run_id', '')}`
- git commit: `{lineage.get('mlflow.source.git.commit', 'unknown')}`
- CI pipeline: {lineage.get('gitlab.CI_PIPELINE_URL', 'not built in CI')}

## Data
{datasets}

## Training
{training}

## Evaluation
{_metrics_table(report)}

## Release gate
{gate}

## Intended use and limits
Answers questions within the domain of its training data. It was evaluated only on the
golden sets listed in `validation/{spec.name}.yml`; outside them it behaves like its base
model, with that model's limits and biases. Do not use it for decisions about people.
"""
