"""Within a release, the deploy serves the server the gate evaluated (`serve.handoff`), and
only where it serves exactly what a fresh start would; every other kept server is stopped.

The servers are real processes: the test double of vLLM's server (tests/fakes), launched
as the real one is, on the tiny model's real merged weights."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from conftest import tiny_base_and_adapter

from llmops.config import GoldenSet, ServeSettings, load_model
from llmops.config.golden import GoldenItem
from llmops.errors import CheckFailed
from llmops.evaluation import evalserve
from llmops.evaluation.evaluate import evaluate
from llmops.evaluation.served import plan_servers, served_weights
from llmops.evaluation.suite import EvalEndpoint, SuiteResult
from llmops.models.derived import served_cache_root
from llmops.serve import handoff
from llmops.serve import process as serve

FAKES = Path(__file__).resolve().parents[1] / "fakes"
GOLDEN = [(GoldenSet(path="golden.jsonl"), [GoldenItem("Which port?", "7431")])]
SETTINGS = ServeSettings(dtype="float32", quantization="none", kvcache_space_gib=1,
                         max_num_seqs=8, startup_timeout_s=60, preload_iomp=False,
                         preload_tcmalloc=False)


@pytest.fixture()
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """The tiny base and an adapter; servers are the test double, in a fresh home."""
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMOPS_SERVE_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(FAKES))
    yield tiny_base_and_adapter(tmp_path)
    handoff.discard("tiny")
    for folder in (tmp_path / "home" / "deployments").glob("*-*"):  # nothing left running
        assert not _running_in(folder), folder


def _running_in(folder: Path) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        try:
            if proc.info["cwd"] and Path(proc.info["cwd"]).resolve() == folder.resolve() and \
                    serve.SERVER_MODULE in " ".join(proc.info["cmdline"] or []):
                pids.append(proc.info["pid"])
        except (psutil.Error, TypeError):
            continue
    return pids


def _evaluate_keeping(base: Path, adapter: Path) -> None:
    """The candidate's merged weights asked one golden question, its server kept."""
    weights = served_weights(str(base), {"candidate": adapter}, {"candidate": "merged"},
                             served_cache_root("tiny"))
    [candidate] = plan_servers(str(base), {"candidate": adapter}, weights)[1:]
    evalserve.evaluate_with_vllm("tiny", [candidate], GOLDEN, 8, SETTINGS,
                                 keep_candidate=True)


def _asked(home: Path) -> dict[str, set[str]]:
    """Evaluation server folder → the model names its requests asked for."""
    out = {}
    for folder in sorted((home / "deployments").glob("tiny-eval-*")):
        lines = (folder / "requests.jsonl").read_text().splitlines() \
            if (folder / "requests.jsonl").is_file() else []
        out[folder.name] = {json.loads(x)["model"] for x in lines}
    return out


def test_the_deploy_serves_the_evaluated_server_with_the_deploys_key_and_arguments(
        models: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = models
    evaluate(load_model("tiny"), str(base), {"candidate": adapter}, SETTINGS,
             {"candidate": "merged"}, keep_candidate=True)  # as the release's evaluate stage
    asked = _asked(tmp_path / "home")
    # The base server asked its roles by role; the kept one was asked as the deployment
    # is, under the model's name.
    assert sorted(asked.values(), key=len) == [{"tiny"}, {"base", "candidate_adapter"}]
    [kept_folder] = [f for f, names in asked.items() if names == {"tiny"}]

    prepared = serve.prepare("tiny", "local", "0.1.0", str(base), adapter, SETTINGS)
    dep = handoff.take_over(prepared, SETTINGS, serve.local_api_key())
    assert dep is not None and dep.alive()
    assert Path(dep.log_path).parent.name == kept_folder  # the process that was evaluated
    # Recorded as a start from the deployment's own (linked) weights would be.
    assert dep.args == prepared.args_for(dep.port)
    assert prepared.weights is not None and str(prepared.weights) in dep.args
    assert "/eval/" in " ".join(psutil.Process(dep.pid).cmdline())
    key = serve.local_api_key()
    answered = httpx.post(f"{dep.check_url}/chat/completions",
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "tiny", "messages": [{"role": "user",
                                                               "content": "hi"}]})
    assert answered.status_code == 200
    assert handoff.take("tiny") is None  # taken once
    dep.kill()


