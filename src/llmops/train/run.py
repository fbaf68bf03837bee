"""Fine-tuning with Axolotl, inside an MLflow run that the pipeline owns.

The Axolotl YAML is the single source of truth. The pipeline resolves the few values that
depend on where it runs (base model path, dataset paths, output folder, MLflow settings),
writes the resolved YAML beside the outputs, and runs Axolotl in a subprocess with
`MLFLOW_RUN_ID` set, so that transformers' MLflow callback logs into the pipeline's run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmops.compute import ComputePlan, machine_plan, train_precision
from llmops.config import ModelSpec
from llmops.config.paths import resolve_in_repo, run_folder, state_subdir
from llmops.errors import StageFailed, UsageError
from llmops.models.base import ensure_base_model
from llmops.process import activity
from llmops.process.health import log_tail
from llmops.process.native import preloaded, tcmalloc
from llmops.redact import redact, redact_mapping, scrubbed_env
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
    cfg = spec.axolotl.as_dict()
    cfg["base_model"] = ensure_base_model(spec.base_model)
    for key in ("datasets", "test_datasets"):
        if cfg.get(key):
            cfg[key] = [{**d, "path": str(resolve_in_repo(d["path"]))} for d in cfg[key]]
    if isinstance(cfg.get("deepspeed"), dict):  # inline: a file that Axolotl and the
        output_dir.mkdir(parents=True, exist_ok=True)  # launcher both read
        (output_dir / "deepspeed.json").write_text(json.dumps(cfg["deepspeed"], indent=2))
        cfg["deepspeed"] = str(output_dir / "deepspeed.json")
    elif isinstance(cfg.get("deepspeed"), str) and resolve_in_repo(cfg["deepspeed"]).is_file():
        cfg["deepspeed"] = str(resolve_in_repo(cfg["deepspeed"]))
    cfg["output_dir"] = str(output_dir)
    cfg["dataset_prepared_path"] = str(output_dir / "prepared")
    # The tracking URI (which may carry credentials) reaches Axolotl through its
    # environment (`training_env`), never through this file, which is logged and shipped;
    # the experiment name alone turns Axolotl's MLflow logging on.
    cfg["mlflow_experiment_name"] = spec.name
    cfg["mlflow_run_name"] = run_name
    cfg, warnings = for_this_machine(cfg, machine_plan())
    for warning in warnings:
        activity.warn(warning)
    return cfg


def for_this_machine(cfg: dict[str, Any], plan: ComputePlan) -> tuple[dict[str, Any], list[str]]:
    """The settings that depend on the hardware, and the warnings about them:

    - the precision, always explicit: the compute plan's where the YAML says `auto` or
      nothing (`llmops.compute.train_precision`; Axolotl's own fallback is fp16, which CPUs
      emulate), the YAML's otherwise (with a warning where this CPU would emulate it);
    - on a CPU, Axolotl's Triton LoRA kernels off where unset (it auto-enables them; they
      need CUDA), and our plugin, which tells transformers to autocast bf16 on a CPU.
    """
    cfg, warnings = train_precision(cfg, plan)
    if plan.gpus:
        return cfg, warnings
    for key in LORA_KERNELS:
        cfg.setdefault(key, False)
    plugins = list(cfg.get("plugins") or [])
    cfg["plugins"] = plugins if CPU_PLUGIN in plugins else [*plugins, CPU_PLUGIN]
    return cfg, warnings


CPU_PLUGIN = "llmops.train.axolotl_cpu.CpuTraining"
LORA_KERNELS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")


def training_env(gpus: int, parent: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The Axolotl process's environment on a machine with `gpus` CUDA GPUs, built from
    `parent` (by default this process's, into which `tracking_uri` exports MLflow's
    variables first)."""
    tracking_uri()  # exported, so that the training process logs into the same store
    env = scrubbed_env(parent, keep=TRAINING_SECRETS)
    if not gpus:
        env.update(cpu_training_env(env))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # CPU, memory (and GPU, when there is one) of the training process, into the same run.
    env.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    env.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "5")
    return env


# The secrets the training process needs: MLflow's (its tracking URI may carry them) and
# the Hub's for a gated base model. GitLab's and the registry's tokens stay with the CLI.
TRAINING_SECRETS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                    "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN")


