"""Local rollouts: start a version beside the serving one, verify it, then switch or roll back.

A new version's server starts while the previous one keeps serving. Verification is the
smoke test (health, model list, golden prompts) and then the bounded load test, with the
thresholds of `deploy/<env>.yml`. Passed: the new server becomes the environment's record
and the previous one is stopped. Failed (files that do not match the manifest, a server
that never becomes healthy, a failed check): the new server is stopped and the recorded
deployment serves again, restarted with its own recorded arguments if it is not running.
Every outcome is appended to the environment's history (`llmops history`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llmops import serve
from llmops.basemodels import ensure_base_model
from llmops.config import ModelSpec, load_deploy
from llmops.errors import StageFailed, UsageError
from llmops.evaluate import golden_sets
from llmops.loadtest import load_problems, load_test
from llmops.paths import state_subdir
from llmops.promote import registry_backend
from llmops.registry import MlflowRegistry, ModelVersion, verify_manifest
from llmops.verify import SmokeResult, accuracy_problems, smoke_test


@dataclass
class Verification:
    smoke: SmokeResult
    load: dict[str, Any] | None  # the load test's summary (None when not configured)


def local_settings(spec: ModelSpec, env: str) -> Any:
    deploy = load_deploy(env)
    if deploy.target != "local":
        raise UsageError(f"deploy/{env}.yml is a {deploy.target} target: `llmops deploy "
                         f"{spec.name} --env {env} --render DIR` writes its manifests, and "
                         "`--apply` applies them with kubectl")
    return deploy


def start_version(spec: ModelSpec, mv: ModelVersion, env: str) -> serve.Deployment:
    """Fetch the version, check its manifest, start its server beside the serving one."""
    settings = local_settings(spec, env).serve_for(spec.name)
    dest = state_subdir("deployments") / spec.name / mv.version
    try:
        try:  # already here (a redeploy, the serving version): reuse it if it verifies
            verify_manifest(dest, mv.digest)
            files = dest
        except StageFailed:
            files = registry_backend().download(mv, dest)
        base = ensure_base_model(mv.base_model or spec.base_model)
        return serve.start(spec.name, env, mv.version, base, files, settings, digest=mv.digest)
    except StageFailed as exc:
        raise _rolled_back(spec.name, env, mv.version, "deploy", exc) from exc


def run_checks(spec: ModelSpec, dep: serve.Deployment) -> tuple[Verification, list[str]]:
    """The smoke test, then (if it passed) the bounded load test; what each broke."""
    verify = load_deploy(dep.env).verify
    golden_set, golden = golden_sets(spec)[0]
    smoke = smoke_test(dep.url, dep.served_name, golden[: verify.golden_prompts],
                       spec.validation.eval.max_new_tokens, verify.request_timeout_s,
                       golden_set.match)
    problems, load = smoke.problems + accuracy_problems(
        smoke, golden_floor(spec, verify.min_golden_accuracy)), None
    if not problems and verify.load is not None:
        cfg = verify.load
        print(f"load test: {cfg.concurrency} clients × {cfg.duration_s:.0f} s "
              f"(≥ {cfg.min_requests} requests, {cfg.max_tokens} tokens each)", flush=True)
        result = load_test(dep.url, dep.served_name, [g.question for g in golden],
                           cfg.concurrency, cfg.duration_s, cfg.max_tokens,
                           verify.request_timeout_s, cfg.min_requests)
        load = result.summary()
        problems += [f"load test: {p}" for p in load_problems(load, cfg)]
    return Verification(smoke, load), problems


def golden_floor(spec: ModelSpec, minimum: float | str | None) -> float | None:
    """`verify.min_golden_accuracy` as a number: 'gate' is the highest golden_accuracy
    minimum of the model's gate rules (None when it has none)."""
    if minimum != "gate":
        return None if minimum is None else float(minimum)
    floors = [r.min for r in spec.validation.gates
              if r.metric == "golden_accuracy" and r.min is not None]
    return max(floors) if floors else None


