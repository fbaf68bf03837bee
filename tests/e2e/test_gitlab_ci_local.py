"""The tag pipeline of .gitlab-ci.yml, run for real by gitlab-ci-local (shell executor) on
CPU: tiny model, the local MLflow store, and the GitLab emulator as the model registry; its
production job opens the promotion merge request, and the default branch's apply-promotion
deploys the merged pin. Then its staging jobs again with STAGING_ENV a Kubernetes target on
the simulated cluster, and `rollback-production` against that cluster from a job that keeps
no history of the deploys before it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gitlab
import pytest
import yaml
from gitlab_emulator import GitlabEmulator

from llmops.signatures import ensure_local_key

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
GCL = Path(".tools") / "node_modules" / ".bin" / "gitlab-ci-local"  # in the repository
TAG_JOBS = ["validate", "train", "evaluate", "register", "deploy-staging", "verify-staging",
            "promote-production", "gitlab-release"]


def scratch_clone(tmp_path: Path, repo: Path) -> Path:
    """A clone of this commit whose origin looks like GitLab, with the environments linked."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    subprocess.run(["git", "remote", "set-url", "origin",
                    "https://gitlab.example.com/ml/llmops.git"], cwd=clone, check=True)
    for venv in (".venv", ".venv-serve"):
        (clone / venv).symlink_to(repo / venv)
    return clone


def k8s_staging_yml(endpoint: str) -> str:
    """A Kubernetes staging target on the simulated cluster (tests/k8s_sim)."""
    return yaml.safe_dump({
        "target": "kubernetes",
        "gpu": {"gpu_type": "nvidia-a100-80gb", "gpu_memory_gib": 80, "gpus_per_node": 1,
                "max_model_len": 512, "max_num_seqs": 4, "serve": "lora"},
        "registry_api": "http://gitlab.invalid/api/v4/projects/1",
        "endpoint": endpoint,
        "kubernetes": {"vllm_image": "vllm/vllm-openai:v0.32.0@sha256:" + "ab" * 32,
                       "fetch_image": "registry.example/llmops/pipeline@sha256:" + "cd" * 32,
                       "namespace": "ci-staging", "progress_deadline_s": 15},
        "verify": {"golden_prompts": 2, "min_golden_accuracy": None,
                   "load": {"concurrency": 2, "duration_s": 2, "min_requests": 2,
                            "max_tokens": 8}},
    })


def commit(clone: Path, path: str, message: str) -> None:
    subprocess.run(["git", "add", path], cwd=clone, check=True)
    subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com",
                    "commit", "-qm", message], cwd=clone, check=True)


def run_id_of(version: Any) -> str:
    tags = version.tags
    pairs = tags.items() if isinstance(tags, dict) else ((t["key"], t["value"]) for t in tags)
    return next(str(v) for k, v in pairs if k == "run_id")