def cpu_training_env(env: dict[str, str]) -> dict[str, str]:
    """What PyTorch's CPU performance guides prescribe, for the Axolotl process on a CPU:

    - TCMalloc preloaded (Debian's libtcmalloc-minimal4, installed by `make setup`): the
      thousands of short-lived activation and cast buffers of a training step are slow
      for the default allocator;
    - Inductor's cache under `.llmops/cache`, so that `torch_compile: true` (each decoder
      block compiled in place by our plugin) compiles once per machine, not once per run.
    """
    out: dict[str, str] = {}
    if preload := preloaded([tcmalloc()], env.get("LD_PRELOAD")):
        out["LD_PRELOAD"] = preload
    out["TORCHINDUCTOR_CACHE_DIR"] = env.get(
        "TORCHINDUCTOR_CACHE_DIR", str(state_subdir("cache") / "inductor"))
    return out


def axolotl_command(config_path: Path, gpus: int, env: dict[str, str]) -> list[str]:
    """The command that trains `config_path` on this node: `python -m axolotl.cli.train` for
    one process, `accelerate launch` over several GPUs, CPU processes
    (LLMOPS_TRAIN_PROCESSES) or nodes (NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT), with the
    YAML's deepspeed or fsdp settings (`llmops.train.launch`)."""
    from llmops.train.launch import argv, plan

    cfg = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return argv(plan(cfg or {}, gpus, env), config_path)


def run_axolotl(config_path: Path, log_path: Path, run_id: str, quiet: bool = False) -> None:
    """Run `axolotl train` into its log (every line redacted); raise on failure. The
    trainer's progress (step of total, loss, tokens/s, ETA) feeds the shell's progress bar
    (`llmops.process.activity`); its lines are echoed to standard error only where the
    shell streams child output (`-v`, or no shell) and not `quiet` (LLMOPS_QUIET_TRAIN=1,
    `Settings.quiet_train`)."""
    from llmops.train.progress import ProgressParser

    gpus = _cuda_count()
    env = training_env(gpus)
    env["MLFLOW_RUN_ID"] = run_id
    env.pop("TQDM_DISABLE", None)  # the trainer's own bar is what the progress reads
    cmd = axolotl_command(config_path, gpus, env)
    command_line = redact("training: " + " ".join(cmd))
    # Once on the terminal (CI's job log shows the launch it ran) and first in train.log.
    activity.tell(command_line)
    echo = activity.streaming() and not quiet
    parser = ProgressParser()
    with open(log_path, "a", encoding="utf-8") as log, \
            activity.progress("training") as update:
        log.write(command_line + "\n")
        log.flush()  # there before the launch's first output (other nodes wait for it)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = redact(line)
                log.write(line)
                if echo:
                    sys.stderr.write(line)
                if (state := parser.feed(line)) is not None:
                    update(state.as_progress())
            code = proc.wait()
        except BaseException:  # interrupted: never leave a training process behind
            proc.terminate()
            proc.wait(timeout=60)
            raise
    if code != 0:
        raise StageFailed(f"axolotl train exited with {code}; log: {log_path}\n"
                          f"{log_tail(log_path, 25)}")


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The highest-step `checkpoint-N` folder that the trainer finished writing."""
    done = [p for p in output_dir.glob("checkpoint-*")
            if p.name.removeprefix("checkpoint-").isdigit()
            and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.removeprefix("checkpoint-")), default=None)


def interrupted_run(spec: ModelSpec) -> tuple[str, str, Path]:
    """(run id, run name, checkpoint) of the model's latest training that did not finish."""
    import mlflow

    from llmops.tracking import experiment_id

    client = mlflow.MlflowClient(tracking_uri())
    runs = client.search_runs([experiment_id(spec.name)], order_by=["attributes.start_time DESC"],
                              max_results=20)
    for run in runs:
        if run.info.status == "FINISHED":
            continue
        checkpoint = latest_checkpoint(run_folder(spec.name, run.info.run_id))
        if checkpoint is not None:
            return run.info.run_id, str(run.info.run_name), checkpoint
    raise UsageError(f"nothing to resume: no unfinished run of {spec.name} with a checkpoint "
                     "(checkpoints are written every save_steps)")


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Nested config → {"a.b.0.c": "value"}, the MLflow compare view's columns."""
    if isinstance(node, dict):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list):
        out = {}
        for i, value in enumerate(node):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): str(node)}


def log_config_params(client: Any, run_id: str, cfg: dict[str, Any]) -> None:
    """The resolved config as `axolotl.*` params (values cut to MLflow's 6000 characters),
    redacted (`llmops.redact`); a resumed run logs the same values again, which MLflow
    accepts."""
    from mlflow.entities import Param

    params = [Param(f"axolotl.{k}"[:250], v[:6000]) for k, v in
              sorted(flatten(redact_mapping(cfg)).items())]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])


def pip_freeze() -> str:
    """The training environment's packages, as `pip freeze` would list them."""
    from importlib.metadata import distributions

    names = {f"{d.metadata['Name']}=={d.version}" for d in distributions()
             if d.metadata["Name"]}
    return "\n".join(sorted(names, key=str.lower)) + "\n"


