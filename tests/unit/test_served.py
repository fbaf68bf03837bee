"""The gate's subject is what the target serves: the artefact per deploy/<env>.yml, the
evaluation servers the roles map to, and the suites' results merged across servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import PlanFor

from llmops.config import DeployConfig, GateRule, ServingChoice, load_deploy
from llmops.evaluation import evalserve
from llmops.evaluation.served import (
    ADAPTER_ROLE,
    EvalServer,
    plan_servers,
    served_artefact,
    served_weights,
)
from llmops.evaluation.suite import EvalEndpoint, SuiteResult, finish, merge_results

PLAN = ServingChoice("bfloat16", "none", 1)


@pytest.mark.parametrize(("env", "model", "isa", "artefact"), [
    ("local", "support-bot", "AMX", "int8"),  # the plan's w8a8-int8 where int8 is native
    ("local", "support-bot", "AVX2", "merged"),  # ...and merged weights where emulated
    ("local", "tiny", "AMX", "merged"),  # quantization: none, set for the test model
    ("staging", "support-bot", "AMX", "adapter"),  # gpu.serve: lora
    ("production", "support-bot", "AVX2", "merged"),  # gpu.serve: merged
])
def test_the_served_artefact_follows_the_deploy_config_and_the_plan(
        env: str, model: str, isa: str, artefact: str, plan_for: PlanFor) -> None:
    assert served_artefact(load_deploy(env), model, plan_for(isa)) == artefact


def test_a_local_lora_target_serves_the_adapter() -> None:
    config = DeployConfig.model_validate(
        {"target": "local", "serve": {"serve": "lora"},
         "models": {"bot": {"serve": "merged", "quantization": "w8a8-int8"}}})
    assert served_artefact(config, "other") == "adapter"
    assert served_artefact(config, "bot") == "int8"


def test_roles_served_as_weights_get_a_server_each_and_the_adapter_stays_beside() -> None:
    adapters = {"candidate": Path("/run"), "production": Path("/prod")}
    weights = {"candidate": Path("/cache/a/merged-w8a8"),
               "production": Path("/cache/b/merged-w8a8")}
    servers = plan_servers("/base", adapters, weights)
    assert [(s.model, s.name, dict(s.loras)) for s in servers] == [
        ("/base", "base", {ADAPTER_ROLE: Path("/run")}),
        ("/cache/a/merged-w8a8", "candidate", {}),
        ("/cache/b/merged-w8a8", "production", {})]
    assert [s.roles for s in servers] == [("base", ADAPTER_ROLE), ("candidate",),
                                          ("production",)]


def test_adapters_served_as_lora_modules_share_the_base_server() -> None:
    adapters = {"candidate": Path("/run"), "production": Path("/prod")}
    servers = plan_servers("/base", adapters, {})
    assert len(servers) == 1 and servers[0].roles == ("base", "candidate", "production")
    assert servers[0].loras == adapters  # no candidate_adapter: the adapter is the subject


def _adapter(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "seed": seed}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights %d" % seed)
    return folder


def _merged_by_training(adapter: Path) -> Path:
    """The merged folder training leaves beside the adapter (merge_lora: true), with its
    derived.json: reused as it is, never rebuilt here."""
    import torch
    from safetensors.torch import save_file

    from llmops.models.derived import built_once

    def build(folder: Path) -> None:
        torch.manual_seed(0)
        save_file({"model.layers.0.self_attn.q_proj.weight":
                   torch.randn(8, 4).to(torch.bfloat16),
                   "model.norm.weight": torch.ones(4).to(torch.bfloat16)},
                  folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))

    return built_once(adapter / "merged", build, source=adapter)


def test_int8_weights_are_built_in_the_cache_reused_and_pruned(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    run = _adapter(tmp_path / "run", 1)
    merged = _merged_by_training(run)
    cache = tmp_path / "cache"
    first = served_weights("/base", {"candidate": run}, {"candidate": "int8"}, cache)
    int8 = first["candidate"]
    assert int8.parent.parent == cache and int8.name == "merged-w8a8"
    assert json.loads((int8 / "config.json").read_text())["quantization_config"]
    assert not (run / "merged-w8a8").exists()  # the run folder is what registration ships
    stamp = (int8 / "model.safetensors").stat().st_mtime_ns
    assert served_weights("/base", {"candidate": run}, {"candidate": "int8"}, cache) == first
    assert (int8 / "model.safetensors").stat().st_mtime_ns == stamp
    # merged: training's own folder, as the version ships and a deployment serves it
    assert served_weights("/base", {"candidate": run}, {"candidate": "merged"}, cache) == \
        {"candidate": merged}
    # another candidate: the previous one's cache is removed, the adapter role needs none
    other = _adapter(tmp_path / "other", 2)
    _merged_by_training(other)
    served_weights("/base", {"candidate": other}, {"candidate": "int8"}, cache)
    assert not int8.exists() and len(list(cache.iterdir())) == 1
    assert served_weights("/base", {"candidate": other}, {}, cache) == {}


def test_a_deployment_links_the_weights_evaluation_built_for_the_same_adapter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation's int8 rewrite of a run's merged weights is what a deployment of the
    version (the same adapter and merged weights, downloaded elsewhere) serves: linked after
    both manifests check, not quantized again; one that no longer checks is rebuilt."""
    pytest.importorskip("torch")
    import shutil

    from llmops.models import derived, quantize

    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    run = _adapter(tmp_path / "run", 1)
    _merged_by_training(run)
    evaluated = served_weights("/base", {"candidate": run}, {"candidate": "int8"},
                               derived.served_cache_root("bot"))["candidate"]
    version = tmp_path / "deployments" / "bot" / "1.0.0"
    shutil.copytree(run, version)  # registered, downloaded
    shelf = derived.served_cache("bot", "/base", version)
    assert shelf / quantize.INT8_DIR == evaluated

    def no_quantizing(weight: Any) -> Any:
        raise AssertionError("quantized again")

    real = quantize.quantize_weight
    monkeypatch.setattr(quantize, "quantize_weight", no_quantizing)
    served = quantize.int8_model(version / "merged", reuse=shelf / quantize.INT8_DIR)
    assert served == version / quantize.INT8_DIR
    assert (served / "model.safetensors").stat().st_ino == \
        (evaluated / "model.safetensors").stat().st_ino
    derived.verify(served)  # its own manifest, bound to the version's merged weights
    assert json.loads((served / "derived.json").read_text())["source"]["path"] == "../merged"
    # An evaluation folder that no longer matches its manifest is not reused.
    shutil.rmtree(served)
    (evaluated / "config.json").write_text("{}")
    monkeypatch.setattr(quantize, "quantize_weight", real)
    rebuilt = quantize.int8_model(version / "merged", reuse=shelf / quantize.INT8_DIR)
    assert (rebuilt / "model.safetensors").stat().st_ino != \
        (evaluated / "model.safetensors").stat().st_ino
    derived.verify(rebuilt)


