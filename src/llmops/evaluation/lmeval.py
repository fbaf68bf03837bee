"""lm-evaluation-harness tasks against the evaluation server: base, candidate, production.

The tasks are defined in the repository (`validation/lm_eval/<task>.yaml`, over a local
JSONL through `dataset_path: json`), so nothing is downloaded; the harness talks to the
served roles with its `local-chat-completions` model type (the chat template is the
server's, as deployed), which runs generate_until tasks. Each metric is
`lmeval.<task>.<metric>` per role (with `.<filter>` when a task reports one metric under
several filters), which gate rules can name (e.g. `max_regression_vs_production`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import tempfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from llmops.config import ModelSpec
from llmops.config.paths import resolve_in_repo
from llmops.digests import sha256_file
from llmops.errors import CheckFailed, UsageError
from llmops.evaluation.served import ROLES
from llmops.evaluation.suite import EvalEndpoint, SuiteResult
from llmops.redact import redact

PREFIX = "lmeval"


def offline() -> None:
    """`datasets` and the Hub client in offline mode (what HF_DATASETS_OFFLINE and
    HF_HUB_OFFLINE set): the tasks' data are local files, and a lookup of anything else
    fails instead of downloading it."""
    import datasets.config
    import huggingface_hub.constants

    datasets.config.HF_DATASETS_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def task_config(include_path: Path, task: str) -> dict[str, Any]:
    """The task's YAML as a harness task config, its local data files made absolute (the
    harness resolves them against the working directory); UsageError names what is wrong."""
    path = include_path / f"{task}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in include_path.glob("*.yaml"))
        raise UsageError(f"lm_eval task {task!r}: no {path} (tasks there: "
                         f"{', '.join(known) or 'none'})")
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or config.get("task") != task:
        raise UsageError(f"{path}: task: must be {task!r}")
    if config.get("output_type") != "generate_until":
        raise UsageError(f"{path}: output_type: the chat endpoint runs generate_until tasks "
                         "only (no log-likelihoods through chat completions)")
    if config.get("dataset_path") != "json":
        raise UsageError(f"{path}: dataset_path: must be json (a local file: nothing is "
                         "downloaded)")
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if not isinstance(files, dict) or not files:
        raise UsageError(f"{path}: dataset_kwargs.data_files: give {{split: file}} of local "
                         "JSONL files")
    absolute = {}
    for split, name in files.items():
        file = include_path / str(name)
        if not file.is_file():
            raise UsageError(f"{path}: dataset_kwargs.data_files.{split}: {file} not found")
        absolute[split] = str(file.resolve())
    config["dataset_kwargs"] = {**config["dataset_kwargs"], "data_files": absolute}
    return config


def metrics_of(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The harness's `results` ({task: {"exact_match,last-number": 0.4, ...}}) as
    lmeval.<task>.<metric> (.<filter> only when one metric has several filters)."""
    out: dict[str, float] = {}
    for task, values in results.items():
        keys = [k for k in values if "," in k and "_stderr" not in k]
        for key in keys:
            metric, filt = key.split(",", 1)
            several = sum(k.split(",", 1)[0] == metric for k in keys) > 1
            value = values[key]
            if isinstance(value, int | float):
                out[f"{PREFIX}.{task}.{metric}" + (f".{filt}" if several else "")] = \
                    float(value)
    return out


