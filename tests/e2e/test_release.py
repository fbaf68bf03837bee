"""`llmops release tiny` through the real flow: Prefect, GX, Axolotl, MLflow, vLLM CPU.

The release itself runs once, in the module-scoped `release` fixture; the steps of this
module (`test_release_*`, one concern each) check it, then take it through GitLab and
through rollbacks, in order; its server is stopped at the module's teardown. What `llmops`
refuses before a release gets anywhere is in test_release_refusals, which runs beside this
module on another worker (`make test`: one file per worker at a time)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
from gitlab_emulator import GitlabEmulator

pytestmark = pytest.mark.e2e

RunLlmops = Callable[..., subprocess.CompletedProcess[str]]


# The release, once, and its steps: one concern each. They share its server, and the GitLab
# and rollback steps change what that server is, so they run last and in this order.


@dataclass
class Release:
    """`llmops release tiny` as it ran: its folders, its output and the deployment record
    it wrote (tiny 0.1.0 serving), kept as written even after later steps replace it."""

    root: Path
    home: Path
    done: subprocess.CompletedProcess[str]
    first: dict[str, Any]
    mlflow_client: Callable[[Path], Any]

    @property
    def url(self) -> str:
        """The model's stable address (its router), where clients call it."""
        return f"http://{self.first['address']}/v1"

    @property
    def worker_url(self) -> str:
        """The release's own vLLM worker behind the router."""
        return f"http://127.0.0.1:{self.first['port']}/v1"

    @cached_property
    def run_id(self) -> str:
        """The run the release registered as 0.1.0 (read once, before any step deploys
        another version)."""
        return str(self.mlflow_client(self.home).get_model_version_by_alias("tiny", "local")
                   .run_id)

    @property
    def api_key(self) -> str:
        """The key local servers require (`.llmops/api-key`, mode 0600)."""
        path = self.home / "api-key"
        assert path.stat().st_mode & 0o777 == 0o600
        return path.read_text().strip()

    def serving(self) -> dict[str, Any]:
        """The deployment record now (the steps replace the server)."""
        return dict(json.loads((self.home / "deployments" / "tiny-local.json").read_text()))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory,
            repo_copy_factory: Callable[[Path], Path], fresh_home: Callable[[Path], Path],
            run_llmops: RunLlmops, mlflow_client: Callable[[Path], Any]) -> Iterator[Release]:
    """Run `llmops release tiny` once for this module's steps. At the module's end,
    `llmops stop` stops whatever version then serves, and its process is gone."""
    base = tmp_path_factory.mktemp("release-tiny")
    root, home = repo_copy_factory(base), fresh_home(base)
    # Tiny trains in a few seconds: sample system metrics each second (5 s by default), so
    # that the run records them however fast this machine is.
    done = run_llmops("release", "tiny", root=root, home=home,
                      extra_env={"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"})
    record_path = home / "deployments" / "tiny-local.json"
    try:
        assert done.returncode == 0, done.stderr[-4000:]
        yield Release(root, home, done, json.loads(record_path.read_text()), mlflow_client)
    finally:
        last = json.loads(record_path.read_text()) if record_path.is_file() else None
        stopped = run_llmops("stop", "tiny", "--env", "local", root=root, home=home)
    assert stopped.returncode == 0, stopped.stderr
    assert last is not None
    with pytest.raises(ProcessLookupError):
        os.kill(last["pid"], 0)


def test_release_prints_the_endpoint_and_how_to_call_it(release: Release) -> None:
    assert release.url in release.done.stdout and "curl" in release.done.stdout


def test_release_serves_the_server_its_gate_evaluated(release: Release) -> None:
    """One vLLM start fewer: the deploy serves the evaluation's candidate server (the same
    weights, arguments and key), and records it as a start of the version's files."""
    said = release.done.stdout + release.done.stderr
    assert "tiny 0.1.0: serving the server the gate evaluated" in said, said[-3000:]
    assert Path(release.first["log_path"]).parent.name.startswith("tiny-eval-")
    workers = list((release.home / "deployments").glob("tiny-local-*"))
    assert workers == [], workers  # no second server was started for the deploy