class _Suite:
    name = "probe"

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def run(self, endpoint: EvalEndpoint) -> SuiteResult:
        self.seen.append(endpoint.roles)
        return SuiteResult(self.name, {r: {"probe.refusal_rate": 0.5} for r in endpoint.roles},
                           [{"role": r} for r in endpoint.roles])

    def section(self, result: SuiteResult) -> list[str]:
        return [f"- {r['role']}: ok" for r in result.records]


def test_every_server_answers_its_roles_and_the_suites_run_on_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[str, str, dict[str, Path]]] = []

    def fake_on(name: str, spec: EvalServer, golden: Any, max_tokens: int, settings: Any,
                suites: Any, cache: Any, adapter_suites: bool,
                keep_for: str = "", server: Any = None) -> evalserve._Served:
        started.append((spec.model, spec.name, dict(spec.loras)))
        answers = [evalserve.Answer(role, "golden", "q", "a", "a" if role != "base" else "x",
                                    "stop", 0.1, role != "base", 1.0) for role in spec.roles]
        return evalserve._Served(answers, [s.run(EvalEndpoint("u", "k", spec.roles, 8, 4))
                                           for s in suites],
                                 100.0 * len(started), dict.fromkeys(spec.roles, 0.5))

    monkeypatch.setattr(evalserve, "_evaluate_on", fake_on)
    servers = plan_servers("/base", {"candidate": Path("/run")},
                           {"candidate": Path("/c/merged-w8a8")})
    suite = _Suite()
    metrics, answers, results = evalserve.evaluate_with_vllm(
        "bot", servers, [], 8, load_deploy("local").serve_for("tiny", PLAN), [suite])
    assert started == [("/base", "base", {ADAPTER_ROLE: Path("/run")}),
                       ("/c/merged-w8a8", "candidate", {})]
    assert suite.seen == [("base", ADAPTER_ROLE), ("candidate",)]
    assert [a["role"] for a in answers] == ["base", ADAPTER_ROLE, "candidate"]
    assert metrics["candidate"]["golden_accuracy"] == 1.0
    assert metrics["base"]["golden_accuracy"] == 0.0
    assert metrics["candidate"]["server_rss_mb"] == 200.0  # its own server's memory
    assert metrics[ADAPTER_ROLE]["server_rss_mb"] == 100.0
    assert metrics["candidate"]["golden_answers_per_s"] == 2.0
    assert metrics["candidate"]["probe.refusal_rate"] == 0.5
    [probe] = results
    assert set(probe.metrics) == {"base", ADAPTER_ROLE, "candidate"}
    assert [r["role"] for r in probe.records] == ["base", ADAPTER_ROLE, "candidate"]
    # one section, written from every server's records together
    assert probe.lines == ["- base: ok", f"- {ADAPTER_ROLE}: ok", "- candidate: ok"]