@pytest.mark.parametrize("change", ["settings", "key", "tampered", "lora"])
def test_a_kept_server_that_differs_from_a_fresh_start_is_stopped_not_served(
        models: tuple[Path, Path], change: str) -> None:
    base, adapter = models
    _evaluate_keeping(base, adapter)
    kept = handoff.take("tiny")
    assert kept is not None and kept.server.proc.poll() is None
    handoff.keep(kept)
    settings, key = SETTINGS, serve.local_api_key()
    prepared = serve.prepare("tiny", "local", "0.1.0", str(base), adapter, SETTINGS)
    if change == "settings":
        settings = SETTINGS.model_copy(update={"max_num_seqs": 16})
        prepared = serve.prepare("tiny", "local", "0.1.0", str(base), adapter, settings)
    elif change == "key":
        key = "another-key"
    elif change == "tampered":  # the deployment's weights changed after they were built
        assert prepared.weights is not None
        shard = next(prepared.weights.glob("*.safetensors"))
        shard.unlink()  # a linked file: replace it rather than write through the link
        shard.write_bytes(b"not the evaluated weights")
    else:
        prepared = serve.prepare("tiny", "local", "0.1.0", str(base), adapter,
                                 SETTINGS.model_copy(update={"serve": "lora"}))
    assert handoff.take_over(prepared, settings, key) is None
    kept.server.proc.wait(timeout=30)  # stopped, so that a fresh start has the CPU
    assert handoff.take("tiny") is None


def test_the_mismatch_names_each_difference(models: tuple[Path, Path]) -> None:
    base, adapter = models
    _evaluate_keeping(base, adapter)
    kept = handoff.take("tiny")
    assert kept is not None
    try:
        prepared = serve.prepare("tiny", "local", "0.1.0", str(base), adapter, SETTINGS)
        assert prepared.weights is not None
        key = serve.local_api_key()

        def why(**changes: Any) -> str | None:
            return handoff.mismatch(kept, changes.get("weights", prepared.weights),
                                    changes.get("args_for", prepared.args_for),
                                    changes.get("settings", SETTINGS), changes.get("key", key))

        assert why() is None
        assert why(settings=SETTINGS.model_copy(update={"max_model_len": 512})) == \
            "it was started with other serving settings"
        assert why(key="x") == "it requires another API key"
        assert why(args_for=lambda port: [*prepared.args_for(port), "--enforce-eager"]) == \
            "its arguments differ from the deploy's"
        assert why(weights=kept.weights.parent / "nothing") is not None
    finally:
        kept.server.kill()
    assert why() == f"it exited (code {kept.server.proc.returncode})"


class _Refuses:
    name = "refuses"

    def run(self, endpoint: EvalEndpoint) -> SuiteResult:
        endpoint.chat()("candidate", [{"role": "user", "content": "hi"}], max_tokens=4)
        raise CheckFailed("a suite failed")

    def section(self, result: SuiteResult) -> list[str]:
        return []