def test_release_records_one_mlflow_run_with_training_evaluation_and_evidence(
        release: Release, mlflow_client: Callable[[Path], Any]) -> None:
    """MLflow: one run with the training history, the evaluation and the evidence."""
    client = mlflow_client(release.home)
    mv = client.get_model_version_by_alias("tiny", "local")
    assert mv.tags["version"] == release.first["version"] == "0.1.0"
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(mv.run_id, "loss")) >= 10
    metrics = run.data.metrics
    assert metrics["candidate.eval_loss"] < metrics["base.eval_loss"] - 1
    assert metrics["candidate.format_template_leak_rate"] == 0.0
    assert metrics["candidate.server_rss_mb"] > 100  # measured on the vLLM eval server
    # Base and candidate are measured apart: tiny's base answers every question with the
    # same non-answer it was pre-trained on; the candidate learned the FAQ's style.
    evals = json.loads((release.home / "runs" / "tiny" / mv.run_id / "eval_report.json")
                       .read_text())
    not_sure = {role: sum("not sure" in a["answer"] for a in evals["answers"]
                          if a["role"] == role) / 28 for role in ("base", "candidate")}
    assert not_sure["base"] >= 0.8 and not_sure["candidate"] <= 0.2, not_sure
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["train.jsonl", "eval.jsonl"]
    # The compare view's columns, the environment and the machine, in the same run.
    assert run.data.params["axolotl.lora_r"] == "16"
    assert not any("tracking_uri" in k for k in run.data.params)
    assert any(k.startswith("system/cpu") for k in metrics), sorted(metrics)


def test_release_logs_ships_and_serves_the_merged_weights(
        release: Release, mlflow_client: Callable[[Path], Any]) -> None:
    """The run's artifacts, the version's files, and the merged weights: merge_lora: true
    in tiny.yml, so they are logged by training, shipped in the version (under its
    manifest), and served as they were registered (by the release's own deployment)."""
    client = mlflow_client(release.home)
    artifacts = {a.path for a in client.list_artifacts(release.run_id)}
    assert {"config", "data", "eval", "gate", "model"} <= artifacts
    model_files = {Path(a.path).name for a in client.list_artifacts(release.run_id,
                                                                  "model/0.1.0")}
    assert {"adapter_model.safetensors", "manifest.json", "README.md",
            "gate_report.md"} <= model_files
    assert "merged" in artifacts
    merged_files = {Path(a.path).name for a in client.list_artifacts(release.run_id,
                                                                   "model/0.1.0/merged")}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= merged_files
    version_dir = release.home / "deployments" / "tiny" / "0.1.0"
    served = release.first
    assert served["args"][served["args"].index("--model") + 1] == str(version_dir / "merged")
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert "merged/model.safetensors" in manifest["files"]
    # Served as shipped: nothing rebuilt or added among the version's (signed) files.
    from llmops.digests import verify_manifest

    verify_manifest(version_dir, client.get_model_version("tiny", "1").tags["digest"])
    assert "environment" in artifacts


def test_release_endpoint_answers_through_the_openai_client(release: Release) -> None:
    """The endpoint answers through the OpenAI client, with the merged weights as the model.
    Needs the release's own server: it runs before the GitLab step replaces it."""
    from openai import OpenAI

    api = OpenAI(base_url=release.url, api_key=release.api_key, max_retries=0)
    assert [m.id for m in api.models.list().data] == ["tiny"]  # merged weights
    reply = api.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Who founded Quillbox?"}],
        max_tokens=12, temperature=0)
    assert reply.choices[0].message.content


def test_release_endpoint_refuses_every_route_without_its_api_key(release: Release) -> None:
    """Every route the served vLLM exposes (its OpenAPI listing, read with the key) answers
    401 without the key and with a wrong one: vLLM's own check guards /v1... only, and
    /invocations answered a chat completion without a key. /health stays open for probes."""
    import httpx

    worker, stable = release.worker_url.removesuffix("/v1"), release.url.removesuffix("/v1")
    good = {"Authorization": f"Bearer {release.api_key}"}
    spec = httpx.get(f"{worker}/openapi.json", headers=good, timeout=30)
    assert spec.status_code == 200
    routes = [(method.upper(), path.replace("{", "").replace("}", ""))
              for path, ops in spec.json()["paths"].items() for method in ops]
    routes += [("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json"),
               ("GET", "/metrics"), ("POST", "/invocations"), ("GET", "/not-a-route")]
    assert ("POST", "/tokenize") in routes and ("POST", "/invocations") in routes
    # The router's own routes, at the stable address: there /health needs the key too.
    router_routes = [("GET", "/health"), ("GET", "/list_workers"), ("GET", "/get_loads"),
                     ("GET", "/readiness"), ("GET", "/liveness"), ("GET", "/get_model_info"),
                     ("POST", "/add_worker?url=http://127.0.0.1:9"), ("POST", "/flush_cache"),
                     ("POST", f"/remove_worker?url=http://127.0.0.1:{release.first['port']}")]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1, "prompt": "hi", "input": "hi"}
    opened = []
    for root, paths in ((worker, routes), (stable, routes + router_routes)):
        for method, path in sorted(set(paths)):
            if path == "/health" and root == worker:
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "wrong"}):
                answer = httpx.request(method, root + path, headers=headers, json=body,
                                       timeout=30)
                if answer.status_code != 401:
                    opened.append(f"{root}: {method} {path} {headers}: {answer.status_code}")
    assert opened == []
    assert httpx.get(f"{worker}/health").status_code == 200
    assert httpx.get(f"{stable}/health", headers=good).status_code == 200
    assert httpx.get(f"{worker}/metrics", headers=good).status_code == 200
    assert "Authorization: Bearer $(cat" in release.done.stdout  # the curl example


