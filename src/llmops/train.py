"""Fine-tuning with Axolotl, inside an MLflow run that the pipeline owns.

The Axolotl YAML is the single source of truth. The pipeline resolves the few values that
depend on where it runs (base model path, dataset paths, output folder, MLflow settings),
writes the resolved YAML beside the outputs, and runs Axolotl in a subprocess with
`MLFLOW_RUN_ID` set, so that transformers' MLflow callback logs into the pipeline's run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmops.basemodels import ensure_base_model
from llmops.config import ModelSpec
from llmops.errors import StageFailed, UsageError
from llmops.paths import resolve_in_repo, state_subdir
from llmops.tracking import tracking_uri


@dataclass(frozen=True)
class TrainResult:
    """What training produced: the run, the adapter, and the last logged metrics."""

    run_id: str
    output_dir: Path
    adapter_dir: Path
    base_model: str
    resolved_config: Path
    metrics: dict[str, float]
    seconds: float


def resolved_axolotl_config(spec: ModelSpec, output_dir: Path, run_name: str) -> dict[str, Any]:
    """The model's Axolotl YAML with paths and tracking filled in for this machine."""
    cfg = dict(spec.axolotl)
    cfg["base_model"] = ensure_base_model(spec.base_model)
    for key in ("datasets", "test_datasets"):
        if cfg.get(key):
            cfg[key] = [{**d, "path": str(resolve_in_repo(d["path"]))} for d in cfg[key]]
    cfg["output_dir"] = str(output_dir)
    cfg["dataset_prepared_path"] = str(output_dir / "prepared")
    cfg["mlflow_tracking_uri"] = tracking_uri()
    cfg["mlflow_experiment_name"] = spec.name
    cfg["mlflow_run_name"] = run_name
    if not _has_cuda():
        # Axolotl auto-enables its Triton LoRA kernels when these are unset; they need CUDA.
        for key in LORA_KERNELS:
            cfg.setdefault(key, False)
    return cfg


LORA_KERNELS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_axolotl(config_path: Path, log_path: Path, run_id: str) -> None:
    """Run `axolotl train`, echoing its progress and keeping a log; raise on failure."""
    env = _env()
    env["MLFLOW_RUN_ID"] = run_id
    cmd = [sys.executable, "-m", "axolotl.cli.train", str(config_path)]
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                if os.environ.get("LLMOPS_QUIET_TRAIN") != "1":
                    sys.stderr.write(line)
            code = proc.wait()
        except BaseException:  # interrupted: never leave a training process behind
            proc.terminate()
            proc.wait(timeout=60)
            raise
    if code != 0:
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(True)[-25:])
        raise StageFailed(f"axolotl train exited with {code}; log: {log_path}\n{tail}")


def train(spec: ModelSpec, run_id: str, run_name: str) -> TrainResult:
    """Fine-tune `spec` into a LoRA adapter, logging into the MLflow run `run_id`."""
    import mlflow

    started = time.perf_counter()
    output_dir = state_subdir("runs") / spec.name / run_id
    output_dir.mkdir(parents=True, exist_ok=True)
    cfg = resolved_axolotl_config(spec, output_dir, run_name)
    resolved = output_dir / "axolotl.resolved.yml"
    resolved.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    client = mlflow.MlflowClient(tracking_uri())
    client.log_artifact(run_id, str(resolved), "config")
    run_axolotl(resolved, output_dir / "train.log", run_id)
    if not (output_dir / "adapter_config.json").is_file():
        raise StageFailed(f"axolotl finished but wrote no adapter in {output_dir}")
    client.log_artifact(run_id, str(output_dir / "train.log"), "logs")
    metrics = {k: v for k, v in client.get_run(run_id).data.metrics.items()}
    return TrainResult(run_id, output_dir, output_dir, cfg["base_model"], resolved, metrics,
                       time.perf_counter() - started)


def choose_backend(requested: str) -> str:
    """`auto`: unsloth on exactly one CUDA GPU with unsloth installed, axolotl otherwise."""
    import importlib.util

    gpus = _cuda_count()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested == "auto":
        requested = "unsloth" if gpus == 1 and has_unsloth else "axolotl"
    if requested == "unsloth":
        if gpus != 1 or not has_unsloth:
            raise UsageError(f"--backend unsloth needs one NVIDIA GPU and unsloth installed "
                             f"(found {gpus} GPU(s), unsloth "
                             f"{'installed' if has_unsloth else 'not installed'}); "
                             "use --backend axolotl")
        raise UsageError("--backend unsloth is not wired into this version yet; "
                         "use --backend axolotl")
    return requested


def _cuda_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0