def test_tag_pipeline_runs_every_job(
        tmp_path: Path, repo_root: Path, fresh_home: Callable[[Path], Path],
        run_llmops: Callable[..., subprocess.CompletedProcess[str]], k8s_cluster: Any) -> None:
    gcl = repo_root / GCL
    if not gcl.exists():
        pytest.fail("gitlab-ci-local is not installed: run `bash scripts/setup-ci-tools.sh`")
    clone, home = scratch_clone(tmp_path, repo_root), fresh_home(tmp_path)
    with GitlabEmulator() as gl:
        token = gl.state.api_token
        variables = {
            "CI_COMMIT_TAG": "v0.1.0", "MODEL": "tiny", "STAGING_ENV": "local",
            "PRODUCTION_ENV": "local", "LLMOPS_HOME": str(home), "LLMOPS_QUIET_TRAIN": "1",
            "LLMOPS_USE_EXISTING_VENVS": "1", "LLMOPS_REGISTRY_URI": gl.tracking_uri,
            "LLMOPS_REGISTRY_TOKEN": token, "GITLAB_URL": gl.url, "GITLAB_TOKEN": token,
            "GITLAB_PROJECT": "1",
            # The protected File variable the register job signs with; the targets trust
            # its public half (`key: local`, the same pair).
            "LLMOPS_SIGNING_KEY": str(ensure_local_key(home)),
        }
        cmd = [str(gcl), "--force-shell-executor", "--unset-variable", "CI_COMMIT_BRANCH",
               "--manual", "promote-production", "--ignore-predefined-vars", "CI_COMMIT_TAG"]
        for key, value in variables.items():
            cmd += ["--variable", f"{key}={value}"]
        env = {k: v for k, v in os.environ.items()
               if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "LLMOPS_ROOT")}
        try:
            done = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True,
                                  timeout=3000)
            output = done.stdout + done.stderr
            (tmp_path / "pipeline.log").write_text(output)
            assert done.returncode == 0, output[-6000:]
            for job in TAG_JOBS:
                assert f"{job} finished in" in output or f"PASS  {job}" in output, job
            assert "lint-and-test" not in output  # not a merge-request or branch pipeline
            assert token not in output  # never echoed
            # Registered in GitLab's model registry (emulated) as the tag's version, with
            # every file once; served locally; release notes built from the registry.
            assert [(v.name, v.semver) for v in gl.state.versions.values()] == [("tiny", "0.1.0")]
            assert gl.duplicate_files() == 0
            record = json.loads((home / "deployments" / "tiny-local.json").read_text())
            assert record["version"] == "0.1.0"
            assert "release notes for tiny 0.1.0" in output

            # Production serves only what its pin names: the tag's production job opened
            # the merge request that pins 0.1.0; once merged, the default branch's
            # apply-promotion checks the pin and deploys it, unless it already serves (here
            # staging and production are the same local target).
            (mr,) = gl.state.merge_requests.values()
            assert mr["title"] == "Promote tiny 0.1.0 to local", mr
            project = gitlab.Gitlab(gl.url, private_token=token).projects.get(1)
            project.mergerequests.get(mr["iid"]).merge()
            (clone / "registry" / "local.yml").write_text(
                project.files.raw(file_path="registry/local.yml", ref="main").decode())
            commit(clone, "registry/local.yml", "Promote tiny 0.1.0 to local")
            branch = [str(gcl), "apply-promotion", "--force-shell-executor",
                      "--variable", "CI_COMMIT_BRANCH=main",
                      "--ignore-predefined-vars", "CI_COMMIT_BRANCH"]
            for key, value in variables.items():
                if key != "CI_COMMIT_TAG":
                    branch += ["--variable", f"{key}={value}"]
            applied = subprocess.run(branch, cwd=clone, env=env, capture_output=True,
                                     text=True, timeout=600)
            said = applied.stdout + applied.stderr
            assert applied.returncode == 0, said[-6000:]
            assert "local: tiny 0.1.0 already serves; not redeployed" in said, said[-6000:]
            assert json.loads((home / "deployments" / "tiny-local.json").read_text()) \
                ["pid"] == record["pid"], "a pin that already serves must not be restarted"

            # STAGING_ENV a Kubernetes target: the simulated cluster, reached as the GitLab
            # agent is (KUBE_CONTEXT names the kubeconfig's context). No pod can answer
            # there, so its endpoint is the local server of 0.1.0 this pipeline left running.
            k8s_cluster.namespace("ci-staging")
            (clone / "deploy" / "k8s-staging.yml").write_text(
                k8s_staging_yml(f"http://127.0.0.1:{record['port']}/v1"))
            commit(clone, "deploy/k8s-staging.yml", "staging on Kubernetes")
            k8s = {**variables, "STAGING_ENV": "k8s-staging", "KUBE_CONTEXT": "sim",
                   "LLMOPS_API_KEY": (home / "api-key").read_text().strip()}
            cluster_env = {**env, "KUBECONFIG": str(k8s_cluster.kubeconfig),
                           "PATH": f"{k8s_cluster.bin}{os.pathsep}{env['PATH']}"}

            def jobs(*names: str, on_main: bool = False,
                     **more: str) -> subprocess.CompletedProcess[str]:
                ref = (["--variable", "CI_COMMIT_BRANCH=main", "--ignore-predefined-vars",
                        "CI_COMMIT_BRANCH"] if on_main else
                       ["--unset-variable", "CI_COMMIT_BRANCH", "--ignore-predefined-vars",
                        "CI_COMMIT_TAG"])
                argv = [str(gcl), *names, "--force-shell-executor", *ref]
                for key, value in {**k8s, **more}.items():
                    if on_main and key == "CI_COMMIT_TAG":
                        continue
                    argv += ["--variable", f"{key}={value}"]
                ran = subprocess.run(argv, cwd=clone, env=cluster_env, capture_output=True,
                                     text=True, timeout=1200)
                (tmp_path / f"{'-'.join(names)}.log").write_text(ran.stdout + ran.stderr)
                return ran

            staged = jobs("deploy-staging", "verify-staging")
            said = staged.stdout + staged.stderr
            assert staged.returncode == 0, said[-6000:]
            assert "PASS  verify-staging" in said or "verify-staging finished in" in said
            deployment = k8s_cluster.json("-n", "ci-staging", "get", "deployment/tiny-k8s-staging")
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert labels["llmops/version"] == "0.1.0"

            # A second tag whose pods never become ready: undone, 0.1.0 serves on.
            k8s_cluster.keep_unready({"llmops/version": "0.2.0"})
            (first,) = gl.state.versions.values()
            second = jobs("register", "deploy-staging", CI_COMMIT_TAG="v0.2.0",
                          LLMOPS_RUN_ID=run_id_of(first))
            said = second.stdout + second.stderr
            assert second.returncode != 0, said[-6000:]
            assert "did not become ready" in said and "0.1.0 serves again" in said, said[-6000:]
            deployment = k8s_cluster.json("-n", "ci-staging", "get", "deployment/tiny-k8s-staging")
            assert deployment["spec"]["template"]["metadata"]["labels"]["llmops/version"] == \
                "0.1.0"
            assert token not in said

            # Ready this time: 0.2.0 serves, verified. Then the manual rollback job of the
            # default branch, in a job that keeps no history file (a fresh LLMOPS_HOME): the
            # cluster says which version was verified before.
            k8s_cluster.keep_unready()
            third = jobs("deploy-staging", CI_COMMIT_TAG="v0.2.0")
            assert third.returncode == 0, (third.stdout + third.stderr)[-6000:]
            fresh = tmp_path / "rollback-job-home"
            fresh.mkdir()
            back = jobs("rollback-production", on_main=True, PRODUCTION_ENV="k8s-staging",
                        LLMOPS_HOME=str(fresh))
            said = back.stdout + back.stderr
            assert back.returncode == 0, said[-6000:]
            assert "0.2.0 → 0.1.0" in said, said[-6000:]
            deployment = k8s_cluster.json("-n", "ci-staging", "get", "deployment/tiny-k8s-staging")
            assert deployment["spec"]["template"]["metadata"]["labels"]["llmops/version"] == \
                "0.1.0"
        finally:
            # The cluster is the session's: give its GPUs back to the other tests.
            k8s_cluster.keep_unready()
            k8s_cluster.kubectl("delete", "namespace", "ci-staging", "--wait=false",
                                check=False)
            run_llmops("stop", "tiny", root=clone, home=home)
            shutil.rmtree(clone / ".gitlab-ci-local", ignore_errors=True)
