"""`llmops release tiny` through the real flow: Prefect, GX, Axolotl, MLflow, vLLM CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def llmops(
    *args: str, root: Path, home: Path, timeout: float = 1200,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMOPS_ROOT": str(root), "LLMOPS_HOME": str(home),
           "LLMOPS_QUIET_TRAIN": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "llmops.cli.main", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


def fresh_home(tmp_path: Path, tiny_base: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(tiny_base, home / "models" / "tiny-llama")
    return home


def mlflow_client(home: Path):  # type: ignore[no-untyped-def]
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def test_release_tiny_end_to_end(tmp_path: Path, tiny_base: Path) -> None:
    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
    done = llmops("release", "tiny", root=root, home=home)
    try:
        assert done.returncode == 0, done.stderr[-4000:]
        record = json.loads((home / "deployments" / "tiny-local.json").read_text())
        url = f"http://127.0.0.1:{record['port']}/v1"
        assert url in done.stdout and "curl" in done.stdout

        # MLflow: one run with the training history, the evaluation and the evidence.
        client = mlflow_client(home)
        mv = client.get_model_version_by_alias("tiny", "local")
        assert mv.tags["version"] == record["version"] == "0.1.0"
        run = client.get_run(mv.run_id)
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(mv.run_id, "loss")) >= 10
        metrics = run.data.metrics
        assert metrics["candidate.eval_loss"] < metrics["base.eval_loss"] - 1
        assert metrics["candidate.format_template_leak_rate"] == 0.0
        assert metrics["candidate.server_rss_mb"] > 100  # measured on the vLLM eval server
        # Base and candidate are measured apart: tiny's base answers every question with the
        # same non-answer it was pre-trained on; the candidate learned the FAQ's style.
        evals = json.loads((home / "runs" / "tiny" / mv.run_id / "eval_report.json").read_text())
        not_sure = {role: sum("not sure" in a["answer"] for a in evals["answers"]
                              if a["role"] == role) / 28 for role in ("base", "candidate")}
        assert not_sure["base"] >= 0.8 and not_sure["candidate"] <= 0.2, not_sure
        artifacts = {a.path for a in client.list_artifacts(mv.run_id)}
        assert {"config", "data", "eval", "gate", "model"} <= artifacts
        model_files = {Path(a.path).name for a in client.list_artifacts(mv.run_id,
                                                                      "model/0.1.0")}
        assert {"adapter_model.safetensors", "manifest.json", "README.md",
                "gate_report.md"} <= model_files
        # merge_lora: true in tiny.yml: the merged weights are logged by training, shipped
        # in the version (under its manifest), and served as they were registered.
        assert "merged" in artifacts
        merged_files = {Path(a.path).name for a in client.list_artifacts(mv.run_id,
                                                                       "model/0.1.0/merged")}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= merged_files
        version_dir = home / "deployments" / "tiny" / "0.1.0"
        served = json.loads((home / "deployments" / "tiny-local.json").read_text())
        assert served["args"][served["args"].index("--model") + 1] == str(version_dir / "merged")
        manifest = json.loads((version_dir / "manifest.json").read_text())
        assert "merged/model.safetensors" in manifest["files"]
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["train.jsonl", "eval.jsonl"]
        # The compare view's columns, the environment and the machine, in the same run.
        assert run.data.params["axolotl.lora_r"] == "16"
        assert not any("tracking_uri" in k for k in run.data.params)
        assert any(k.startswith("system/cpu") for k in metrics), sorted(metrics)
        assert "environment" in artifacts

        # The endpoint answers through the OpenAI client, with the adapter as the model.
        from openai import OpenAI

        api = OpenAI(base_url=url, api_key="local", max_retries=0)
        assert [m.id for m in api.models.list().data] == ["tiny"]  # merged weights
        reply = api.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Who founded Quillbox?"}],
            max_tokens=12, temperature=0)
        assert reply.choices[0].message.content

        status = llmops("status", root=root, home=home)
        assert "tiny" in status.stdout and "running" in status.stdout

        assert "load test" in done.stdout and "64 clients, 0 errors" in done.stdout
        record = gitlab_path(root, home, mv.run_id, record)
        record = rollback_path(root, home, mv.run_id)
    finally:
        stopped = llmops("stop", "tiny", "--env", "local", root=root, home=home)
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(record["pid"], 0)


def gitlab_path(root: Path, home: Path, run_id: str, first: dict[str, object]) -> \
        dict[str, object]:
    """The same run through GitLab (emulated): register → promote MR → merge → apply →
    deploy from GitLab's registry, replacing the running server. Returns the new record."""
    import gitlab
    import yaml

    sys.path.insert(0, str(REPO / "tests"))
    from gitlab_emulator import GitlabEmulator

    with GitlabEmulator() as gl:
        gl.state.branches["main"]["registry/production.yml"] = "models: {}\n"
        token = gl.state.api_token
        # Runs stay tracked in the local store; versions go to GitLab's registry.
        env = {"LLMOPS_REGISTRY_URI": gl.tracking_uri, "LLMOPS_REGISTRY_TOKEN": token,
               "GITLAB_URL": gl.url, "GITLAB_TOKEN": token, "GITLAB_PROJECT": "1"}

        def run(*args: str) -> str:
            done = llmops(*args, root=root, home=home, extra_env=env)
            assert done.returncode == 0, done.stderr[-3000:]
            assert token not in done.stdout + done.stderr
            return done.stdout

        assert "registered tiny 1.0.0" in run("register", "tiny", "--run", run_id,
                                              "--version", "1.0.0")
        assert "merge request !1" in run("promote", "tiny", "1.0.0", "--to", "production")
        project = gitlab.Gitlab(gl.url, private_token=token).projects.get(1)
        project.mergerequests.get(1).merge()
        pins = project.files.raw(file_path="registry/production.yml", ref="main")
        assert yaml.safe_load(pins)["models"]["tiny"]["version"] == "1.0.0"
        (root / "registry" / "production.yml").write_bytes(pins)  # CI checks out main
        assert "production: tiny 1.0.0" in run("apply-promotion", "--env", "production")
        # Champion vs challenger: production (pinned, fetched from GitLab) is measured on
        # the same inputs; here it is the same adapter, so it neither regresses nor gains.
        report = run("evaluate", "tiny", "--candidate", run_id)
        assert "regression vs production +0" in report
        gate = json.loads((home / "runs" / "tiny" / run_id / "gate_report.json").read_text())
        loss = next(r for r in gate["rules"] if r["metric"] == "eval_loss")
        assert loss["production"] == pytest.approx(loss["candidate"])
        assert "deployed tiny 1.0.0" in run("deploy", "tiny", "--env", "local",
                                            "--version", "1.0.0")
        assert gl.duplicate_files() == 0
    record = json.loads((home / "deployments" / "tiny-local.json").read_text())
    assert record["version"] == "1.0.0" and record["pid"] != first["pid"]
    with pytest.raises(ProcessLookupError):  # the previous server was replaced
        os.kill(int(first["pid"]), 0)
    assert not Path(str(first["sockets_dir"])).exists()  # and its temp folder removed
    assert Path(str(record["sockets_dir"])).is_dir()
    # No token in any MLflow param or tag of the run.
    run_data = mlflow_client(home).get_run(run_id).data
    values = [*run_data.params.values(), *run_data.tags.values()]
    assert not any(token in v for v in values)
    return record


