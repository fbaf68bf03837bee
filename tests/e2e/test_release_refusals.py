"""What `llmops release` and its neighbours refuse before a model is trained or served:
bad data, a bad training config or golden line, an unknown model or candidate, a missing
dataset; `validate-data --changed-since`; and Kubernetes manifests rendered offline from the
pin. Apart from test_release (the release and its steps), so that the two run side by side."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmops.serve.vllm_release import DIGEST_PLACEHOLDER

pytestmark = pytest.mark.e2e

RunLlmops = Callable[..., subprocess.CompletedProcess[str]]


def test_bad_data_stops_before_training_and_names_the_lines(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path], run_llmops: RunLlmops) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    train = root / "datasets" / "support-bot" / "train.jsonl"
    lines = train.read_text().splitlines()
    lines[2] = json.dumps({"messages": [{"role": "robot", "content": "beep"},
                                        {"role": "assistant", "content": "ok"}]})
    lines[4] = json.dumps({"messages": [{"role": "user", "content": "   "},
                                        {"role": "assistant", "content": "ok"}]})
    lines[6] = "{not json"
    train.write_text("\n".join(lines) + "\n")
    done = run_llmops("release", "tiny", root=root, home=home)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "data validation failed" in done.stderr
    assert "train.jsonl: roles: 1 failing" in done.stderr and "lines 3\n" in done.stderr
    assert "train.jsonl: content: 1 failing" in done.stderr and "lines 5\n" in done.stderr
    assert "train.jsonl: parse: 1 failing" in done.stderr and "lines 7\n" in done.stderr
    assert not list(home.rglob("train.log"))  # no training started
    # The flow's logs reached Prefect's API before its server stopped, at exit.
    assert "Error logging to API" not in done.stderr


def test_bad_training_config_exits_2_naming_the_key_before_any_run(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        run_llmops: RunLlmops) -> None:
    root = repo_copy_factory(tmp_path)
    cfg = root / "axolotl_configs" / "tiny.yml"
    cfg.write_text(cfg.read_text().replace("lora_r: 16", "lora_r: sixteen"))
    done = run_llmops("release", "tiny", root=root, home=tmp_path / "home")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "tiny.yml: lora_r: Input should be a valid integer" in done.stderr
    assert not (tmp_path / "home" / "runs").exists()  # no MLflow run, no training folder


def test_check_config_reports_every_bad_file_and_exits_2(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        run_llmops: RunLlmops) -> None:
    root = repo_copy_factory(tmp_path)
    cfg = root / "axolotl_configs" / "tiny.yml"
    cfg.write_text(cfg.read_text().replace("lora_r: 16", "lora_r: sixteen"))
    target = root / "deploy" / "staging.yml"
    target.write_text(target.read_text() + "gpu_count_typo: 2\n")
    done = run_llmops("check-config", root=root, home=tmp_path / "home")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "tiny.yml: lora_r: Input should be a valid integer" in done.stderr
    assert "staging.yml" in done.stderr and "gpu_count_typo" in done.stderr
    assert "model support-bot: ok" in done.stdout  # the good ones are still checked
    # A placeholder vLLM digest is a note, not a failure: a fresh fork's MRs pass.
    if DIGEST_PLACEHOLDER in (root / "deploy" / "production.yml").read_text():
        assert "note: kubernetes.vllm_image: not deployable yet" in done.stdout
    assert "2 of 9 configurations are invalid" in done.stderr
    assert not (tmp_path / "home" / "runs").exists()


def test_validate_data_changed_since_validates_the_touched_models_only(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path], run_llmops: RunLlmops) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                       cwd=root, check=True, capture_output=True)
    unchanged = run_llmops("validate-data", "--changed-since", "HEAD", root=root, home=home)
    assert unchanged.returncode == 0, unchanged.stderr[-2000:]
    assert "nothing to validate" in unchanged.stdout
    suite = root / "validation" / "tiny.yml"
    suite.write_text(suite.read_text() + "\n")
    done = run_llmops("validate-data", "--changed-since", "HEAD", root=root, home=home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tiny: changed validation/tiny.yml" in done.stdout
    assert "data gate: tiny" in done.stdout and "support-bot" not in done.stdout


def test_unknown_model_exits_2_and_lists_known_models(tmp_path: Path, repo_root: Path,
                                                      run_llmops: RunLlmops) -> None:
    done = run_llmops("release", "nope", root=repo_root, home=tmp_path / "home")
    assert done.returncode == 2
    assert "unknown model 'nope'; known models: support-bot, tiny" in done.stderr


def test_unknown_candidate_exits_2(tmp_path: Path, repo_root: Path,
                                   run_llmops: RunLlmops) -> None:
    done = run_llmops("evaluate", "tiny", "--candidate", "no-such-run", root=repo_root,
                      home=tmp_path / "home")
    assert done.returncode == 2
    assert "candidate 'no-such-run': no such run" in done.stderr


def test_malformed_golden_line_exits_2_before_anything_runs(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        run_llmops: RunLlmops) -> None:
    root = repo_copy_factory(tmp_path)
    golden = root / "datasets" / "support-bot" / "golden.jsonl"
    golden.write_text(golden.read_text() + '{"question": "unterminated\n')
    done = run_llmops("release", "tiny", root=root, home=tmp_path / "home")
    assert done.returncode == 2
    assert "golden.jsonl:29: not a JSON object" in done.stderr


def test_missing_dataset_exits_2_naming_file_and_key(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        run_llmops: RunLlmops) -> None:
    root = repo_copy_factory(tmp_path)
    (root / "datasets" / "support-bot" / "eval.jsonl").unlink()
    done = run_llmops("release", "tiny", root=root, home=tmp_path / "home")
    assert done.returncode == 2
    assert "axolotl_configs/tiny.yml" in done.stderr and "test_datasets.0.path" in done.stderr


def test_render_kubernetes_manifests_offline_from_the_pin(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path], run_llmops: RunLlmops) -> None:
    import yaml
    from kubernetes_validate import validate

    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    (root / "registry" / "production.yml").write_text(
        "models:\n  tiny: {version: 1.2.0, digest: 'sha256:abc'}\n")
    # A fresh fork has not committed the release key production trusts: nothing to render.
    keyless = run_llmops("deploy", "tiny", "--env", "production", "--render",
                         str(tmp_path / "out"), root=root, home=home)
    assert keyless.returncode == 2 and "deploy/keys/release.pub" in keyless.stderr
    from signing_keys import fresh_public_pem

    release_pub = fresh_public_pem().decode()
    (root / "deploy" / "keys").mkdir(exist_ok=True)
    (root / "deploy" / "keys" / "release.pub").write_text(release_pub)
    done = run_llmops("deploy", "tiny", "--env", "production", "--render", str(tmp_path / "out"),
                      root=root, home=home)
    assert done.returncode == 0, done.stderr[-2000:]
    docs = list(yaml.safe_load_all((tmp_path / "out" / "tiny-production.yaml").read_text()))
    # The fetch's ConfigMap, then the model's Grafana dashboard (kubernetes.grafana_dashboard)
    assert [d["kind"] for d in docs] == ["ConfigMap", "NetworkPolicy", "Deployment", "Service",
                                         "ConfigMap"]
    # The init container trusts the committed key, and only that one.
    assert docs[0]["data"]["trust-0.pem"] == release_pub
    assert json.loads(docs[0]["data"]["trust.json"]) == [
        {"key": "/scripts/trust/0.pem", "chain": [], "identity": None, "issuer": None}]
    for doc in docs:
        validate(doc, "1.30.0", strict=True)
    unpinned = run_llmops("deploy", "tiny", "--env", "staging", "--render", str(tmp_path / "o2"),
                          root=root, home=home)
    assert unpinned.returncode == 2 and "pins no tiny" in unpinned.stderr
    # Without --render, a Kubernetes target is applied with kubectl; with no kubectl on
    # PATH (as here), it says so and where the rendered manifests are. (A target without an
    # endpoint is refused before that: its rollout could not be verified.)
    production = root / "deploy" / "production.yml"
    production.write_text(production.read_text() + "endpoint: http://127.0.0.1:9/v1\n")
    placeholder = run_llmops("deploy", "tiny", "--env", "production", root=root, home=home)
    assert placeholder.returncode == 2 and "placeholder" in placeholder.stderr  # pin it first
    production.write_text(production.read_text().replace(DIGEST_PLACEHOLDER, "ab" * 32))
    no_cluster = run_llmops("deploy", "tiny", "--env", "production", root=root, home=home,
                            extra_env={"PATH": str(Path(sys.executable).parent)})
    assert no_cluster.returncode == 2, no_cluster.stderr[-2000:]
    assert "kubectl not found" in no_cluster.stderr
    assert (home / "manifests" / "production" / "tiny-production.yaml").is_file()
