"""kubectl gets an allowlisted environment: what it and its cloud auth plugins read, plus
what deploy/<env>.yml names in `kubernetes.env_passthrough`; never the pipeline's tokens,
other secrets, or variables that change what a program loads (LD_PRELOAD, PYTHONPATH)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmops.config import DeployConfig, load_deploy
from llmops.config.yamlfile import load_model_file
from llmops.errors import UsageError
from llmops.kubernetes.kubectl import Kubectl, _env
from llmops.kubernetes.target import KubernetesTarget

KUBECTLS_OWN = {
    "PATH": "/usr/bin", "HOME": "/home/ci", "KUBECONFIG": "/builds/.kube/config",
    "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HTTPS_PROXY": "http://proxy:3128",
    "no_proxy": "10.0.0.0/8", "SSL_CERT_FILE": "/etc/ssl/ca.pem",
    "AWS_PROFILE": "eks", "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token",  # aws eks get-token
    "CLOUDSDK_CORE_PROJECT": "p", "GOOGLE_APPLICATION_CREDENTIALS": "/sa.json",  # GKE
    "AZURE_CLIENT_ID": "c", "AAD_LOGIN_METHOD": "workloadidentity",  # kubelogin
    "KUBECTL_KUBERC": "false",
}
NOT_KUBECTLS = {
    "GITLAB_TOKEN": "glpat-abcdefghijklmnopqrst", "CI_JOB_TOKEN": "job-token",
    "LLMOPS_REGISTRY_TOKEN": "registry", "LLMOPS_API_KEY": "endpoint-key",
    "MLFLOW_TRACKING_URI": "https://bot:S3cr3tPw@mlflow.example.com",
    "MLFLOW_TRACKING_PASSWORD": "S3cr3tPw", "HF_TOKEN": "hf_abcdefghijklmnop",
    "MY_APP_SECRET": "shh", "VLLM_API_KEY": "sk-1", "DATABASE_URL": "postgres://u:p@db/x",
    "LD_PRELOAD": "/tmp/evil.so", "PYTHONPATH": "/tmp/evil", "VAULT_ADDR": "https://vault",
}


def test_kubectl_gets_its_own_variables_and_nothing_else() -> None:
    assert _env({**KUBECTLS_OWN, **NOT_KUBECTLS}) == KUBECTLS_OWN


def test_env_passthrough_adds_names_but_never_the_pipelines_secrets() -> None:
    got = _env({**KUBECTLS_OWN, **NOT_KUBECTLS},
               passthrough=frozenset({"VAULT_ADDR", "GITLAB_TOKEN"}))
    assert got == {**KUBECTLS_OWN, "VAULT_ADDR": "https://vault"}


def write(tmp_path: Path, kubernetes: str) -> Path:
    path = tmp_path / "deploy" / "staging.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("target: kubernetes\ngpu:\n  gpu_type: nvidia-a100-80gb\n"
                    "  gpu_memory_gib: 80\nkubernetes:\n" + kubernetes)
    return path


@pytest.mark.parametrize(("listed", "why"), [
    ("[VAULT_ADDR, GITLAB_TOKEN]", r"env_passthrough\[1\]: GITLAB_TOKEN is the pipeline's "
                                   r"own secret, which kubectl never gets: remove it"),
    ("['A=B']", r"env_passthrough\[0\]: 'A=B' is not a variable name"),
])
def test_env_passthrough_refuses_the_pipelines_secrets_when_the_file_loads(
        tmp_path: Path, listed: str, why: str) -> None:
    path = write(tmp_path, f"  env_passthrough: {listed}\n")
    with pytest.raises(UsageError, match=f"{path}:6: kubernetes.env_passthrough: .*{why}"):
        load_model_file(path, DeployConfig)


FAKE_KUBECTL = """#!/usr/bin/env python3
import json, os
with open({out!r}, "w") as f:
    json.dump(dict(os.environ), f)
"""


def test_the_kubernetes_target_runs_kubectl_with_that_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole path: deploy/<env>.yml's passthrough, the target's kubectl, the child."""
    out, bin_dir = tmp_path / "env.json", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL.format(out=str(out)))
    (bin_dir / "kubectl").chmod(0o755)
    for name, value in NOT_KUBECTLS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBECONFIG", "/builds/.kube/config")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    staging = load_deploy("staging")
    config = staging.model_copy(update={"kubernetes": staging.kubernetes.model_copy(
        update={"env_passthrough": ["VAULT_ADDR"]})})
    kubectl = KubernetesTarget("staging", config, registry=None).kubectl(  # type: ignore[arg-type]
        "applying the manifests")
    assert isinstance(kubectl, Kubectl)
    got = json.loads(out.read_text())
    assert got["KUBECONFIG"] == "/builds/.kube/config" and got["VAULT_ADDR"] == "https://vault"
    assert not set(got) & (set(NOT_KUBECTLS) - {"VAULT_ADDR"})