def answers(record: dict[str, object]) -> str:
    from openai import OpenAI

    api = OpenAI(base_url=f"http://127.0.0.1:{record['port']}/v1", api_key="local",
                 max_retries=0)
    reply = api.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What port does sync use?"}],
        max_tokens=8, temperature=0)
    return reply.choices[0].message.content or ""


def rollback_path(root: Path, home: Path, run_id: str) -> dict[str, object]:
    """1.0.0 serves. A corrupted 0.2.0 is refused and 1.0.0 keeps serving; `rollback`
    returns to 0.1.0 (verified, with its recorded arguments); then, with 0.1.0's server
    dead, a deployment that never becomes healthy restarts 0.1.0 from its record."""
    import signal

    def record() -> dict[str, object]:
        return dict(json.loads((home / "deployments" / "tiny-local.json").read_text()))

    serving = record()
    assert serving["version"] == "1.0.0" and answers(serving)
    registered = llmops("register", "tiny", "--run", run_id, "--version", "0.2.0",
                        root=root, home=home)
    assert registered.returncode == 0, registered.stderr[-2000:]
    mv = mlflow_client(home).get_model_version("tiny", "2")
    [weights] = (home / "mlartifacts").rglob(f"{mv.run_id}/artifacts/model/0.2.0/"
                                             "adapter_model.safetensors")
    with open(weights, "r+b") as fh:  # flip one byte of the registered adapter
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 0xFF]))
    broken = llmops("deploy", "tiny", "--version", "0.2.0", root=root, home=home)
    assert broken.returncode == 1, broken.stderr[-2000:]
    assert "sha256 mismatch" in broken.stderr and "tiny 1.0.0 still serves" in broken.stderr
    assert record()["pid"] == serving["pid"] and answers(serving)

    back = llmops("rollback", "tiny", root=root, home=home)
    assert back.returncode == 0, back.stderr[-3000:]
    assert "1.0.0 → 0.1.0" in back.stdout + back.stderr and "0 errors" in back.stdout
    restored = record()
    assert restored["version"] == "0.1.0" and answers(restored)
    assert mlflow_client(home).get_model_version_by_alias("tiny", "local").tags["version"] \
        == "0.1.0"

    os.killpg(int(restored["pid"]), signal.SIGKILL)  # the server dies
    local = root / "deploy" / "local.yml"
    local.write_text(local.read_text() + "    extra_args: [--no-such-vllm-flag]\n")
    never = llmops("deploy", "tiny", "--version", "0.1.0", root=root, home=home)
    assert never.returncode == 1, never.stderr[-2000:]
    assert "before becoming healthy" in never.stderr
    assert "rolled back: tiny 0.1.0 restarted at" in never.stderr
    again = record()
    assert again["version"] == "0.1.0" and again["pid"] != restored["pid"] and answers(again)
    assert again["args"] == [*restored["args"][:restored["args"].index("--port") + 1],
                             str(again["port"]),
                             *restored["args"][restored["args"].index("--port") + 2:]]

    history = llmops("history", "tiny", root=root, home=home)
    events = [json.loads(x) for x in (home / "deployments" / "tiny-local.history.jsonl")
              .read_text().splitlines()]
    assert [(e["action"], e["version"], e["result"]) for e in events] == [
        ("deploy", "0.1.0", "serving"), ("deploy", "1.0.0", "serving"),
        ("deploy", "0.2.0", "failed"), ("rollback", "1.0.0", "restored"),
        ("rollback", "0.1.0", "serving"), ("deploy", "0.1.0", "failed"),
        ("rollback", "0.1.0", "restored")]
    assert history.returncode == 0 and "restored" in history.stdout
    return again