def test_release_status_shows_it_running_and_the_load_test_passed(
        release: Release, run_llmops: RunLlmops) -> None:
    status = run_llmops("status", root=release.root, home=release.home)
    assert "tiny" in status.stdout and "running" in status.stdout
    assert "load test" in release.done.stdout and "64 clients, 0 errors" in release.done.stdout


def test_release_evaluated_again_starts_no_evaluation_server(
        release: Release, run_llmops: RunLlmops) -> None:
    """The released version evaluated again: the base model, the adapter and the merged
    candidate answered every golden and probe prompt in the release (the answer cache,
    `.llmops/cache/answers/`), so no evaluation server starts and the gate decides again."""
    serving = Path(release.serving()["log_path"]).parent.name  # the merged one, deployed

    def eval_servers() -> dict[str, int]:  # a new start is a new folder, or a log written
        return {p.name: 0 if p.name == serving else (p / "server.log").stat().st_mtime_ns
                for p in (release.home / "deployments").glob("tiny-eval-*")}

    before = eval_servers()
    assert len(before) == 2  # the release's: the base model with the adapter, the merged
    again = run_llmops("evaluate", "tiny", "--candidate", "0.1.0", root=release.root,
                       home=release.home)
    assert again.returncode == 0, again.stderr[-4000:]
    assert eval_servers() == before
    assert "starting vLLM" not in again.stdout + again.stderr
    assert "Gate report: tiny — PASSED" in again.stdout


def test_release_then_gitlab_registers_promotes_and_deploys_from_its_registry(
        release: Release, run_llmops: RunLlmops,
        mlflow_client: Callable[[Path], Any]) -> None:
    """The same run through GitLab (emulated): register → promote MR → merge → apply →
    deploy from GitLab's registry, replacing the release's running server (0.1.0) with
    1.0.0. Depends on the release only; it changes what serves, so the steps that need
    the release's own server come before it."""
    import gitlab
    import yaml

    root, home, run_id, first = release.root, release.home, release.run_id, release.first
    with GitlabEmulator() as gl:
        gl.state.branches["main"]["registry/production.yml"] = "models: {}\n"
        token = gl.state.api_token
        # Runs stay tracked in the local store; versions go to GitLab's registry.
        env = {"LLMOPS_REGISTRY_URI": gl.tracking_uri, "LLMOPS_REGISTRY_TOKEN": token,
               "GITLAB_URL": gl.url, "GITLAB_TOKEN": token, "GITLAB_PROJECT": "1"}

        def run(*args: str) -> str:
            done = run_llmops(*args, root=root, home=home, extra_env=env)
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
        # Clients of the stable address see the swap as nothing: not one failed request.
        with SteadyClient(release.url, release.api_key) as steady:
            assert "deployed tiny 1.0.0" in run("deploy", "tiny", "--env", "local",
                                                "--version", "1.0.0")
        assert gl.duplicate_files() == 0
    assert steady.failures == [] and len(steady.latencies) >= 10, steady.failures[:5]
    record = release.serving()
    assert record["address"] == first["address"]  # the same address, another worker
    assert record["version"] == "1.0.0" and record["pid"] != first["pid"]
    with pytest.raises(ProcessLookupError):  # the previous server was replaced
        os.kill(int(first["pid"]), 0)
    assert not Path(str(first["sockets_dir"])).exists()  # and its temp folder removed
    assert Path(str(record["sockets_dir"])).is_dir()
    # No token in any MLflow param or tag of the run.
    run_data = mlflow_client(home).get_run(run_id).data
    values = [*run_data.params.values(), *run_data.tags.values()]
    assert not any(token in v for v in values)