def verify_and_switch(spec: ModelSpec, dep: serve.Deployment, action: str = "deploy",
                      ) -> Verification:
    """Smoke + load test `dep`; switch the environment to it, or stop it and roll back."""
    checked, problems = run_checks(spec, dep)
    load = checked.load
    if problems:
        dep.kill()
        failure = StageFailed(f"verification of {dep.model} {dep.version} at {dep.url} "
                              "failed: " + "; ".join(problems))
        raise _rolled_back(dep.model, dep.env, dep.version, action, failure, dep)
    serve.activate(dep)
    serve.record_event(dep.model, dep.env, dep.version, action, "serving",
                       reason=f"load: {load}" if load else "", dep=dep)
    registry = registry_backend()
    if isinstance(registry, MlflowRegistry):
        registry.set_alias(dep.model, dep.env, registry.get(dep.model, dep.version))
    return checked


def verify_current(spec: ModelSpec, env: str) -> tuple[serve.Deployment, Verification]:
    """Check the environment's serving deployment again (a CI verify job); switch nothing."""
    local_settings(spec, env)
    dep = serve.load_record(spec.name, env)
    if dep is None:
        raise UsageError(f"no deployment of {spec.name} in {env}; see `llmops status`")
    checked, problems = run_checks(spec, dep)
    if problems:
        raise StageFailed(f"{spec.name} {dep.version} at {dep.url}: " + "; ".join(problems))
    return dep, checked


def _rolled_back(model: str, env: str, version: str, action: str, exc: Exception,
                 dep: serve.Deployment | None = None) -> StageFailed:
    serve.record_event(model, env, version, action, "failed", str(exc), dep)
    return StageFailed(f"{exc}\n{restore(model, env)}")


def _healthy(dep: serve.Deployment) -> bool:
    try:
        return dep.alive() and httpx.get(f"http://127.0.0.1:{dep.port}/health",
                                         timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def restore(model: str, env: str) -> str:
    """Make the environment's recorded deployment serve; say what serves now."""
    record = serve.load_record(model, env)
    if record is None:
        return f"nothing to roll back to: no earlier deployment of {model} in {env}"
    if _healthy(record):
        serve.record_event(model, env, record.version, "rollback", "restored",
                           "it never stopped serving", record)
        return f"rolled back: {model} {record.version} still serves at {record.url}"
    if record.alive():  # running but not healthy: replace it
        record.kill()
    try:
        verify_manifest(Path(record.adapter_dir), record.digest)
        dep = serve.restart(record, load_deploy(env).serve_for(model))
    except StageFailed as exc:
        serve.record_event(model, env, record.version, "rollback", "failed", str(exc), record)
        return f"rollback to {model} {record.version} failed too: {exc}"
    serve.save_record(dep)
    serve.record_event(model, env, record.version, "rollback", "restored", dep=dep)
    return f"rolled back: {model} {record.version} restarted at {dep.url}"


def previous_good(history: list[dict[str, Any]], current: str | None,
                  ) -> dict[str, Any] | None:
    """The latest history entry that served (and was verified) a version other than the
    current one, with the arguments it ran with."""
    for event in reversed(history):
        if event.get("result") == "serving" and event.get("version") != current \
                and event.get("args"):
            return event
    return None


def rollback(spec: ModelSpec, env: str) -> tuple[serve.Deployment, Verification]:
    """On demand: serve the previous verified version again, with its recorded arguments."""
    settings = local_settings(spec, env).serve_for(spec.name)
    current = serve.load_record(spec.name, env)
    event = previous_good(serve.read_history(spec.name, env),
                          current.version if current else None)
    if event is None:
        raise UsageError(f"no earlier verified deployment of {spec.name} in {env} to roll "
                         f"back to; see {serve.history_path(spec.name, env)}")
    adapter_dir = Path(str(event["adapter_dir"]))
    if not adapter_dir.is_dir():
        raise UsageError(f"{adapter_dir} (files of {event['version']}) is gone: deploy it "
                         f"again with `llmops deploy {spec.name} --env {env} --version "
                         f"{event['version']}`")
    verify_manifest(adapter_dir, str(event.get("digest", "")))
    record = serve.Deployment(spec.name, env, str(event["version"]), spec.name,
                              str(event["base_model"]), str(adapter_dir), 0, 0,
                              list(event["args"]), "", digest=str(event.get("digest", "")))
    print(f"rolling back {spec.name} in {env}: {current.version if current else 'nothing'}"
          f" → {record.version}", flush=True)
    try:
        dep = serve.restart(record, settings)
    except StageFailed as exc:
        raise _rolled_back(spec.name, env, record.version, "rollback", exc) from exc
    return dep, verify_and_switch(spec, dep, action="rollback")
