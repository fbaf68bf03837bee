"""What the engine takes from the environment, read in one place (`Settings.from_env`, once
per command) and passed down; no module reads the environment for itself."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmops.redact import remember_environment

# CI identifiers recorded on every run and version, as MLflow tags.
CI_TAGS = {
    "CI_PIPELINE_ID": "gitlab.CI_PIPELINE_ID",
    "CI_PIPELINE_URL": "gitlab.CI_PIPELINE_URL",
    "CI_JOB_ID": "gitlab.CI_JOB_ID",
    "CI_JOB_URL": "gitlab.CI_JOB_URL",
    "CI_COMMIT_TAG": "gitlab.CI_COMMIT_TAG",
    "CI_JOB_NAME": "gitlab.CI_JOB_NAME",
    "CI_PROJECT_PATH": "gitlab.CI_PROJECT_PATH",
}
# The CI images a job ran, by digest (.gitlab-ci.yml pins them), for provenance.
IMAGE_DIGESTS = {"pipeline": "LLMOPS_PIPELINE_IMAGE_DIGEST",
                 "trainer": "LLMOPS_TRAINER_IMAGE_DIGEST"}

# What decides who signs a registered version (`llmops.signatures.signer_from_env`).
SIGNING_VARIABLES = ("LLMOPS_SIGNING_KEY", "LLMOPS_SIGNING_KEY_PASSWORD", "LLMOPS_SIGNING_CERT",
                     "LLMOPS_SIGNING_CERT_CHAIN", "SIGSTORE_ID_TOKEN", "CI_COMMIT_REF_PROTECTED")


@dataclass(frozen=True)
class Settings:
    """The environment of one command."""

    registry_uri: str = ""  # LLMOPS_REGISTRY_URI, else MLFLOW_TRACKING_URI
    registry_token: str | None = None  # LLMOPS_REGISTRY_TOKEN, else MLFLOW_TRACKING_TOKEN
    gitlab_url: str | None = None  # GITLAB_URL, else CI_SERVER_URL
    gitlab_token: str | None = None  # GITLAB_TOKEN
    gitlab_project: str | None = None  # GITLAB_PROJECT, else CI_PROJECT_ID
    commit_tag: str | None = None  # CI_COMMIT_TAG (a tag pipeline)
    project_api: str | None = None  # $CI_API_V4_URL/projects/$CI_PROJECT_ID
    api_key: str | None = None  # LLMOPS_API_KEY: a cluster endpoint's key, for verify
    quiet_train: bool = False  # LLMOPS_QUIET_TRAIN=1: the trainer's lines stay in train.log
    ci_tags: dict[str, str] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # name → registry/name@sha256:…
    # SIGNING_VARIABLES as set (a key's password and an OIDC token among them: not shown)
    signing: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        api, project = env.get("CI_API_V4_URL"), env.get("CI_PROJECT_ID")
        # Whatever this command was given as a secret is redacted at every exit from now on.
        remember_environment(env)
        return cls(
            registry_uri=env.get("LLMOPS_REGISTRY_URI") or env.get("MLFLOW_TRACKING_URI", ""),
            registry_token=env.get("LLMOPS_REGISTRY_TOKEN") or env.get("MLFLOW_TRACKING_TOKEN"),
            gitlab_url=env.get("GITLAB_URL") or env.get("CI_SERVER_URL"),
            gitlab_token=env.get("GITLAB_TOKEN"),
            gitlab_project=env.get("GITLAB_PROJECT") or project,
            commit_tag=env.get("CI_COMMIT_TAG"),
            project_api=f"{api}/projects/{project}" if api and project else None,
            api_key=env.get("LLMOPS_API_KEY"),
            quiet_train=env.get("LLMOPS_QUIET_TRAIN") == "1",
            ci_tags={tag: env[var] for var, tag in CI_TAGS.items() if env.get(var)},
            signing={var: env[var] for var in SIGNING_VARIABLES if env.get(var)},
            images={name: f"{env['CI_REGISTRY_IMAGE']}/{name}@{env[var]}"
                    for name, var in IMAGE_DIGESTS.items()
                    if env.get("CI_REGISTRY_IMAGE") and env.get(var, "").startswith("sha256:")
                    and env[var] != "sha256:" + "0" * 64},  # a fresh fork's placeholder
        )

    @property
    def tag_version(self) -> str | None:
        """The CI tag's SemVer (v1.4.0 → 1.4.0) in a tag pipeline; None otherwise."""
        return self.commit_tag.removeprefix("v") if self.commit_tag else None