def copy_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for folder in ("axolotl_configs", "validation", "deploy", "registry", "datasets", "flows"):
        shutil.copytree(REPO / folder, root / folder)
    return root


def test_failed_gate_registers_nothing_and_starts_no_server(tmp_path: Path,
                                                            tiny_base: Path) -> None:
    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
    gates = root / "validation" / "tiny.yml"
    gates.write_text(gates.read_text().replace("min_gain_over_base: 1.0",
                                               "min_gain_over_base: 100.0"))
    done = llmops("release", "tiny", root=root, home=home)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "failed its release gate" in done.stderr
    assert "FAILED: eval_loss: gain over base" in done.stderr
    client = mlflow_client(home)
    assert client.search_model_versions("name='tiny'") == []
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert runs[0].data.tags["gate.passed"] == "false"
    assert not list((home / "deployments").glob("*.json")) if (home / "deployments").exists() \
        else True


def test_bad_data_stops_before_training_and_names_the_lines(tmp_path: Path,
                                                           tiny_base: Path) -> None:
    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
    train = root / "datasets" / "support-bot" / "train.jsonl"
    lines = train.read_text().splitlines()
    lines[2] = json.dumps({"messages": [{"role": "robot", "content": "beep"},
                                        {"role": "assistant", "content": "ok"}]})
    lines[4] = json.dumps({"messages": [{"role": "user", "content": "   "},
                                        {"role": "assistant", "content": "ok"}]})
    lines[6] = "{not json"
    train.write_text("\n".join(lines) + "\n")
    done = llmops("release", "tiny", root=root, home=home)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "data validation failed" in done.stderr
    assert "train.jsonl: roles: 1 failing" in done.stderr and "lines 3\n" in done.stderr
    assert "train.jsonl: content: 1 failing" in done.stderr and "lines 5\n" in done.stderr
    assert "train.jsonl: parse: 1 failing" in done.stderr and "lines 7\n" in done.stderr
    assert not list(home.rglob("train.log"))  # no training started


def test_bad_training_config_exits_2_naming_the_key_before_any_run(tmp_path: Path) -> None:
    root = copy_repo(tmp_path)
    cfg = root / "axolotl_configs" / "tiny.yml"
    cfg.write_text(cfg.read_text().replace("lora_r: 16", "lora_r: sixteen"))
    done = llmops("release", "tiny", root=root, home=tmp_path / "home")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "tiny.yml: lora_r: Input should be a valid integer" in done.stderr
    assert not (tmp_path / "home" / "runs").exists()  # no MLflow run, no training folder


