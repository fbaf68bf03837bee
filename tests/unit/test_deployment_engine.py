"""The one deployment path: deploy, verify, roll back and history drive any target the same
way (a toy target kind, registered from here, and a fake registry; the real targets in the
e2e tier), and the Kubernetes target undoes a rollout that never becomes ready (kubectl
faked on PATH)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from signing_keys import fresh_public_pem

from llmops.config import load_deploy, load_model
from llmops.config.settings import Settings
from llmops.errors import StageFailed, UsageError
from llmops.kubernetes.target import KubernetesTarget, Rendered
from llmops.registry.base import ModelVersion
from llmops.serve.target import LocalTarget
from llmops.serve.verify import SmokeResult, Verification
from llmops.serve.vllm_release import DIGEST_PLACEHOLDER
from llmops.stages import deployment
from llmops.stages.context import Context

MV = ModelVersion("tiny", "0.2.0", "2", "src", "run-2", "sha256:new", "base")


@dataclass
class Started:
    model: str = "tiny"
    env: str = "fake"
    version: str = "0.2.0"
    served_name: str = "tiny"
    url: str = "http://127.0.0.1:1/v1"
    check_url: str = "http://127.0.0.1:1/v1"


@dataclass
class FakeTarget:
    """A third target kind: every method of the protocol, nothing under stages/ changed."""

    env: str = "fake"
    config: Any = field(default_factory=lambda: load_deploy("local"))
    kind: str = "fake"
    calls: list[tuple[str, str]] = field(default_factory=list)

    def config_problems(self) -> list[str]:
        return []

    def config_notes(self) -> list[str]:
        return []

    def preflight(self, spec: Any, version: str) -> None:
        self.calls.append(("preflight", version))

    def start(self, spec: Any, version: str) -> Started:
        self.calls.append(("start", version))
        return Started(version=version)

    def takes_over(self, spec: Any, settings: Any) -> bool:
        return False

    def serving(self, spec: Any) -> Started:
        return Started(version="0.1.0")

    def settled(self, spec: Any) -> Started:
        return Started(version="0.1.0")

    def commit(self, started: Started, action: str, checked: Verification) -> None:
        self.calls.append(("commit:" + action, started.version))

    def abort(self, started: Started, action: str, exc: Exception) -> StageFailed:
        self.calls.append(("abort:" + action, started.version))
        return StageFailed(f"{exc}\nrolled back: tiny 0.1.0 still serves")

    def start_previous(self, spec: Any) -> Started:
        self.calls.append(("start_previous", "0.1.0"))
        return Started(version="0.1.0")

    def stop(self, spec: Any) -> Started:
        self.calls.append(("stop", "0.1.0"))
        return Started(version="0.1.0")

    def history(self, model: str) -> Any:
        return FakeHistory()

    def api_key(self) -> str:
        return "the-targets-key"

    def api_key_hint(self) -> str:
        return "$TOY_KEY"

    def plan(self, spec: Any) -> Any:
        raise UsageError("a toy has no GPUs")

    def render(self, spec: Any, version: str, out: Path) -> Any:
        out.mkdir(parents=True, exist_ok=True)
        (out / "toy.yaml").write_text(f"version: {version}\n")
        return Rendered(out / "toy.yaml", 1, "one toy")


class FakeHistory:
    def read(self) -> list[dict[str, Any]]:
        return [{"version": str(n)} for n in range(5)]


class FakeRegistry:
    def get(self, name: str, version: str) -> ModelVersion:
        return MV

    def register(self, *a: Any) -> ModelVersion:
        raise AssertionError("not used")

    def download(self, mv: ModelVersion, dest: Path) -> Path:
        raise AssertionError("not used")

    def set_alias(self, name: str, alias: str, mv: ModelVersion) -> None:
        self.aliases[alias] = mv.version

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}


def fake_context() -> Context:
    ctx = Context(Settings())
    ctx.registry = FakeRegistry()  # type: ignore[assignment]
    return ctx


def checks(problems: list[str]) -> Any:
    def run_checks(*args: Any) -> tuple[Verification, list[str]]:
        assert args[-1] == "the-targets-key"  # every check presents the target's API key
        return Verification(SmokeResult("u", ["tiny"]), None), list(problems)
    return run_checks


def test_a_verified_deploy_is_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployment, "run_checks", checks([]))
    target = FakeTarget()
    registry = FakeRegistry()
    done = deployment.deploy_version(load_model("tiny"), target, "0.2.0", registry)
    assert target.calls == [("preflight", "0.2.0"), ("start", "0.2.0"),
                            ("commit:deploy", "0.2.0")]
    assert done.endpoint.version == "0.2.0"
    assert registry.aliases == {"fake": "0.2.0"}  # the registry's own alias, where it has any


def test_a_failed_verification_is_aborted_and_says_what_serves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployment, "run_checks", checks(["golden accuracy 0.1 < 0.5"]))
    target = FakeTarget()
    with pytest.raises(StageFailed, match=r"(?s)verification of tiny 0\.2\.0 .*golden "
                       r"accuracy.*still serves"):
        deployment.deploy_version(load_model("tiny"), target, "0.2.0", FakeRegistry())
    assert target.calls == [("preflight", "0.2.0"), ("start", "0.2.0"),
                            ("abort:deploy", "0.2.0")]


def test_verify_checks_what_serves_and_switches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployment, "run_checks", checks(["load test: 3 errors"]))
    target = FakeTarget()
    with pytest.raises(StageFailed, match="tiny 0.1.0 at .*load test: 3 errors"):
        deployment.verify_env(load_model("tiny"), target)
    assert target.calls == []


def test_rollback_starts_the_previous_version_and_verifies_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployment, "run_checks", checks([]))
    target = FakeTarget()
    deployment.rollback_env(load_model("tiny"), target, FakeRegistry())
    assert target.calls == [("start_previous", "0.1.0"), ("commit:rollback", "0.1.0")]
    assert [e["version"] for e in deployment.history("tiny", target, 2)] == ["3", "4"]


def test_a_third_target_kind_is_added_without_changing_the_engine(
        repo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo_copy / "deploy" / "toy.yml").write_text("target: toy\n")
    with pytest.raises(UsageError, match=r"deploy/toy\.yml: target: 'toy' is not a target "
                                         r"kind llmops knows \(kubernetes, local\)"):
        deployment.target_for("toy", fake_context())
    made: list[FakeTarget] = []

    def toy(env: str, config: Any, ctx: Context) -> FakeTarget:
        made.append(FakeTarget(env, config, "toy"))
        return made[-1]

    monkeypatch.setattr(deployment, "_KINDS", dict(deployment._KINDS))
    deployment.register_target_kind("toy", toy)
    target = deployment.target_for("toy", fake_context())
    assert isinstance(target, deployment.Target)  # every method of the protocol
    deployment.check_deploy("toy")
    monkeypatch.setattr(deployment, "run_checks", checks([]))
    spec = load_model("tiny")
    deployment.deploy_version(spec, target, "0.2.0", FakeRegistry())
    deployment.rollback_env(spec, target, FakeRegistry())
    assert deployment.stop(spec, target).version == "0.1.0"
    assert deployment.render_manifests(spec, target, "0.2.0", tmp_path).objects == 1
    with pytest.raises(UsageError, match="no GPUs"):
        deployment.parallel_plan(spec, target)
    assert made[0].calls == [("preflight", "0.2.0"), ("start", "0.2.0"),
                             ("commit:deploy", "0.2.0"), ("start_previous", "0.1.0"),
                             ("commit:rollback", "0.1.0"), ("stop", "0.1.0")]


def test_the_target_comes_from_the_deploy_file() -> None:
    assert isinstance(deployment.target_for("local", fake_context()), LocalTarget)
    staging = deployment.target_for("staging", fake_context())
    assert isinstance(staging, KubernetesTarget) and staging.config.gpu is not None


def test_a_kubernetes_target_without_an_endpoint_cannot_be_verified() -> None:
    staging = deployment.target_for("staging", fake_context())
    with pytest.raises(UsageError, match=r"deploy/staging\.yml: endpoint: not set"):
        deployment.verify_env(load_model("tiny"), staging)


FAKE_KUBECTL = """#!/bin/sh
echo "$@" >> "{log}"
exit 0
"""


def test_a_rollout_that_cannot_be_verified_never_reaches_the_cluster(
        tmp_path: Path, repo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an endpoint the rollout could not be verified (nor undone for failing it):
    refused before kubectl is called at all. Rollouts against a real API server, undone
    when never ready, are tests/e2e/test_kubernetes.py's."""
    log, bin_dir = tmp_path / "kubectl.log", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL.format(log=log))
    (bin_dir / "kubectl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    staging = repo_copy / "deploy" / "staging.yml"  # pinned: the placeholder is refused first
    staging.write_text(staging.read_text().replace(DIGEST_PLACEHOLDER, "ab" * 32))
    (repo_copy / "deploy" / "keys" / "release.pub").write_bytes(  # and a missing key
        fresh_public_pem())
    without_endpoint = deployment.target_for("staging", fake_context())
    with pytest.raises(UsageError, match="endpoint: not set"):
        deployment.deploy_version(load_model("tiny"), without_endpoint, "0.2.0",
                                  FakeRegistry())
    assert not log.exists()


def test_an_interrupted_verification_aborts_the_new_version_then_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancelled CI job (SIGTERM, raised as KeyboardInterrupt by the CLI) during the
    checks: the started version is undone, never committed, and the interruption goes on."""
    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(deployment, "run_checks", interrupted)
    target = FakeTarget()
    with pytest.raises(KeyboardInterrupt):
        deployment.deploy_version(load_model("tiny"), target, "0.2.0", FakeRegistry())
    assert target.calls == [("preflight", "0.2.0"), ("start", "0.2.0"),
                            ("abort:deploy", "0.2.0")]


@dataclass
class PinnedTarget(FakeTarget):
    """Serves `serves` ({model: version}); starting a version of `broken` fails."""

    serves: dict[str, str] = field(default_factory=dict)
    broken: str = ""

    def settled(self, spec: Any) -> Started | None:
        version = self.serves.get(spec.name)
        return None if version is None else Started(model=spec.name, version=version)

    def serving(self, spec: Any) -> Started:
        settled = self.settled(spec)
        if settled is None:
            raise UsageError(f"no deployment of {spec.name}")
        return settled

    def start(self, spec: Any, version: str) -> Started:
        self.calls.append(("start", f"{spec.name} {version}"))
        if spec.name == self.broken:
            raise StageFailed(f"{spec.name} {version} never became ready; "
                              f"{self.serves[spec.name]} serves again")
        return Started(model=spec.name, version=version)


def test_apply_promotion_deploys_only_the_pins_that_do_not_serve_yet(
        repo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Production deploys what its pins name, and only what changed: a pin whose version
    already serves is not restarted (a merge touching another model's pin, or none), a
    model served nowhere yet is deployed, and one failure does not stop the others."""
    (repo_copy / "deploy" / "toy.yml").write_text("target: toy\n")
    (repo_copy / "registry" / "toy.yml").write_text(
        "models:\n"
        "  tiny: {version: 0.1.0, digest: 'sha256:a'}\n"
        "  tiny-alpaca: {version: 0.2.0, digest: 'sha256:b'}\n"
        "  tiny-sharegpt: {version: 0.3.0, digest: 'sha256:c'}\n"
        "  support-bot: {version: 1.1.0, digest: 'sha256:d'}\n")
    target = PinnedTarget(env="toy", serves={"tiny": "0.1.0", "tiny-alpaca": "0.1.0",
                                  "support-bot": "1.0.0"}, broken="support-bot")
    monkeypatch.setattr(deployment, "_KINDS", dict(deployment._KINDS))
    deployment.register_target_kind("toy", lambda env, config, ctx: target)
    monkeypatch.setattr(deployment, "run_checks", checks([]))
    with pytest.raises(StageFailed) as failed:
        deployment.deploy_pins("toy", fake_context())
    said = str(failed.value)
    assert "failed for 1 of 4 models" in said and "support-bot 1.1.0" in said, said
    assert "still pins support-bot 1.1.0" in said, said  # no GitLab here: says so
    assert [c for c in target.calls if c[0] == "start"] == [
        ("start", "tiny-alpaca 0.2.0"), ("start", "tiny-sharegpt 0.3.0"),
        ("start", "support-bot 1.1.0")]
    assert ("commit:deploy", "0.1.0") not in target.calls  # tiny: not restarted

    target.calls.clear()
    target.serves = {"tiny": "0.1.0", "tiny-alpaca": "0.2.0", "tiny-sharegpt": "0.3.0",
                     "support-bot": "1.1.0"}
    done = deployment.deploy_pins("toy", fake_context())
    assert [(d.model, d.verified) for d in done] == [
        ("tiny", None), ("tiny-alpaca", None), ("tiny-sharegpt", None), ("support-bot", None)]
    assert target.calls == []
