"""Every deploy checks the version's signature against `deploy/<env>.yml`'s trusted signers
before anything is served: the local target before a server starts, the Kubernetes target
by shipping the trusted keys to its init container (and refusing to apply without them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from registered_version import a_run, tags, version_folder
from signing_keys import fresh_public_pem

from llmops.config import load_deploy, load_model
from llmops.config.paths import state_dir
from llmops.errors import StageFailed, UsageError
from llmops.registry.base import MlflowRegistry
from llmops.serve import process as serve
from llmops.serve.history import History
from llmops.serve.target import LocalTarget
from llmops.signatures import SIGNATURE, local_key_paths


@pytest.fixture()
def registered(repo_copy: Path, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowRegistry, Path]:
    """support-bot 0.1.0 in an embedded MLflow registry, signed by this project's key."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    run_id = a_run(mlflow.MlflowClient(uri), tmp_path / "artifacts")
    registry = MlflowRegistry()
    registry.register("support-bot", version_folder(tmp_path), run_id, "0.1.0", tags(run_id))
    return registry, repo_copy


def trust_only(root: Path, env: str, pub: bytes) -> None:
    (root / "deploy" / "keys").mkdir(exist_ok=True)
    (root / "deploy" / "keys" / "release.pub").write_bytes(pub)
    path = root / "deploy" / f"{env}.yml"
    config = yaml.safe_load(path.read_text())
    config["signing"] = {"trust": [{"key": "deploy/keys/release.pub"}]}
    path.write_text(yaml.safe_dump(config))


def another_key() -> bytes:
    return fresh_public_pem()


def refused_locally(registry: MlflowRegistry) -> str:
    target = LocalTarget("local", load_deploy("local"), registry)
    with pytest.raises(StageFailed) as refused:
        target.start(load_model("support-bot"), "0.1.0")
    assert serve.load_record("support-bot", "local") is None  # nothing started
    [event] = History("support-bot", "local").read()
    assert event["result"] == "failed"
    return str(refused.value)


def test_the_local_target_refuses_a_version_no_trusted_key_signed(
        registered: tuple[MlflowRegistry, Path]) -> None:
    registry, root = registered
    trust_only(root, "local", another_key())
    message = refused_locally(registry)
    assert "support-bot 0.1.0: the signature does not verify" in message
    assert "signed by another key" in message


def test_the_local_target_refuses_an_unsigned_version(
        registered: tuple[MlflowRegistry, Path]) -> None:
    registry, _ = registered
    [signature] = (state_dir() / "..").resolve().rglob(f"model/0.1.0/{SIGNATURE}")
    signature.unlink()  # a version registered before signing, or stripped in the store
    assert "no model.sig" in refused_locally(registry)


def test_the_registered_version_verifies_against_the_projects_key(
        registered: tuple[MlflowRegistry, Path], tmp_path: Path) -> None:
    """What the refusals above are measured against: the same version, the default trust."""
    from llmops.registry import signing

    registry, _ = registered
    files = registry.download(registry.get("support-bot", "0.1.0"), tmp_path / "v")
    signer = signing.verify_version(files, load_deploy("local").signing, "support-bot 0.1.0")
    assert signer == f"key {local_key_paths(state_dir())[1]}"


def kubernetes_target(root: Path, registry: Any, pins: bool = True) -> Any:
    from llmops.kubernetes.target import KubernetesTarget

    if pins:
        (root / "registry" / "production.yml").write_text(
            "models:\n  support-bot: {version: 0.1.0, digest: 'sha256:abc'}\n")
    return KubernetesTarget("production", load_deploy("production"), registry,
                            "https://gitlab.example.com/api/v4/projects/1")


def test_a_fresh_forks_production_notes_what_it_lacks_and_refuses_to_deploy(
        repo_copy: Path) -> None:
    """The placeholder images and the release key not yet committed: check-config notes
    them (merge requests stay green), a deploy refuses them before applying anything."""
    target = kubernetes_target(repo_copy, registry=None)
    notes = "\n".join(target.config_notes())
    assert "kubernetes.fetch_image: not deployable yet: the digest is a placeholder" in notes
    assert "signing.trust: not deployable yet: " in notes
    assert "deploy/keys/release.pub" in notes and "does not exist" in notes
    with pytest.raises(UsageError, match=r"refusing to deploy support-bot 0.1.0 to "
                                         r"production: .*fetch_image.*release.pub"):
        target.preflight(load_model("support-bot"), "0.1.0")


def test_a_trusted_key_that_is_not_an_ec_public_key_is_named(repo_copy: Path) -> None:
    trust_only(repo_copy, "production", b"-----BEGIN PUBLIC KEY-----\nnope\n")
    target = kubernetes_target(repo_copy, registry=None)
    assert any("deploy/keys/release.pub" in n and "not a PEM public key" in n
               for n in target.config_notes())


def test_the_init_container_gets_the_trusted_keys_and_nothing_else(
        repo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.kubernetes import target as k8s_target
    from llmops.kubernetes.plan import ModelShape, plan_for

    pub = another_key()
    trust_only(repo_copy, "production", pub)
    target = kubernetes_target(repo_copy, registry=None)
    shape = ModelShape(params=135_000_000, layers=30, hidden=576, heads=9, kv_heads=3,
                       head_dim=64)
    monkeypatch.setattr(k8s_target.KubernetesTarget, "plan",
                        lambda self, spec: (shape, plan_for(shape, self.config.gpu)))
    rendered = target.render(load_model("support-bot"), "0.1.0", tmp_path / "out")
    docs = list(yaml.safe_load_all(rendered.path.read_text()))
    config = next(d for d in docs if d["kind"] == "ConfigMap" and "trust.json" in d["data"])
    assert config["data"]["trust-0.pem"] == pub.decode()
    assert [k for k in config["data"] if k.startswith("trust")] == ["trust-0.pem", "trust.json"]
    assert json.loads(config["data"]["trust.json"])[0]["key"] == "/scripts/trust/0.pem"
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert {"name": "TRUST_FILE", "value": "/scripts/trust/trust.json"} in init["env"]
    assert {"name": "HOME", "value": "/tmp"} in init["env"]  # writable: an emptyDir
    assert {"name": "tmp", "mountPath": "/tmp"} in init["volumeMounts"]
    items = next(v for v in pod["volumes"] if v["name"] == "scripts")["configMap"]["items"]
    assert {"key": "trust-0.pem", "path": "trust/0.pem"} in items
    assert {"key": "trust.json", "path": "trust/trust.json"} in items
    assert {"key": "signatures.py", "path": "llmops/signatures.py"} in items
    shutil.rmtree(tmp_path / "out")


def test_a_base_model_tag_changed_in_the_registry_is_refused(
        registered: tuple[MlflowRegistry, Path]) -> None:
    """Tags are not signed: the base model a deploy loads comes from the version's signed
    axolotl.yml, and a tag that says otherwise is refused before any base is fetched."""
    registry, _ = registered
    registry.client.set_model_version_tag("support-bot", "1", "base_model",
                                          "someone/else@0123456789abcdef")
    message = refused_locally(registry)
    assert "the registry's tag names the base model someone/else" in message
    assert "its signed axolotl.yml /m/smollm2" in message
