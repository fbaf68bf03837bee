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
python-gitlab has no model-registry manager, so this uses its raw `http_*` methods, on a
`TokenSafeSession`: with object storage GitLab redirects a file download to a pre-signed
URL on another host, where the token must not follow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

import requests

from llmops.digests import SIGNATURE, checked_manifest, inside
from llmops.errors import StageFailed, UsageError
from llmops.redirects import redirect_refusal, same_origin
from llmops.registry.base import (
    MANIFEST,
    ModelVersion,
    parse_semver,
    put_in_place,
    staging_beside,
    verify_manifest,
)
from llmops.registry.signing import seal

T = TypeVar("T")
GITLAB_VERSION_TAG = "gitlab.version"
DEFAULT_MAX_FILE_BYTES = 5 * 1024**3
# Every header python-gitlab authenticates with (private, job or OAuth token).
TOKEN_HEADERS = ("PRIVATE-TOKEN", "JOB-TOKEN", "Authorization")


class TokenSafeSession(requests.Session):
    """Redirects under `redirect_refusal`, and the token only to the origin first asked:
    requests alone strips `Authorization` across hosts, never PRIVATE-TOKEN or JOB-TOKEN."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest,
                     response: requests.Response) -> None:
        # requests calls this before each redirected request is sent; `response` is the
        # redirect, and its history the earlier ones: the first of them was asked first.
        first = str((response.history[0] if response.history else response).request.url)
        target = str(prepared_request.url)
        refusal = redirect_refusal(first, target)
        if refusal is not None:
            raise StageFailed(refusal)
        if not same_origin(first, target):
            for name in TOKEN_HEADERS:
                prepared_request.headers.pop(name, None)
        super().rebuild_auth(prepared_request, response)


class MlflowApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


ATTEMPTS = 5


def transient(exc: BaseException | None) -> bool:
    """A 5xx answer, a timeout or a dropped connection: worth another attempt. For a create,
    the request may still have been carried out (only the answer was lost)."""
    import gitlab

    if isinstance(exc, gitlab.exceptions.GitlabHttpError):
        return (exc.response_code or 0) >= 500
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def with_retries(call: Callable[[], T], what: str, attempts: int = ATTEMPTS,
                 first_wait_s: float = 0.5) -> T:
    """Retry 5xx answers, timeouts and dropped connections with exponential backoff;
    any other error (4xx) is raised at once. Never around a create, whose answer may be lost
    after it was carried out: creates go through `GitlabRegistry._create`."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not transient(exc) or attempt == attempts:
                raise
        time.sleep(first_wait_s * 2 ** (attempt - 1))
    raise StageFailed(f"{what}: no attempt made")