def test_an_evaluation_that_fails_keeps_nothing_running(models: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    base, adapter = models
    weights = served_weights(str(base), {"candidate": adapter}, {"candidate": "merged"},
                             served_cache_root("tiny"))
    servers = plan_servers(str(base), {"candidate": adapter}, weights)
    with pytest.raises(CheckFailed, match="a suite failed"):
        evalserve.evaluate_with_vllm("tiny", servers[1:], [], 8, SETTINGS, [_Refuses()],
                                     keep_candidate=True)
    assert handoff.take("tiny") is None
    [folder] = (tmp_path / "home" / "deployments").glob("tiny-eval-*")
    assert _running_in(folder) == []


def test_discard_and_a_second_keep_stop_the_server_they_replace(
        models: tuple[Path, Path]) -> None:
    base, adapter = models
    _evaluate_keeping(base, adapter)
    first = handoff.take("tiny")
    assert first is not None
    handoff.keep(first)
    _evaluate_keeping(base, adapter)  # asked again: a new server, kept in first's place
    first.server.proc.wait(timeout=30)
    second = handoff.take("tiny")
    assert second is not None and second.server.proc.pid != first.server.proc.pid
    handoff.keep(second)
    handoff.discard("tiny")
    second.server.proc.wait(timeout=30)
    assert handoff.take("tiny") is None


def test_a_release_whose_gate_refuses_stops_the_server_it_kept(
        models: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stages.release` with its stages faked around a real kept server: the target can
    take it over, the gate refuses, and the release ends with nothing kept or running."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from llmops.errors import GateRefused
    from llmops.stages import release as rel

    base, adapter = models
    plan = SimpleNamespace(line=lambda: "plan", summary=dict, params=dict)
    monkeypatch.setattr(rel, "machine_plan", lambda: plan)
    monkeypatch.setattr(rel, "release_run",
                        lambda *a: nullcontext(SimpleNamespace(run_id="r", name="n")))
    monkeypatch.setattr(rel, "stage_run", lambda *a: nullcontext())
    monkeypatch.setattr(rel, "log_params", lambda *a: None)
    monkeypatch.setattr(rel, "check_data", lambda spec: "report")
    monkeypatch.setattr(rel, "record_data", lambda run, report: None)
    monkeypatch.setattr(rel, "require_data", lambda report: SimpleNamespace(
        html_path="", json_path="", docs_path=""))
    monkeypatch.setattr(rel, "train_stage", lambda *a: SimpleNamespace(
        base_model=str(base), adapter_dir=adapter))
    asked_to_keep: list[bool] = []

    def evaluate_stage(spec: Any, candidate: Any, registry: Any, env: str,
                       keep: bool) -> Any:
        asked_to_keep.append(keep)
        _evaluate_keeping(base, adapter)
        return SimpleNamespace(metrics={})

    def gate_stage(*args: Any) -> Any:
        assert handoff._kept["tiny"].server.proc.poll() is None  # kept until here
        raise GateRefused("the candidate failed its release gate", tmp_path / "gate.md")

    monkeypatch.setattr(rel, "evaluate_stage", evaluate_stage)
    monkeypatch.setattr(rel, "gate_stage", gate_stage)
    target = SimpleNamespace(env="local", api_key_hint=lambda: "$KEY",
                             takes_over=lambda spec, settings: True)
    with pytest.raises(GateRefused):
        rel.release(load_model("tiny"), target,  # type: ignore[arg-type]
                    SimpleNamespace(registry=None, run_tags={},  # type: ignore[arg-type]
                                    settings=SimpleNamespace(quiet_train=True)),
                    config_checked=True)
    assert asked_to_keep == [True]
    assert handoff.take("tiny") is None
    [folder] = (tmp_path / "home" / "deployments").glob("tiny-eval-*")
    assert _running_in(folder) == []


class _RefusesTheBase(_Refuses):
    def run(self, endpoint: EvalEndpoint) -> SuiteResult:
        if "base" in endpoint.roles:
            raise CheckFailed("a suite failed on the base server")
        return SuiteResult(self.name, {})


def test_a_failure_on_the_first_server_stops_the_one_started_ahead(
        models: tuple[Path, Path], tmp_path: Path) -> None:
    """The candidate's server starts while the base's answers (`PRESTART_NEXT`); when the
    base's evaluation fails, that server is stopped too, never kept."""
    base, adapter = models
    weights = served_weights(str(base), {"candidate": adapter}, {"candidate": "merged"},
                             served_cache_root("tiny"))
    servers = plan_servers(str(base), {"candidate": adapter}, weights)
    with pytest.raises(CheckFailed, match="on the base server"):
        evalserve.evaluate_with_vllm("tiny", servers, GOLDEN, 8, SETTINGS,
                                     [_RefusesTheBase()], keep_candidate=True)
    assert handoff.take("tiny") is None
    folders = sorted((tmp_path / "home" / "deployments").glob("tiny-eval-*"))
    assert len(folders) == 2  # both were started
    assert [_running_in(f) for f in folders] == [[], []]
