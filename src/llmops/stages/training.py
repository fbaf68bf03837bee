"""Training a candidate: the config check, the data gate, then the trainer into the run."""

from __future__ import annotations

from dataclasses import dataclass

from llmops.config import ModelSpec
from llmops.process import activity
from llmops.serve.cost import Compute, compute
from llmops.stages.context import Context
from llmops.stages.data import check_config, validate_data
from llmops.stages.runs import Run, log_candidate_model, log_compute, read_compute, release_run
from llmops.stages.steps import Steps
from llmops.train.run import TrainResult, choose_backend, interrupted_run, train


def train_stage(spec: ModelSpec, run: Run, backend: str = "auto",
                resume: bool = False, quiet: bool = False) -> TrainResult:
    """Axolotl (or Unsloth on one CUDA GPU) into the run; `resume`: from its checkpoint;
    `quiet`: the trainer's lines are never streamed (`Settings.quiet_train`). The adapter
    becomes the run's MLflow logged model (`llmops.model_id`)."""
    checkpoint = interrupted_run(spec)[2] if resume else None
    result = train(spec, run.run_id, run.name, choose_backend(backend), checkpoint, quiet)
    log_candidate_model(run, result.adapter_dir, result.base_model)
    earlier = read_compute(run.folder).get("train") if resume else None
    log_compute(run, "train", training_compute(
        result.seconds + (earlier.seconds if earlier else 0.0)))
    return result


def training_compute(seconds: float) -> Compute:
    """The devices training used (`llmops.serve.cost`'s convention): with CUDA, every
    process of the launch (one per GPU, on every node); on CPUs, one device per machine
    (node), however many processes share it."""
    from llmops.errors import UsageError
    from llmops.train.launch import plan
    from llmops.train.run import _cuda_count, training_env

    gpus = _cuda_count()
    try:
        launch = plan({}, gpus, training_env(gpus))
    except UsageError:  # the launch checked these already; a rerun on another machine
        return compute(gpus, seconds)
    return compute(gpus, seconds, gpu_devices=launch.world_size, machines=launch.nodes)


@dataclass(frozen=True)
class Candidate:
    run: Run
    backend: str
    result: TrainResult


def resumable_run(spec: ModelSpec) -> Run:
    """The model's latest unfinished run that has a checkpoint (UsageError if none)."""
    run_id, name, _ = interrupted_run(spec)
    return Run(spec.name, run_id, name)


def train_candidate(spec: ModelSpec, ctx: Context, backend: str = "auto",
                    resume: bool = False, steps: Steps | None = None) -> Candidate:
    """A whole training job: check the config, open (or reopen) the run, validate the data
    (a resumed run validated it already), train. The run ends FINISHED or FAILED."""
    steps = steps or Steps()
    chosen = choose_backend(backend)
    steps("check-config", check_config, spec)
    with release_run(spec, ctx.run_tags,
                     resume=resumable_run(spec) if resume else None) as run:
        activity.tell(f"MLflow run {run.run_id} ({run.name}), backend {chosen}")
        if not resume:
            steps("validate", validate_data, spec, run)
        result = steps("train", train_stage, spec, run, chosen, resume,
                       ctx.settings.quiet_train)
    return Candidate(run, chosen, result)