def test_check_config_reports_every_bad_file_and_exits_2(tmp_path: Path) -> None:
    root = copy_repo(tmp_path)
    cfg = root / "axolotl_configs" / "tiny.yml"
    cfg.write_text(cfg.read_text().replace("lora_r: 16", "lora_r: sixteen"))
    target = root / "deploy" / "staging.yml"
    target.write_text(target.read_text() + "gpu_count_typo: 2\n")
    done = llmops("check-config", root=root, home=tmp_path / "home")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "tiny.yml: lora_r: Input should be a valid integer" in done.stderr
    assert "staging.yml" in done.stderr and "gpu_count_typo" in done.stderr
    assert "model support-bot: ok" in done.stdout  # the good ones are still checked
    assert "2 of 9 configurations are invalid" in done.stderr
    assert not (tmp_path / "home" / "runs").exists()


def test_validate_data_changed_since_validates_the_touched_models_only(
        tmp_path: Path, tiny_base: Path) -> None:
    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                       cwd=root, check=True, capture_output=True)
    unchanged = llmops("validate-data", "--changed-since", "HEAD", root=root, home=home)
    assert unchanged.returncode == 0, unchanged.stderr[-2000:]
    assert "nothing to validate" in unchanged.stdout
    suite = root / "validation" / "tiny.yml"
    suite.write_text(suite.read_text() + "\n")
    done = llmops("validate-data", "--changed-since", "HEAD", root=root, home=home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tiny: changed validation/tiny.yml" in done.stdout
    assert "data gate: tiny" in done.stdout and "support-bot" not in done.stdout


def test_unknown_model_exits_2_and_lists_known_models(tmp_path: Path) -> None:
    done = llmops("release", "nope", root=REPO, home=tmp_path / "home")
    assert done.returncode == 2
    assert "unknown model 'nope'; known models: support-bot, tiny" in done.stderr


def test_unknown_candidate_exits_2(tmp_path: Path) -> None:
    done = llmops("evaluate", "tiny", "--candidate", "no-such-run", root=REPO,
                  home=tmp_path / "home")
    assert done.returncode == 2
    assert "candidate 'no-such-run': no such run" in done.stderr


def test_malformed_golden_line_exits_2_before_anything_runs(tmp_path: Path) -> None:
    root = copy_repo(tmp_path)
    golden = root / "datasets" / "support-bot" / "golden.jsonl"
    golden.write_text(golden.read_text() + '{"question": "unterminated\n')
    done = llmops("release", "tiny", root=root, home=tmp_path / "home")
    assert done.returncode == 2
    assert "golden.jsonl:29: not a JSON object" in done.stderr


def test_missing_dataset_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    root = copy_repo(tmp_path)
    (root / "datasets" / "support-bot" / "eval.jsonl").unlink()
    done = llmops("release", "tiny", root=root, home=tmp_path / "home")
    assert done.returncode == 2
    assert "axolotl_configs/tiny.yml" in done.stderr and "test_datasets.0.path" in done.stderr


def test_render_kubernetes_manifests_offline_from_the_pin(tmp_path: Path,
                                                          tiny_base: Path) -> None:
    import yaml
    from kubernetes_validate import validate

    root, home = copy_repo(tmp_path), fresh_home(tmp_path, tiny_base)
    (root / "registry" / "production.yml").write_text(
        "models:\n  tiny: {version: 1.2.0, digest: 'sha256:abc'}\n")
    done = llmops("deploy", "tiny", "--env", "production", "--render", str(tmp_path / "out"),
                  root=root, home=home)
    assert done.returncode == 0, done.stderr[-2000:]
    docs = list(yaml.safe_load_all((tmp_path / "out" / "tiny-production.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service"]
    for doc in docs:
        validate(doc, "1.30.0", strict=True)
    unpinned = llmops("deploy", "tiny", "--env", "staging", "--render", str(tmp_path / "o2"),
                      root=root, home=home)
    assert unpinned.returncode == 2 and "pins no tiny" in unpinned.stderr
    # Without --render, a Kubernetes target is applied with kubectl; with no kubectl on
    # PATH (as here), it says so and where the rendered manifests are.
    no_cluster = llmops("deploy", "tiny", "--env", "production", root=root, home=home,
                        extra_env={"PATH": str(Path(sys.executable).parent)})
    assert no_cluster.returncode == 2, no_cluster.stderr[-2000:]
    assert "kubectl not found" in no_cluster.stderr
    assert (home / "manifests" / "production" / "tiny-production.yaml").is_file()