class LmEvalSuite:
    """The configured harness tasks, run against every role of the endpoint."""

    name = "lm-evaluation-harness"

    def __init__(self, configs: list[dict[str, Any]], limit: int | None,
                 max_gen_toks: int) -> None:
        self.configs, self.limit, self.max_gen_toks = configs, limit, max_gen_toks

    def _lm(self, endpoint: EvalEndpoint, role: str) -> Any:
        from lm_eval.models.openai_completions import LocalChatCompletion

        return LocalChatCompletion(
            base_url=f"{endpoint.url()}/chat/completions", model=endpoint.served(role),
            tokenizer_backend=None, num_concurrent=endpoint.concurrency, max_retries=1,
            max_gen_toks=self.max_gen_toks, timeout=600,
            header={"Authorization": f"Bearer {endpoint.api_key}"})

    def asked(self) -> dict[str, Any]:
        """What a role's result depends on besides the role's artefact and engine (the
        answer cache's key): the harness's release, the tasks with their data files' sha256
        (not their paths), the documents per task and the longest answer."""
        tasks = []
        for config in self.configs:
            files = config["dataset_kwargs"]["data_files"]
            tasks.append({**config, "dataset_kwargs": {
                **config["dataset_kwargs"],
                "data_files": {split: sha256_file(Path(f)) for split, f in files.items()}}})
        try:
            harness = importlib.metadata.version("lm_eval")
        except importlib.metadata.PackageNotFoundError:
            harness = "unknown"
        return {"suite": "lm_eval", "harness": harness, "tasks": tasks, "limit": self.limit,
                "max_gen_toks": self.max_gen_toks, "apply_chat_template": True}

    def run(self, endpoint: EvalEndpoint) -> SuiteResult:
        """Each role's tasks, one role at a time; a role's whole result (metrics and
        records) comes from the endpoint's cache when its artefact ran these tasks before
        (then neither the harness nor the server is needed for it)."""
        metrics: dict[str, dict[str, float]] = {}
        records: list[dict[str, Any]] = []
        asked = self.asked() if endpoint.cache is not None else {}
        missed = []
        for role in endpoint.roles:
            hit = endpoint.cache.get(role, asked) if endpoint.cache is not None else None
            if hit is not None and isinstance(hit.get("metrics"), dict) and \
                    isinstance(hit.get("records"), list):
                metrics[role], records = hit["metrics"], records + hit["records"]
            else:
                missed.append(role)
        if missed:
            fresh = self._evaluate(endpoint, missed)
            for role in missed:
                metrics[role] = fresh.metrics[role]
                mine = [r for r in fresh.records if r["role"] == role]
                records += mine
                if endpoint.cache is not None:
                    endpoint.cache.put(role, asked, {"metrics": metrics[role],
                                                     "records": mine})
        records.sort(key=lambda r: endpoint.roles.index(r["role"]))  # role by role
        return SuiteResult(self.name, metrics, records)

    def _evaluate(self, endpoint: EvalEndpoint, roles: list[str]) -> SuiteResult:
        offline()
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager

        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        metrics: dict[str, dict[str, float]] = {}
        records: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="llmops-lmeval-") as tasks_dir:
            # The tasks as the harness indexes them (by name, from an include path), with
            # their data files absolute; the harness's own task catalogue is not indexed.
            for config in self.configs:
                (Path(tasks_dir) / f"{config['task']}.yaml").write_text(yaml.safe_dump(config))
            manager = TaskManager(verbosity="WARNING", include_path=tasks_dir,
                                  include_defaults=False)
            names = [str(c["task"]) for c in self.configs]
            for role in roles:  # one role at a time, as the golden set
                try:
                    out = simple_evaluate(
                        model=self._lm(endpoint, role), tasks=names, task_manager=manager,
                        limit=self.limit, apply_chat_template=True, log_samples=True,
                        bootstrap_iters=0, verbosity="WARNING")
                except CheckFailed:  # the server could not start: vLLM's own error
                    raise
                except Exception as exc:  # the harness raises its own and aiohttp's errors
                    raise CheckFailed(f"lm_eval could not run {', '.join(names)} against "
                                      f"{role!r}: {type(exc).__name__}: {exc}") from exc
                self._collect(role, out, metrics, records)
        return SuiteResult(self.name, metrics, records)

    @staticmethod
    def _collect(role: str, out: Mapping[str, Any] | None,
                 metrics: dict[str, dict[str, float]], records: list[dict[str, Any]]) -> None:
        if out is None:
            raise CheckFailed(f"lm_eval returned no results for {role!r}")
        metrics[role] = metrics_of(out["results"])
        for task, docs in (out.get("samples") or {}).items():
            records += [{"suite": "lm_eval", "role": role, "task": task,
                         "doc_id": d.get("doc_id"), "target": d.get("target"),
                         "answer": redact(str((d.get("resps") or [[""]])[0][0])),
                         "filtered": redact(str((d.get("filtered_resps") or [""])[0])),
                         **{k: d[k] for k in ("exact_match",) if k in d}}
                        for d in docs]

    @staticmethod
    def section(result: SuiteResult) -> list[str]:
        metrics = result.metrics
        shown = [r for r in ROLES if r in metrics] + sorted(set(metrics) - set(ROLES))
        names = sorted({m for r in shown for m in metrics[r]})
        # documents per task: each role answered the same ones
        samples = Counter(x["task"] for x in result.records if x["role"] == shown[0]) \
            if shown else Counter()
        sizes = ", ".join(f"{t}: {n} documents" for t, n in sorted(samples.items()))
        lines = [f"Tasks defined in the repository, run by lm-evaluation-harness against "
                 f"the served roles (local-chat-completions, zero-shot, greedy; {sizes}).",
                 "", "| metric | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
        for name in names:
            cells = [f"{v:.4g}" if (v := metrics[r].get(name)) is not None else "–"
                     for r in shown]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines


def build(spec: ModelSpec) -> LmEvalSuite | None:
    """The model's lm-eval suite, when `eval.lm_eval` is configured."""
    settings = spec.validation.eval.lm_eval
    if settings is None:
        return None
    folder = resolve_in_repo(settings.include_path)
    configs = [task_config(folder, task) for task in settings.tasks]
    return LmEvalSuite(configs, settings.limit, settings.max_gen_toks)
