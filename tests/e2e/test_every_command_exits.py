"""Every command that reads or downloads ends its process: the installed `llmops` entry
point, run as a person runs it, against a version registered in the local MLflow registry
and in GitLab's (the emulator, a test double). Each run has a hang guard: a command that
prints its output and then waits on a thread a library left behind fails here (MLflow's
artifact download leaves a thread pool, whose idle workers only stop at the interpreter's
exit hooks)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gitlab_emulator import GitlabEmulator
from registered_version import SECRET, a_run, served, tags, version_folder
from signing_keys import fresh_public_pem

from llmops.serve.vllm_release import DIGEST_PLACEHOLDER

pytestmark = pytest.mark.e2e

HANG_GUARD_S = 300
MODEL = "tiny"


@dataclass(frozen=True)
class Registered:
    """tiny 0.1.0 in a scratch repository and state dir: its run, registry digest and the
    environment that points the CLI at the registry holding it."""

    root: Path
    home: Path
    run_id: str
    digest: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def emulator() -> Iterator[GitlabEmulator]:
    with GitlabEmulator() as gl:
        yield gl


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, emulator: GitlabEmulator,
               repo_copy_factory: Callable[[Path], Path],
               fresh_home: Callable[[Path], Path]) -> dict[str, Registered]:
    """tiny 0.1.0 registered without a training (placeholder weights), in MLflow's registry
    on the state dir's store and in GitLab's, with a verified local deploy in its history;
    by registry ("mlflow", "gitlab")."""
    import mlflow

    from llmops.registry.base import MlflowRegistry
    from llmops.registry.gitlab import GitlabRegistry

    base = tmp_path_factory.mktemp("exits")
    root, home = repo_copy_factory(base), fresh_home(base)
    for target in ("staging", "production"):  # a pinned vLLM, so that check-config passes
        path = root / "deploy" / f"{target}.yml"
        path.write_text(path.read_text().replace(DIGEST_PLACEHOLDER, "ab" * 32))
    (root / "deploy" / "keys" / "release.pub").write_bytes(fresh_public_pem())  # release key
    uri = f"sqlite:///{home / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"MLFLOW_TRACKING_URI": uri, "LLMOPS_ROOT": str(root),
                           "LLMOPS_HOME": str(home)}.items():
            mp.setenv(key, value)
        run_id = a_run(mlflow.MlflowClient(uri), base / "artifacts", MODEL)
        local = MlflowRegistry().register(MODEL, version_folder(base / "m"), run_id, "0.1.0",
                                          tags(run_id))
        gitlab = GitlabRegistry(emulator.url, "1", emulator.state.api_token,
                                retry_wait_s=0.01).register(
            MODEL, version_folder(base / "g"), run_id, "0.1.0", tags(run_id))
        served(50.0, MODEL)
    env = {"MLFLOW_TRACKING_URI": uri, "GITLAB_TOKEN": SECRET}
    return {"mlflow": Registered(root, home, run_id, local.digest, env),
            "gitlab": Registered(root, home, run_id, gitlab.digest, {
                **env, "LLMOPS_REGISTRY_URI": emulator.tracking_uri,
                "LLMOPS_REGISTRY_TOKEN": emulator.state.api_token})}


def run(run_llmops: Callable[..., subprocess.CompletedProcess[str]], reg: Registered,
        *args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, to its end; a failure if it is still running at the guard."""
    try:
        done = run_llmops(*args, root=reg.root, home=reg.home, timeout=HANG_GUARD_S,
                          extra_env=reg.env, installed=True)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"`llmops {' '.join(args)}` did not exit within {HANG_GUARD_S} s "
                    f"(output so far: {out[-1500:]!r})")
    assert SECRET not in done.stdout + done.stderr
    return done


