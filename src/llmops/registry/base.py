"""The model registry: a version is a folder of files with a sha256 manifest and lineage.

The embedded backend is MLflow's model registry on the same store as the runs. A version's
SemVer lives in the tag `version` (as GitLab's registry keeps it in `gitlab.version`),
because MLflow numbers versions itself. A version is created only after all its files are
uploaded, and deleted again if anything after that fails: nothing is half-registered.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from llmops.config.paths import state_subdir
from llmops.digests import (  # noqa: F401  (the registry's own names for them)
    MANIFEST,
    file_digests,
    first_mismatch,
    sha256_file,
    verify_manifest,
    write_manifest,
)
from llmops.errors import UsageError
from llmops.registry.signing import seal
from llmops.tracking import MODEL_ID_TAG, tracking_uri

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


def _lock_dir() -> Path:
    """Beside the embedded store's database (every process on that store shares it), else
    the state folder's `locks/`."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///").split("?")[0]).resolve().parent
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return state_subdir("locks")


@contextmanager
def registration_lock(name: str) -> Iterator[None]:
    """Hold `name`'s registration lock (an flock, released when the holder dies).

    Reading the highest version and creating the next one must be one step: two local
    releases of one model would otherwise both pick the same next patch. It guards one
    machine; CI serialises its register jobs with `resource_group`.
    """
    import fcntl

    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    with open(_lock_dir() / f".register-{safe}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def staging_beside(dest: Path) -> Iterator[Path]:
    """A fresh folder beside `dest` (same file system: the final rename is atomic) for a
    download, removed with whatever it still holds when the block ends."""
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def put_in_place(verified: Path, dest: Path) -> None:
    """A verified folder in place of `dest` (whatever `dest` held before is gone)."""
    if dest.exists():
        shutil.rmtree(dest)
    verified.rename(dest)


class Registry(Protocol):
    """What the pipeline needs from a model registry backend."""

    def register(self, name: str, folder: Path, run_id: str, version: str | None,
                 lineage: dict[str, str]) -> ModelVersion: ...

    def get(self, name: str, version: str) -> ModelVersion: ...

    def download(self, mv: ModelVersion, dest: Path) -> Path: ...

    def set_alias(self, name: str, alias: str, mv: ModelVersion) -> None:
        """Point the environment's alias at the version where the registry keeps aliases."""
        ...


class MlflowRegistry:
    """MLflow's model registry (embedded store or a server); SemVer in the `version` tag."""

    def __init__(self, signing_env: Mapping[str, str] | None = None) -> None:
        self.signing_env = dict(signing_env or {})  # who signs (Settings.signing)

    @cached_property
    def client(self) -> Any:
        """Made on first use: a command that never touches the registry does not pay for
        importing MLflow."""
        import mlflow

        return mlflow.MlflowClient(tracking_uri())

    def _versions(self, name: str) -> list[ModelVersion]:
        # A model never registered has no versions (an empty answer, not an error). An error
        # is raised as is: read as "no versions", it made registration create a second 0.1.0.
        found = self.client.search_model_versions(f"name='{name}'")
        return [self._to_version(mv) for mv in found if "version" in mv.tags]

    @staticmethod
    def _same(existing: list[ModelVersion], run_id: str, digest: str,
              version: str | None) -> ModelVersion | None:
        """The version already made from this run with these files (and this SemVer, when
        one is asked for): what a retried registration must return instead of a new one."""
        same = [mv for mv in existing
                if mv.run_id == run_id and mv.digest == digest and version in (None, mv.version)]
        return min(same, key=lambda mv: int(mv.registry_id), default=None)

    @staticmethod
    def _to_version(mv: object) -> ModelVersion:
        tags = mv.tags  # type: ignore[attr-defined]
        return ModelVersion(mv.name, tags["version"], str(mv.version),  # type: ignore[attr-defined]
                            mv.source, mv.run_id, tags.get("digest", ""),  # type: ignore[attr-defined]
                            tags.get("base_model", ""), dict(tags))

    def register(self, name: str, folder: Path, run_id: str, version: str | None,
                 lineage: dict[str, str]) -> ModelVersion:
        """Upload `folder` to the run, then create the version; undo it if a step fails.

        Idempotent: the same run with the same files (a retry after a lost answer or a
        crash) gets the version already made back, not a second one.
        """
        if version is not None:
            parse_semver(version)
        digest, signed = seal(folder, self.signing_env)
        lineage = {**lineage, **signed}
        with registration_lock(name):
            existing = self._versions(name)
            done = self._same(existing, run_id, digest, version)
            if done is not None:
                # Point `candidate` again: the first attempt may have died before it did.
                self.client.set_registered_model_alias(name, "candidate", done.registry_id)
                return done
            version = version or next_patch([v.version for v in existing])
            if any(v.version == version for v in existing):
                raise UsageError(f"{name} {version} is already registered from another run "
                                 "or with other files; pick another version")
            return self._create(name, folder, run_id, version, digest, lineage)

    def _create(self, name: str, folder: Path, run_id: str, version: str, digest: str,
                lineage: dict[str, str]) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        # One artifact folder per version: two versions of one run never share files.
        self.client.log_artifacts(run_id, str(folder), f"model/{version}")
        run = self.client.get_run(run_id)
        source = f"{run.info.artifact_uri}/model/{version}"
        # The run's candidate as an MLflow 3 logged model (absent on older runs): the version
        # points at it, and it lists the version.
        model_id = run.data.tags.get(MODEL_ID_TAG)
        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            try:
                self.client.create_registered_model(name, description=f"Fine-tuned {name}")
            except MlflowException as again:  # made meanwhile by another machine: fine
                if again.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        tags = {**lineage, "version": version, "digest": digest}
        try:
            registry_id = str(self.client.create_model_version(
                name, source, run_id=run_id, tags=tags, description=f"{name} {version}",
                model_id=model_id).version)
        except Exception:
            # A server may have made the version and lost the answer: look it up by run and
            # digest before reporting a failure, so that a retry never creates it twice.
            made = self._same(self._versions(name), run_id, digest, version)
            if made is None:
                raise
            registry_id = made.registry_id
        registry_id = self._keep_one(name, run_id, digest, version, registry_id)
        try:
            self.client.set_registered_model_alias(name, "candidate", registry_id)
        except Exception:
            self.client.delete_model_version(name, registry_id)
            raise
        if model_id:
            self._link_model(model_id, name, registry_id)
        return ModelVersion(name, version, registry_id, source, run_id, digest,
                            lineage.get("base_model", ""), tags)

    def _keep_one(self, name: str, run_id: str, digest: str, version: str,
                  registry_id: str) -> str:
        """The first version this run made with these files; any later twin deleted.

        MLflow's client retries every method, POST included, when a connection drops
        before the answer, so one create can make two versions (the first answer lost,
        the retry's received). The earliest is kept: it is the one a retried job finds.
        """
        from mlflow.exceptions import MlflowException

        twins = [mv for mv in self._versions(name) if mv.run_id == run_id
                 and mv.digest == digest and mv.version == version]
        kept = min([int(registry_id), *(int(mv.registry_id) for mv in twins)])
        for mv in twins:
            if int(mv.registry_id) != kept:
                try:
                    self.client.delete_model_version(name, mv.registry_id)
                except MlflowException as exc:  # a retried delete: already gone
                    if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
        return str(kept)

    def _link_model(self, model_id: str, name: str, registry_id: str) -> None:
        """List the version on its logged model (`mlflow.modelVersions`, the model page's
        "Registered versions"): a tracking server does it itself, the embedded store not."""
        import json

        tags = self.client.get_logged_model(model_id).tags
        linked = json.loads(tags.get("mlflow.modelVersions") or "[]")
        entry = {"name": name, "version": registry_id}
        if entry not in linked:
            self.client.set_logged_model_tags(
                model_id, {"mlflow.modelVersions": json.dumps([*linked, entry])})

    def versions(self, name: str) -> list[ModelVersion]:
        """Every registered version of `name` (none for a model never registered)."""
        return self._versions(name)

    def get(self, name: str, version: str) -> ModelVersion:
        for mv in self._versions(name):
            if mv.version == version:
                return mv
        known = ", ".join(v.version for v in self._versions(name)) or "(none)"
        raise UsageError(f"{name} has no version {version}; registered: {known}")

    def download(self, mv: ModelVersion, dest: Path) -> Path:
        """Fetch the version's files into a fresh folder beside `dest`, check them against
        its manifest (no unlisted file either), and only then put them in place of `dest`."""
        import mlflow

        with staging_beside(dest) as staging:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source,
                                                             dst_path=str(staging)))
            verify_manifest(local, mv.digest)
            put_in_place(local, dest)
        return dest

    def set_alias(self, name: str, alias: str, mv: ModelVersion) -> None:
        """The `<env>` alias the MLflow UI shows (and `models:/<name>@<env>` resolves)."""
        self.client.set_registered_model_alias(name, alias, mv.registry_id)