class GitlabRegistry:
    """Models, versions and files in one GitLab project."""

    def __init__(self, url: str, project_id: str, token: str,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES, retry_wait_s: float = 0.5,
                 timeout_s: float = 120.0, signing_env: Mapping[str, str] | None = None) -> None:
        import gitlab

        # Every request has a timeout (per connect and per read, so multi-GB uploads are
        # fine): a stalled GitLab fails the job instead of hanging it.
        self.gl = gitlab.Gitlab(url, private_token=token, retry_transient_errors=False,
                                timeout=timeout_s, session=TokenSafeSession())
        self.project_id = project_id
        self.max_file_bytes = max_file_bytes
        self.retry_wait_s = retry_wait_s
        self.signing_env = dict(signing_env or {})  # who signs (Settings.signing)
        self._mlflow = f"/projects/{quote(str(project_id), safe='')}/ml/mlflow/api/2.0/mlflow"

    @classmethod
    def from_tracking_uri(cls, uri: str, token: str,
                          signing_env: Mapping[str, str] | None = None) -> GitlabRegistry:
        """`https://host/api/v4/projects/<id>/ml/mlflow` → a registry on that project."""
        base, _, rest = uri.partition("/api/v4/projects/")
        project = rest.split("/ml/mlflow")[0]
        if not base or not project:
            raise UsageError(f"not a GitLab MLflow URI: {uri} (want .../api/v4/projects/<id>/"
                             "ml/mlflow)")
        return cls(base, project, token, signing_env=signing_env)

    # --- the MLflow-compatible API -----------------------------------------------------

    def _call(self, method: str, route: str, attempts: int = ATTEMPTS,
              **kw: Any) -> dict[str, Any]:
        """One MLflow API call; `attempts=1` for a create (see `_create`)."""
        import gitlab

        path = f"{self._mlflow}/{route}"
        fn = self.gl.http_get if method == "get" else self.gl.http_post
        try:
            body = with_retries(lambda: fn(path, **kw), route, attempts=attempts,
                                first_wait_s=self.retry_wait_s)
        except gitlab.exceptions.GitlabAuthenticationError as exc:
            raise UsageError("GitLab refused the token (401): MLFLOW_TRACKING_TOKEN needs a "
                             "project access token with the api scope") from exc
        except gitlab.exceptions.GitlabHttpError as exc:
            error = _json_or_empty(exc.response_body)
            if "error_code" not in error:
                raise
            # Chained, so that `_create` still sees whether the failure was transient.
            raise MlflowApiError(str(error["error_code"]), str(error.get("message", ""))) \
                from exc
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
        if self._model(name) is None:
            self._create("registered-models/create", {"name": name},
                         lambda: self._model(name), f"model {name}")

    def _model(self, name: str) -> dict[str, Any] | None:
        try:
            got = self._call("get", "registered-models/get", query_data={"name": name})
        except MlflowApiError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return dict(got.get("registered_model") or {"name": name})

    def _create(self, route: str, data: dict[str, Any],
                find: Callable[[], dict[str, Any] | None], what: str) -> dict[str, Any]:
        """POST a create, never blindly twice: GitLab may have carried out a create whose
        answer was lost (a dropped connection, a 502 from a proxy, a timeout), and a repeat
        would then fail ("already taken") or make a second one. So after a failure `find`
        looks for it first, and only a transient failure with nothing found is tried again.
        Returns the answer's body, or what `find` found."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return self._call("post", route, attempts=1, post_data=data)
            except UsageError:  # a refused token: nothing was created
                raise
            except Exception as exc:
                found = find()
                if found is not None:
                    return found
                if not (transient(exc) or transient(exc.__cause__)) or attempt == ATTEMPTS:
                    raise
            time.sleep(self.retry_wait_s * 2 ** (attempt - 1))
        raise StageFailed(f"create {what}: no attempt made")

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
        response = self._missing_is_incomplete(version_id, rel)
        with open(dest, "wb") as fh:
            for chunk in response.iter_content(1 << 20):
                fh.write(chunk)

    def _missing_is_incomplete(self, version_id: str, rel: str) -> requests.Response:
        """The streamed file; a 404 means the version's upload never finished."""
        import gitlab

        try:
            return self._stream(version_id, rel)
        except gitlab.exceptions.GitlabHttpError as exc:
            if exc.response_code == 404:
                raise StageFailed(f"GitLab model version id {version_id} has no file {rel}: "
                                  "its upload was interrupted; run `llmops register` again "
                                  "with the same --version to complete it") from exc
            raise

    def _manifest(self, mv: ModelVersion) -> tuple[bytes, dict[str, str]]:
        """The manifest's bytes, read into memory and checked against the version's digest
        before they are parsed, and the files it lists (every path checked)."""
        if not mv.digest.startswith("sha256:"):
            raise StageFailed(f"{mv.name} {mv.version} has no digest tag in GitLab: it was "
                              "never sealed; register it again")
        response = self._missing_is_incomplete(mv.registry_id, MANIFEST)
        body = response.content
        return body, checked_manifest(body, mv.digest,
                                      f"{mv.name} {mv.version} {MANIFEST} in GitLab")

    # --- the Registry role -------------------------------------------------------------

    def register(self, name: str, folder: Path, run_id: str, version: str | None,
                 lineage: dict[str, str]) -> ModelVersion:
        """Create (or complete) version `version` with every file of `folder`.

        Idempotent: run again with the same files (a retry after a lost answer, a re-run
        after an interrupted upload), it completes and returns the same version.
        """
        if version is None:
            raise UsageError("the gitlab registry cannot list versions: pass --version "
                             "(CI passes the tag)")
        parse_semver(version)
        listed = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST
                        and p != folder / SIGNATURE)
        too_big = [p for p in listed if p.stat().st_size > self.max_file_bytes]
        if too_big:
            raise UsageError(f"{too_big[0]}: {too_big[0].stat().st_size} bytes exceeds GitLab's "
                             f"per-file limit of {self.max_file_bytes}; shard it")
        digest, signed = seal(folder, self.signing_env)
        lineage = {**lineage, **signed}
        self._ensure_model(name)

        def made() -> dict[str, Any] | None:
            raw = self._version_by_alias(name, version)
            return None if raw is None else {"model_version": raw}

        raw = self._version_by_alias(name, version)
        if raw is None:
            tags = [{"key": k, "value": v} for k, v in
                    {**lineage, "run_id": run_id, "digest": digest,
                     GITLAB_VERSION_TAG: version}.items()]
            raw = self._create("model-versions/create",
                               {"name": name, "tags": tags, "description": f"{name} {version}"},
                               made, f"{name} {version}")["model_version"]
        # Found, or made meanwhile by another job: it must hold these very files.
        existing = self._tags(raw).get("digest")
        if existing != digest:
            raise UsageError(f"{name} {version} already exists in GitLab with different "
                             f"content ({existing} != {digest}); pick another version")
        version_id = str(raw["version"])
        # The manifest last: it marks completion. A signature already there (a retry's
        # first try) is kept: it signed these very files.
        for path in [*listed, folder / SIGNATURE, folder / MANIFEST]:
            rel = str(path.relative_to(folder))
            if not self._has_file(version_id, rel):
                self._upload(version_id, folder, rel)
        return self._to_version(name, {**raw, "tags": raw.get("tags") or []})

    def get(self, name: str, version: str) -> ModelVersion:
        """The version, only when complete: its tags are set before its files are uploaded
        (GitLab has no version delete), so an interrupted upload leaves a version whose
        digest tag is set but whose manifest or files are missing."""
        raw = self._version_by_alias(name, version)
        if raw is None:
            raise UsageError(f"{name} has no version {version} in GitLab's model registry")
        mv = self._to_version(name, raw)
        _, files = self._manifest(mv)
        for rel in files:
            if not self._has_file(mv.registry_id, rel):
                raise StageFailed(f"{name} {version} is incomplete in GitLab: {rel} is listed "
                                  f"in its {MANIFEST} but missing; run `llmops register` "
                                  f"again with --version {version} to complete it")
        return mv

    def set_alias(self, name: str, alias: str, mv: ModelVersion) -> None:
        """GitLab's model registry keeps no aliases: registry/<env>.yml, changed by merge
        request, is what names the version an environment serves."""

    def download(self, mv: ModelVersion, dest: Path) -> Path:
        """Fetch exactly the files the (verified) manifest lists into a fresh folder beside
        `dest`, verify them, and only then put that folder in place of `dest`: nothing is
        written outside it, nothing stale or unlisted is left in it, and a failure leaves
        no half-fetched files."""
        body, files = self._manifest(mv)
        with staging_beside(dest) as staging:
            (staging / MANIFEST).write_bytes(body)
            for rel in files:
                self._download(mv.registry_id, rel, inside(staging, rel))
            if self._has_file(mv.registry_id, SIGNATURE):  # checked where it is served
                self._download(mv.registry_id, SIGNATURE, staging / SIGNATURE)
            verify_manifest(staging, mv.digest)
            put_in_place(staging, dest)
        return dest


def _json_or_empty(body: Any) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}

