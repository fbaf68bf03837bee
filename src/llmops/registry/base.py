"""The model registry: a version is a folder of files with a sha256 manifest and lineage.

The embedded backend is MLflow's model registry on the same store as the runs. A version's
SemVer lives in the tag `version` (as GitLab's registry keeps it in `gitlab.version`),
because MLflow numbers versions itself. A version is created only after all its files are
uploaded, and deleted again if anything after that fails: nothing is half-registered.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from llmops.digests import (  # noqa: F401  (the registry's own names for them)
    MANIFEST,
    file_digests,
    first_mismatch,
    sha256_file,
    verify_manifest,
    write_manifest,
)
from llmops.errors import UsageError
from llmops.tracking import tracking_uri

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class ModelVersion:
    """A registered version: where its files are and what they must hash to."""

    name: str
    version: str
    registry_id: str
    source: str
    run_id: str
    digest: str
    base_model: str
    tags: dict[str, str] = field(default_factory=dict)


def parse_semver(text: str) -> tuple[int, int, int]:
    """`1.4.0` or `v1.4.0` as a tuple; UsageError otherwise."""
    match = SEMVER.match(text.removeprefix("v"))
    if not match:
        raise UsageError(f"version {text!r} is not SemVer (MAJOR.MINOR.PATCH, e.g. 1.4.0)")
    return int(match[1]), int(match[2]), int(match[3])


def next_patch(existing: list[str]) -> str:
    """The version after the highest existing one: 0.1.0 first, then patch + 1."""
    if not existing:
        return "0.1.0"
    major, minor, patch = max(parse_semver(v) for v in existing)
    return f"{major}.{minor}.{patch + 1}"


class Registry(Protocol):
    """What the pipeline needs from a model registry backend."""

    def register(self, name: str, folder: Path, run_id: str, version: str | None,
                 lineage: dict[str, str]) -> ModelVersion: ...

    def get(self, name: str, version: str) -> ModelVersion: ...

    def download(self, mv: ModelVersion, dest: Path) -> Path: ...


class MlflowRegistry:
    """MLflow's model registry (embedded store or a server); SemVer in the `version` tag."""

    @cached_property
    def client(self) -> Any:
        """Made on first use: a command that never touches the registry does not pay for
        importing MLflow."""
        import mlflow

        return mlflow.MlflowClient(tracking_uri())

    def _versions(self, name: str) -> list[ModelVersion]:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{name}'")
        except MlflowException:
            return []
        return [self._to_version(mv) for mv in found if "version" in mv.tags]

    @staticmethod
    def _to_version(mv: object) -> ModelVersion:
        tags = mv.tags  # type: ignore[attr-defined]
        return ModelVersion(mv.name, tags["version"], str(mv.version),  # type: ignore[attr-defined]
                            mv.source, mv.run_id, tags.get("digest", ""),  # type: ignore[attr-defined]
                            tags.get("base_model", ""), dict(tags))

    def register(self, name: str, folder: Path, run_id: str, version: str | None,
                 lineage: dict[str, str]) -> ModelVersion:
        """Upload `folder` to the run, then create the version; undo it if a step fails."""
        from mlflow.exceptions import MlflowException

        existing = self._versions(name)
        version = version or next_patch([v.version for v in existing])
        parse_semver(version)
        if any(v.version == version for v in existing):
            raise UsageError(f"{name} {version} is already registered; pick another version")
        digest = write_manifest(folder)
        # One artifact folder per version: two versions of one run never share files.
        self.client.log_artifacts(run_id, str(folder), f"model/{version}")
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model/{version}"
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description=f"Fine-tuned {name}")
        tags = {**lineage, "version": version, "digest": digest}
        mv = self.client.create_model_version(name, source, run_id=run_id, tags=tags,
                                              description=f"{name} {version}")
        try:
            self.client.set_registered_model_alias(name, "candidate", mv.version)
        except Exception:
            self.client.delete_model_version(name, mv.version)
            raise
        return ModelVersion(name, version, str(mv.version), source, run_id, digest,
                            lineage.get("base_model", ""), tags)

    def get(self, name: str, version: str) -> ModelVersion:
        for mv in self._versions(name):
            if mv.version == version:
                return mv
        known = ", ".join(v.version for v in self._versions(name)) or "(none)"
        raise UsageError(f"{name} has no version {version}; registered: {known}")

    def download(self, mv: ModelVersion, dest: Path) -> Path:
        """Fetch the version's files into `dest` and check them against its manifest."""
        import mlflow

        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source,
                                                         dst_path=str(dest.parent / ".dl")))
        local.rename(dest)
        shutil.rmtree(dest.parent / ".dl", ignore_errors=True)
        verify_manifest(dest, mv.digest)
        return dest

    def set_alias(self, name: str, alias: str, mv: ModelVersion) -> None:
        self.client.set_registered_model_alias(name, alias, mv.registry_id)