def metric_name(key: str) -> str:
    """A trainer log key as transformers' MLflow callback names the metric."""
    return re.sub(r"[^0-9A-Za-z_\-\.\ :/]", "_", key)


def wait_for_tracking(client: Any, run_id: str, timeout_s: float = 600.0) -> None:
    """After training: if the tracking server is down, wait for it (the adapter is safe on
    disk) instead of failing the run; give up after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    warned = False
    while True:
        try:
            client.get_run(run_id)
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise StageFailed(f"MLflow is still unreachable {timeout_s:.0f}s after training "
                                  f"ended ({type(exc).__name__}); the adapter and checkpoints "
                                  "stay in the run folder") from exc
            if not warned:
                activity.tell("MLflow is unreachable; training is done, waiting for it to "
                              "come back")
                warned = True
            time.sleep(5)


def backfill_metrics(client: Any, run_id: str, output_dir: Path) -> int:
    """Log every per-step value of the trainer's log history that the MLflow run lacks.

    Transformers logs metrics to MLflow asynchronously, so training goes on when the
    tracking server is briefly unreachable, but values sent meanwhile can be dropped. The
    trainer keeps its own history (trainer_state.json of the last checkpoint, which the
    trainer writes at the final step): replaying what is missing makes the run complete.
    """
    from mlflow.entities import Metric

    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None:
        return 0
    history = json.loads((checkpoint / "trainer_state.json").read_text()).get("log_history", [])
    logged: dict[str, set[int]] = {}
    missing: list[Any] = []
    now = int(time.time() * 1000)
    for entry in history:
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        for key, value in entry.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = metric_name(key)
            if name not in logged:
                logged[name] = {m.step for m in client.get_metric_history(run_id, name)}
            if step not in logged[name]:
                missing.append(Metric(name, float(value), now, step))
                logged[name].add(step)
    for i in range(0, len(missing), 500):
        client.log_batch(run_id, metrics=missing[i:i + 500])
    return len(missing)


def train(spec: ModelSpec, run_id: str, run_name: str, backend: str = "axolotl",
          resume_from: Path | None = None, quiet: bool = False) -> TrainResult:
    """Fine-tune `spec` into a LoRA adapter, logging into the MLflow run `run_id`; with
    `resume_from`, continue that run from its checkpoint (same run, same total steps);
    `quiet`: the trainer's lines stay in train.log even where the shell streams."""
    import mlflow

    started = time.perf_counter()
    output_dir = run_folder(spec.name, run_id)
    output_dir.mkdir(parents=True, exist_ok=True)
    cfg = resolved_axolotl_config(spec, output_dir, run_name)
    client = mlflow.MlflowClient(tracking_uri())
    if resume_from is not None:
        cfg["resume_from_checkpoint"] = str(resume_from)
        client.update_run(run_id, status="RUNNING")
        activity.tell(f"resuming run {run_id} from {resume_from.name}")
    resolved = output_dir / "axolotl.resolved.yml"
    resolved.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    client.log_artifact(run_id, str(resolved), "config")
    log_config_params(client, run_id, {k: v for k, v in cfg.items()
                                       if k != "resume_from_checkpoint"})
    client.log_text(run_id, pip_freeze(), "environment/requirements.txt")
    client.set_tag(run_id, "llmops.train_backend", backend)
    if backend == "unsloth":
        from llmops.train.unsloth import run_unsloth

        run_unsloth(cfg, run_id, resume=resume_from is not None)
    else:
        run_axolotl(resolved, output_dir / "train.log", run_id, quiet)
    wait_for_tracking(client, run_id)
    restored = backfill_metrics(client, run_id, output_dir)
    if restored:
        activity.tell(f"MLflow missed {restored} metric values during training "
                      "(unreachable?): restored them from the trainer's own log history")
    if not (output_dir / "adapter_model.safetensors").is_file():
        raise StageFailed(f"{backend} finished but wrote no adapter in {output_dir}")
    if cfg.get("merge_lora"):
        from llmops.models.merge import merged_model

        client.log_artifacts(run_id, str(merged_model(cfg["base_model"], output_dir)),
                             "merged")  # announced by merged_model (merge_lora: true)
    if (output_dir / "train.log").is_file():
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
    if requested == "unsloth" and (gpus != 1 or not has_unsloth):
        raise UsageError(f"--backend unsloth needs one NVIDIA GPU and unsloth installed "
                         f"(found {gpus} GPU(s), unsloth "
                         f"{'installed' if has_unsloth else 'not installed'}); "
                         "use --backend axolotl")
    return requested


def _cuda_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0