class SteadyClient:
    """A client of the stable address that keeps asking, one short chat after another,
    while a version is swapped behind it: every failure and every latency, kept."""

    def __init__(self, url: str, api_key: str) -> None:
        import threading

        self.url, self.api_key = url, api_key
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        import time

        import httpx

        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    got = client.post(f"{self.url}/chat/completions",
                                      headers={"Authorization": f"Bearer {self.api_key}"},
                                      json={"model": "tiny", "max_tokens": 4,
                                            "messages": [{"role": "user", "content": "hi"}]})
                    if got.status_code != 200:
                        self.failures.append(f"{got.status_code}: {got.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.2)  # two cores: leave the swap its CPU

    def __enter__(self) -> SteadyClient:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(180)


def answers(record: dict[str, Any], api_key: str, stable: bool = False) -> str:
    """The answer of the record's worker (or, `stable`, of its router's address)."""
    from openai import OpenAI

    url = f"http://{record['address']}/v1" if stable else f"http://127.0.0.1:{record['port']}/v1"
    api = OpenAI(base_url=url, api_key=api_key, max_retries=0)
    reply = api.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "What port does sync use?"}],
        max_tokens=8, temperature=0)
    return reply.choices[0].message.content or ""


def test_release_then_rollback_refuses_a_corrupt_version_and_restores_the_last_good(
        release: Release, run_llmops: RunLlmops,
        mlflow_client: Callable[[Path], Any]) -> None:
    """1.0.0 serves. A corrupted 0.2.0 is refused and 1.0.0 keeps serving; `rollback`
    returns to 0.1.0 (verified, with its recorded arguments); then, with 0.1.0's server
    dead, a deployment that never becomes healthy restarts 0.1.0 from its record.

    Depends on the GitLab step (the test above): it starts from the 1.0.0 that step
    deployed, and the deployment history it checks begins with the release's 0.1.0 and
    that step's 1.0.0."""
    import signal

    root, home, run_id = release.root, release.home, release.run_id
    serving = release.serving()
    assert serving["version"] == "1.0.0" and answers(serving, release.api_key)
    registered = run_llmops("register", "tiny", "--run", run_id, "--version", "0.2.0",
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
    broken = run_llmops("deploy", "tiny", "--version", "0.2.0", root=root, home=home)
    assert broken.returncode == 1, broken.stderr[-2000:]
    assert "sha256 mismatch" in broken.stderr and "tiny 1.0.0 still serves" in broken.stderr
    assert release.serving()["pid"] == serving["pid"] and answers(serving, release.api_key)

    with SteadyClient(release.url, release.api_key) as steady:  # the swap backwards
        back = run_llmops("rollback", "tiny", root=root, home=home)
    assert back.returncode == 0, back.stderr[-3000:]
    assert steady.failures == [] and len(steady.latencies) >= 10, steady.failures[:5]
    assert "1.0.0 → 0.1.0" in back.stdout + back.stderr and "0 errors" in back.stdout
    restored = release.serving()
    assert restored["version"] == "0.1.0" and answers(restored, release.api_key)
    assert mlflow_client(home).get_model_version_by_alias("tiny", "local").tags["version"] \
        == "0.1.0"

    os.killpg(int(restored["pid"]), signal.SIGKILL)  # the server dies
    local = root / "deploy" / "local.yml"  # tiny's block is not the file's last one
    local.write_text(local.read_text().replace(
        "\n  tiny:\n", "\n  tiny:\n    extra_args: [--scheduling-policy, no-such-policy]\n", 1))
    assert "no-such-policy" in local.read_text()  # an allowed option vLLM's parser refuses
    never = run_llmops("deploy", "tiny", "--version", "0.1.0", root=root, home=home)
    assert never.returncode == 1, never.stderr[-2000:]
    assert "before becoming healthy" in never.stderr
    assert "rolled back: tiny 0.1.0 restarted at" in never.stderr
    again = release.serving()
    assert again["version"] == "0.1.0" and again["pid"] != restored["pid"]
    assert answers(again, release.api_key)
    # The restarted worker took the dead one's place behind the same address.
    assert again["address"] == release.first["address"] and answers(again, release.api_key,
                                                                   stable=True)
    assert again["args"] == [*restored["args"][:restored["args"].index("--port") + 1],
                             str(again["port"]),
                             *restored["args"][restored["args"].index("--port") + 2:]]

    history = run_llmops("history", "tiny", root=root, home=home)
    events = [json.loads(x) for x in (home / "deployments" / "tiny-local.history.jsonl")
              .read_text().splitlines()]
    assert [(e["action"], e["version"], e["result"]) for e in events] == [
        ("deploy", "0.1.0", "serving"), ("deploy", "1.0.0", "serving"),
        ("deploy", "0.2.0", "failed"), ("rollback", "1.0.0", "restored"),
        ("rollback", "0.1.0", "serving"), ("deploy", "0.1.0", "failed"),
        ("rollback", "0.1.0", "restored")]
    assert history.returncode == 0 and "restored" in history.stdout
