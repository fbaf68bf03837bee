"""No secret leaves the process that needs it: a whole release through GitLab (emulated)
with credentials in the tracking URI, GitLab's token, the registry's token and an unused
secret in the environment, then every file, store, request and line of output searched."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from gitlab_emulator import GitlabEmulator
from mlflow_server import mlflow_server as running_mlflow_server

RunLlmops = Callable[..., subprocess.CompletedProcess[str]]
TRACKING_PASSWORD = "S3cr3t-tracking-pw-4711"
GITLAB_TOKEN = "glpat-S3cr3tGitlabTokenValue01"
UNUSED_SECRET = "wandb-S3cr3t-never-needed-0815"
YAML_SECRET = "S3cr3t-in-the-yaml-0042"


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A real MLflow tracking server (its artifacts on local disk); (url, db, artifacts)."""
    with running_mlflow_server(tmp_path) as found:
        yield found


def files_under(*folders: Path) -> Iterator[Path]:
    for folder in folders:
        if folder.exists():
            yield from (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
def test_a_release_through_gitlab_leaks_no_secret_anywhere(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path], run_llmops: RunLlmops,
        mlflow_server: tuple[str, Path, Path]) -> None:
    import gitlab
    import mlflow

    url, db, artifacts = mlflow_server
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    outputs: list[str] = []

    # A secret-named key in the training YAML is refused, by name, never by value.
    config = root / "axolotl_configs" / "tiny.yml"
    original = config.read_text()
    config.write_text(original + f"wandb_api_key: {YAML_SECRET}\n")
    refused = run_llmops("check-config", root=root, home=home)
    outputs += [refused.stdout, refused.stderr]
    assert refused.returncode == 2 and "wandb_api_key: holds a secret" in refused.stderr
    config.write_text(original)

    with GitlabEmulator(api_token=GITLAB_TOKEN) as gl:
        gl.state.branches["main"]["registry/production.yml"] = "models: {}\n"
        tracking = url.replace("http://", f"http://llmops-ci:{TRACKING_PASSWORD}@")
        env = {"MLFLOW_TRACKING_URI": tracking, "LLMOPS_QUIET_TRAIN": "0",
               "LLMOPS_REGISTRY_URI": gl.tracking_uri, "LLMOPS_REGISTRY_TOKEN": GITLAB_TOKEN,
               "GITLAB_URL": gl.url, "GITLAB_TOKEN": GITLAB_TOKEN, "GITLAB_PROJECT": "1",
               "CI_COMMIT_TAG": "v1.0.0", "WANDB_API_KEY": UNUSED_SECRET,
               "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}

        def run(*args: str) -> str:
            done = run_llmops(*args, root=root, home=home, extra_env=env)
            outputs.extend([done.stdout, done.stderr])
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stdout

        try:
            assert "1.0.0" in run("release", "tiny")
            assert "merge request !1" in run("promote", "tiny", "1.0.0", "--to", "production")
            gitlab.Gitlab(gl.url, private_token=GITLAB_TOKEN).projects.get(1) \
                .mergerequests.get(1).merge()
            run("release-notes", "tiny", "--version", "1.0.0", "--out", str(root / "release"))
        finally:
            run_llmops("stop", "tiny", "--env", "local", root=root, home=home, extra_env=env)
        bodies = list(gl.state.bodies)
        pinned = yaml.safe_load(gl.state.branches["main"]["registry/production.yml"])
    assert pinned["models"]["tiny"]["version"] == "1.0.0"  # the whole path ran

    secrets = [TRACKING_PASSWORD, GITLAB_TOKEN, UNUSED_SECRET, YAML_SECRET]
    leaks: list[str] = []

    def search(where: str, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        leaks.extend(f"{where}: {s}" for s in secrets if s.encode() in raw)

    for path in files_under(home, artifacts, root / "release", root / "registry"):
        search(str(path), path.read_bytes())
    search(str(db), db.read_bytes())  # params, tags, metrics of every run
    client = mlflow.MlflowClient(url)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    for r in runs:
        search(f"run {r.info.run_id} params/tags",
               repr(r.data.params) + repr(r.data.tags) + str(r.info.artifact_uri))
    for n, body in enumerate(bodies):
        search(f"GitLab request body {n}", body)
    for n, text in enumerate(outputs):
        search(f"output {n}", text)
    assert not leaks, leaks
    # The evidence is still there, without its credentials: the searched stores are full.
    notes = (root / "release" / "notes.md").read_text()
    assert f"MLflow run: {url} run " in notes  # the URI without its credentials
    assert any(p.name == "axolotl.resolved.yml" for p in files_under(artifacts))
    assert len(bodies) > 10