@pytest.mark.parametrize("registry", ["mlflow", "gitlab"])
def test_lineage_exits(registry: str, registered: dict[str, Registered],
                       run_llmops: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    reg = registered[registry]
    done = run(run_llmops, reg, "lineage", MODEL, "0.1.0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{MODEL} 0.1.0: " in done.stdout and reg.digest in done.stdout
    assert {"mlflow": "MLflow model registry",
            "gitlab": "GitLab model registry"}[registry] in done.stdout
    assert f"training run: {reg.run_id}" in done.stdout
    assert "gate: PASSED (1 rules)" in done.stdout
    assert "deploy serving  50 tokens/s" in done.stdout
    assert "signed by: nobody (unsigned)" not in done.stdout  # registration signed it


@pytest.mark.parametrize("registry", ["mlflow", "gitlab"])
def test_lineage_verify_exits(registry: str, registered: dict[str, Registered],
                              run_llmops: Callable[..., subprocess.CompletedProcess[str]]
                              ) -> None:
    """A version with no provenance statement (registered as before it existed): checked,
    reported, exit 1, and the process ends."""
    done = run(run_llmops, registered[registry], "lineage", MODEL, "0.1.0", "--verify")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "local      accepted: key" in done.stdout
    assert "DIFFERS   provenance.json: the version carries none" in done.stdout


@pytest.mark.parametrize("registry", ["mlflow", "gitlab"])
def test_release_notes_exits(registry: str, registered: dict[str, Registered],
                             run_llmops: Callable[..., subprocess.CompletedProcess[str]],
                             tmp_path: Path) -> None:
    reg = registered[registry]
    done = run(run_llmops, reg, "release-notes", MODEL, "--version", "0.1.0",
               "--out", str(tmp_path / "notes"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"release notes for {MODEL} 0.1.0 in {tmp_path / 'notes'}/" in done.stdout
    notes = (tmp_path / "notes" / "notes.md").read_text()
    assert f"## {MODEL} 0.1.0" in notes and reg.digest in notes and reg.run_id in notes
    assert (tmp_path / "notes" / "README.md").read_text().startswith("# support-bot 0.1.0")
    assert "PASSED" in (tmp_path / "notes" / "gate_report.md").read_text()


@pytest.mark.parametrize("registry", ["mlflow", "gitlab"])
def test_deploy_render_exits(registry: str, registered: dict[str, Registered],
                             run_llmops: Callable[..., subprocess.CompletedProcess[str]],
                             tmp_path: Path) -> None:
    """Not pinned in registry/staging.yml: the digest comes from the registry."""
    reg = registered[registry]
    done = run(run_llmops, reg, "deploy", MODEL, "--env", "staging", "--version", "0.1.0",
               "--render", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    manifests = tmp_path / f"{MODEL}-staging.yaml"
    assert f"manifests to {manifests}" in done.stdout
    assert reg.digest in manifests.read_text()


def test_history_status_plan_and_check_config_exit(
        registered: dict[str, Registered],
        run_llmops: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    reg = registered["mlflow"]
    history = run(run_llmops, reg, "history", MODEL, "--env", "local")
    assert history.returncode == 0, history.stderr[-3000:]
    assert f"deployments of {MODEL} in local" in history.stdout
    assert "deploy" in history.stdout and "serving" in history.stdout
    status = run(run_llmops, reg, "status")
    assert status.returncode == 0, status.stderr[-3000:]
    assert "local deployments" in status.stdout
    plan = run(run_llmops, reg, "plan", MODEL, "--env", "staging")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert f"{MODEL} on staging (1 × 1 × nvidia-a100-80gb" in plan.stdout
    assert "TP=1, PP=1" in plan.stdout
    check = run(run_llmops, reg, "check-config", MODEL)
    assert check.returncode == 0, check.stdout + check.stderr[-3000:]
    assert f"model {MODEL}: ok" in check.stdout
    assert "deploy/staging.yml: ok" in check.stdout and "registry/staging.yml: ok" in \
        check.stdout