def test_merged_results_keep_every_role_and_the_section_is_written_once() -> None:
    one = SuiteResult("probe", {"base": {"m": 1.0}}, [{"role": "base"}])
    two = SuiteResult("probe", {"candidate": {"m": 2.0}}, [{"role": "candidate"}])
    merged = merge_results([one, two])
    assert merged.metrics == {"base": {"m": 1.0}, "candidate": {"m": 2.0}}
    assert merged.records == [{"role": "base"}, {"role": "candidate"}] and merged.lines == []
    assert finish(_Suite(), [one, two]).lines == ["- base: ok", "- candidate: ok"]


def test_the_gate_report_shows_the_adapter_beside_the_served_candidate(
        tmp_path: Path) -> None:
    from llmops.evaluation.gatereport import write
    from llmops.evaluation.gates import gate_decision

    rules = [GateRule(metric="golden_accuracy", min=0.5)]
    metrics = {"base": {"golden_accuracy": 0.0}, ADAPTER_ROLE: {"golden_accuracy": 0.8},
               "candidate": {"golden_accuracy": 0.75}}
    decision = gate_decision(rules, metrics["candidate"], metrics["base"], None)
    json_path, md_path, html_path = write(
        tmp_path, "bot", rules, decision, metrics, {},
        artefacts={"candidate": "int8", ADAPTER_ROLE: "adapter"})
    md = md_path.read_text()
    assert (f"| metric | base | production | {ADAPTER_ROLE} (adapter) | candidate (int8) | "
            "threshold | pass |") in md
    assert "| golden_accuracy | 0 | – | 0.8 | 0.75 | >= 0.5 | ✅ |" in md
    assert "Gated: the candidate as its target serves it (int8: merged weights" in md
    body = json.loads(json_path.read_text())
    assert body["rules"][0][ADAPTER_ROLE] == 0.8 and body["artefacts"]["candidate"] == "int8"
    assert "candidate (int8)" in html_path.read_text()
