"""GitLab Model Registry backend: GitLab's MLflow-compatible API plus its ml_models files.

What GitLab really does, and how this backend copes:
- versions must be SemVer, passed as the tag `gitlab.version`; in responses `version` is
  a database id and `aliases` holds the SemVer, so a version is found by alias;
- errors carry an MLflow `error_code` in the body; some GitLab versions answer them with
  HTTP 200, so the body is checked whatever the status;
- `log_model` stores no files: files go through the package API
  `PUT /projects/:id/packages/ml_models/:model_version_id/files/(*path/):file_name`,
  which has a per-file size limit (5 GB on gitlab.com), checked before anything is created;
- no version delete and no alias setting: a version is created only when its files can all
  be uploaded, and an interrupted upload is completed by re-running (files already there
  are skipped; manifest.json goes last and marks the version complete).
python-gitlab has no model-registry manager, so this uses its raw `http_*` methods.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

import requests

from llmops.errors import StageFailed, UsageError
from llmops.registry.base import (
    MANIFEST,
    ModelVersion,
    parse_semver,
    verify_manifest,
    write_manifest,
)

T = TypeVar("T")
GITLAB_VERSION_TAG = "gitlab.version"
DEFAULT_MAX_FILE_BYTES = 5 * 1024**3


class MlflowApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def with_retries(call: Callable[[], T], what: str, attempts: int = 5,
                 first_wait_s: float = 0.5) -> T:
    """Retry 5xx answers, timeouts and dropped connections with exponential backoff;
    any other error (4xx) is raised at once."""
    import gitlab
    import requests

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except gitlab.exceptions.GitlabHttpError as exc:
            if (exc.response_code or 0) < 500 or attempt == attempts:
                raise
        except (requests.ConnectionError, requests.Timeout):
            if attempt == attempts:
                raise
        time.sleep(first_wait_s * 2 ** (attempt - 1))
    raise StageFailed(f"{what}: no attempt made")


class GitlabRegistry:
    """Models, versions and files in one GitLab project."""

    def __init__(self, url: str, project_id: str, token: str,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, retry_wait_s: float = 0.5) -> None:
        import gitlab

        self.gl = gitlab.Gitlab(url, private_token=token, retry_transient_errors=False,
                                timeout=120)
        self.project_id = project_id
        self.max_file_bytes = max_file_bytes
        self.retry_wait_s = retry_wait_s
        self._mlflow = f"/projects/{quote(str(project_id), safe='')}/ml/mlflow/api/2.0/mlflow"

    @classmethod
    def from_tracking_uri(cls, uri: str, token: str) -> GitlabRegistry:
        """`https://host/api/v4/projects/<id>/ml/mlflow` → a registry on that project."""
        base, _, rest = uri.partition("/api/v4/projects/")
        project = rest.split("/ml/mlflow")[0]
        if not base or not project:
            raise UsageError(f"not a GitLab MLflow URI: {uri} (want .../api/v4/projects/<id>/"
                             "ml/mlflow)")
        return cls(base, project, token)

    # --- the MLflow-compatible API -----------------------------------------------------

    def _call(self, method: str, route: str, **kw: Any) -> dict[str, Any]:
        import gitlab

        path = f"{self._mlflow}/{route}"
        fn = self.gl.http_get if method == "get" else self.gl.http_post
        try:
            body = with_retries(lambda: fn(path, **kw), route, first_wait_s=self.retry_wait_s)
        except gitlab.exceptions.GitlabAuthenticationError as exc:
            raise UsageError("GitLab refused the token (401): MLFLOW_TRACKING_TOKEN needs a "
                             "project access token with the api scope") from exc
        except gitlab.exceptions.GitlabHttpError as exc:
            body = _json_or_empty(exc.response_body)
            if "error_code" not in body:
                raise
        if isinstance(body, dict) and "error_code" in body:
            raise MlflowApiError(str(body["error_code"]), str(body.get("message", "")))
        return body if isinstance(body, dict) else {}

    def _version_by_alias(self, name: str, semver: str) -> dict[str, Any] | None:
        try:
            got = self._call("get", "registered-models/alias",
                             query_data={"name": name, "alias": semver})
        except MlflowApiError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return got.get("model_version")

    def _ensure_model(self, name: str) -> None:
        try:
            self._call("get", "registered-models/get", query_data={"name": name})
        except MlflowApiError as exc:
            if exc.code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self._call("post", "registered-models/create", post_data={"name": name})

    @staticmethod
    def _tags(raw: dict[str, Any]) -> dict[str, str]:
        return {t["key"]: t["value"] for t in raw.get("tags") or []}

    def _to_version(self, name: str, raw: dict[str, Any]) -> ModelVersion:
        tags = self._tags(raw)
        semver = tags.get(GITLAB_VERSION_TAG) or next(iter(raw.get("aliases") or []), "")
        return ModelVersion(name, semver, str(raw["version"]),
                            f"gitlab-ml-models:{raw['version']}", tags.get("run_id", ""),
                            tags.get("digest", ""), tags.get("base_model", ""), tags)

    # --- files -------------------------------------------------------------------------

    def _file_path(self, version_id: str, rel: str) -> str:
        return (f"/projects/{quote(str(self.project_id), safe='')}/packages/ml_models/"
                f"{version_id}/files/{quote(rel)}")

    def _has_file(self, version_id: str, rel: str) -> bool:
        import gitlab

        try:
            response = self._stream(version_id, rel)
        except gitlab.exceptions.GitlabHttpError as exc:
            if exc.response_code == 404:
                return False
            raise
        response.close()
        return True

    def _stream(self, version_id: str, rel: str) -> requests.Response:
        """GET a package file as a streamed response (the body is not read yet)."""
        response = with_retries(
            lambda: self.gl.http_get(self._file_path(version_id, rel), streamed=True), rel,
            first_wait_s=self.retry_wait_s)
        return cast(requests.Response, response)

    def _upload(self, version_id: str, folder: Path, rel: str) -> None:
        path = folder / rel

        def put() -> Any:
            with open(path, "rb") as fh:  # streamed from the file: shards can be GBs
                return self.gl.http_put(self._file_path(version_id, rel), post_data=fh,
                                        raw=True)

        with_retries(put, f"upload {rel}", first_wait_s=self.retry_wait_s)

    def _download(self, version_id: str, rel: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        response = self._stream(version_id, rel)
        with open(dest, "wb") as fh:
            for chunk in response.iter_content(1 << 20):
                fh.write(chunk)

    # --- the Registry role -------------------------------------------------------------

    def register(self, name: str, folder: Path, run_id: str, version: str | None,
                 lineage: dict[str, str]) -> ModelVersion:
        """Create (or complete) version `version` with every file of `folder`."""
        if version is None:
            raise UsageError("the gitlab registry cannot list versions: pass --version "
                             "(CI passes the tag)")
        parse_semver(version)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
        too_big = [p for p in files if p.stat().st_size > self.max_file_bytes]
        if too_big:
            raise UsageError(f"{too_big[0]}: {too_big[0].stat().st_size} bytes exceeds GitLab's "
                             f"per-file limit of {self.max_file_bytes}; shard it")
        digest = write_manifest(folder)
        self._ensure_model(name)
        raw = self._version_by_alias(name, version)
        if raw is not None:
            existing = self._tags(raw).get("digest")
            if existing != digest:
                raise UsageError(f"{name} {version} already exists in GitLab with different "
                                 f"content ({existing} != {digest}); pick another version")
        else:
            tags = [{"key": k, "value": v} for k, v in
                    {**lineage, "run_id": run_id, "digest": digest,
                     GITLAB_VERSION_TAG: version}.items()]
            raw = self._call("post", "model-versions/create",
                             post_data={"name": name, "tags": tags,
                                        "description": f"{name} {version}"})["model_version"]
        version_id = str(raw["version"])
        for path in [*files, folder / MANIFEST]:  # the manifest last: it marks completion
            rel = str(path.relative_to(folder))
            if not self._has_file(version_id, rel):
                self._upload(version_id, folder, rel)
        return self._to_version(name, {**raw, "tags": raw.get("tags") or []})

    def get(self, name: str, version: str) -> ModelVersion:
        raw = self._version_by_alias(name, version)
        if raw is None:
            raise UsageError(f"{name} has no version {version} in GitLab's model registry")
        return self._to_version(name, raw)

    def download(self, mv: ModelVersion, dest: Path) -> Path:
        """Fetch every file named by the manifest, then verify them against the digest."""
        version_id = mv.registry_id
        self._download(version_id, MANIFEST, dest / MANIFEST)
        for rel in json.loads((dest / MANIFEST).read_text())["files"]:
            self._download(version_id, rel, dest / rel)
        verify_manifest(dest, mv.digest)
        return dest


def _json_or_empty(body: Any) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}

