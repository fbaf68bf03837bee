"""TEST DOUBLE: a local emulator of the GitLab API routes llmops uses. Tests only.

GitLab cannot run here, so this small HTTP server reproduces, for exactly the routes the
code calls, what GitLab does (checked against GitLab's Rails code, lib/api/ml/mlflow/ and
the ml_models package API):

- MLflow-compatible routes under /projects/:id/ml/mlflow/api/2.0/mlflow/: successes are
  HTTP 200 (never 201); errors carry `error_code` in the body with 400/404, or with 200
  when `errors_as_200` is set (as DESIGN.md describes some GitLab versions);
- versions need SemVer in the tag `gitlab.version`; `version` in answers is a database id,
  `aliases` holds the SemVer; no version delete, no alias setting, no version search;
- files: PUT/GET /projects/:id/packages/ml_models/:model_version_id/files/(*path/):name,
  201 on upload, 400 "File is too large" past the size limit; a second PUT of the same
  path adds a second package file (as GitLab does): `duplicate_files()` counts them;
- branches, commits with actions, merge requests (create, get, merge), raw files, releases;
- 401 without a token; the CI job token is accepted on the package routes only;
- object storage (`object_storage=<host>`): as GitLab with packages in object storage and
  `proxy_download` off (its default), a package file GET is answered with a 302 to a
  pre-signed URL on a second server, `gl.store` (`object_storage_emulator.ObjectStore`),
  announced as http://<host>:<port>; `state.proxy_download = True` makes GitLab stream
  the file itself again;
- fault injection: `fail_next(method, pattern, kind)` with kind "502" or "drop" (the
  connection is closed after reading part of the request body), or "lost" (the request
  is carried out, then the connection is closed before the answer: a lost response).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from object_storage_emulator import ObjectStore

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?"
                    r"(?:\+[0-9A-Za-z.-]+)?$")
PROJECT_ID = "1"


@dataclass
class Version:
    id: int
    name: str
    semver: str
    tags: list[dict[str, str]]
    description: str
    files: dict[str, list[bytes]] = field(default_factory=dict)


@dataclass
class State:
    """Everything the emulator holds; tests read it directly."""

    api_token: str = "glpat-emulator-api-token"
    job_token: str = "emulator-job-token"
    max_file_bytes: int = 5 * 1024**3
    errors_as_200: bool = False
    proxy_download: bool = False  # only read when the emulator has object storage
    models: dict[str, int] = field(default_factory=dict)
    versions: dict[int, Version] = field(default_factory=dict)
    branches: dict[str, dict[str, str]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict[str, Any]] = field(default_factory=list)
    # Branch → head commit id, and the files of every commit made here: a file can be read
    # at a commit id, and a commit can start from one (start_sha).
    heads: dict[str, str] = field(default_factory=dict)
    snapshots: dict[str, dict[str, str]] = field(default_factory=dict)
    merge_requests: dict[int, dict[str, Any]] = field(default_factory=dict)
    releases: list[dict[str, Any]] = field(default_factory=list)
    faults: list[tuple[str, re.Pattern[str], str]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # every request body, for leak checks
    next_id: int = 100

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


class GitlabEmulator:
    """Start with `with GitlabEmulator() as gl:`; `gl.url` is the GitLab base URL."""

    def __init__(self, object_storage: str | None = None, **state: Any) -> None:
        self.state = State(**state)
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"emulator": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.tracking_uri = f"{self.url}/api/v4/projects/{PROJECT_ID}/ml/mlflow"
        self.store = ObjectStore(object_storage, self._stored) if object_storage else None

    def __enter__(self) -> GitlabEmulator:
        for server in self._servers():
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers():
            server.shutdown()
            server.server_close()

    def _stored(self, version_id: int, rel: str) -> bytes | None:
        """A package file's bytes as the object store holds them (its last upload)."""
        with self.lock:
            version = self.state.versions.get(version_id)
            files = version.files.get(rel) if version else None
            return files[-1] if files else None

    def _servers(self) -> list[ThreadingHTTPServer]:
        return [self.server] + ([self.store.server] if self.store else [])

    def fail_next(self, method: str, pattern: str, kind: str) -> None:
        self.state.faults.append((method, re.compile(pattern), kind))

    def duplicate_files(self) -> int:
        return sum(len(v) - 1 for ver in self.state.versions.values() for v in ver.files.values())


class _Handler(BaseHTTPRequestHandler):
    emulator: GitlabEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # --- plumbing -------------------------------------------------------------------

    lose_answer = False  # set by a "lost" fault for the request in hand

    def _send(self, status: int, body: Any = None, raw: bytes | None = None) -> None:
        if self.lose_answer:  # the work is done; hang up instead of answering
            self.close_connection = True
            self.connection.shutdown(2)
            return
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None
                         else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, location: str) -> None:
        """As GitLab's `redirect` of a remote file: a 302, and no body to speak of."""
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _mlflow_error(self, code: str, status: int, message: str = "") -> None:
        st = self.emulator.state
        self._send(200 if st.errors_as_200 else status, {"error_code": code, "message": message})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.emulator.state.bodies.append(body)
        return body

    def _json(self) -> dict[str, Any]:
        raw = self._body()
        if not raw:
            return {}
        if "json" in (self.headers.get("Content-Type") or ""):
            return json.loads(raw)
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

    def _auth(self, package_route: bool) -> bool:
        st = self.emulator.state
        bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        if st.api_token in (self.headers.get("PRIVATE-TOKEN"), bearer):
            return True
        return package_route and self.headers.get("JOB-TOKEN") == st.job_token

    def _fault(self, method: str, path: str) -> bool:
        st = self.emulator.state
        for i, (m, pattern, kind) in enumerate(st.faults):
            if m == method and pattern.search(path):
                del st.faults[i]
                if kind == "lost":  # carry the request out; `_send` drops the answer
                    self.lose_answer = True
                    return False
                if kind == "drop":  # read part of the body, then hang up
                    self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 64))
                    self.close_connection = True
                    self.connection.shutdown(2)
                else:
                    self._body()
                    self._send(502, {"message": "502 Bad Gateway"})
                return True
        return False

    def _route(self, method: str) -> None:
        parsed = urlparse(self.path)
        path, query = parsed.path, {k: v[0] for k, v in parse_qs(parsed.query).items()}
        with self.emulator.lock:
            self.emulator.state.requests.append((method, path))
        if self._fault(method, path):
            return
        prefix = f"/api/v4/projects/{PROJECT_ID}"
        if not path.startswith(prefix):
            self._send(404, {"message": "404 Project Not Found"})
            return
        rest = path[len(prefix):]
        package = rest.startswith("/packages/ml_models/")
        if not self._auth(package):
            self._body()
            self._send(401, {"message": "401 Unauthorized"})
            return
        with self.emulator.lock:
            if rest.startswith("/ml/mlflow/api/2.0/mlflow/"):
                self._mlflow(method, rest.removeprefix("/ml/mlflow/api/2.0/mlflow/"), query)
            elif package:
                self._package(method, rest.removeprefix("/packages/ml_models/"))
            else:
                self._repository(method, rest, query)

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    # --- MLflow-compatible model registry ------------------------------------------

    def _present(self, v: Version) -> dict[str, Any]:
        return {"name": v.name, "version": str(v.id), "aliases": [v.semver], "tags": v.tags,
                "description": v.description, "current_stage": "development",
                "status": "READY", "source": f"/ml/models/{v.id}", "run_id": ""}

    def _mlflow(self, method: str, route: str, query: dict[str, str]) -> None:
        st = self.emulator.state
        body = self._json() if method == "POST" else {}
        if (method, route) == ("GET", "registered-models/get"):
            name = query.get("name", "")
            if name not in st.models:
                return self._mlflow_error("RESOURCE_DOES_NOT_EXIST", 404)
            return self._send(200, {"registered_model": {"name": name}})
        if (method, route) == ("POST", "registered-models/create"):
            name = body.get("name")
            if not name:
                return self._mlflow_error("INVALID_PARAMETER_VALUE", 400, "name is required")
            if name in st.models:
                return self._mlflow_error("RESOURCE_ALREADY_EXISTS", 400)
            st.models[name] = st.new_id()
            return self._send(200, {"registered_model": {"name": name}})
        if (method, route) == ("GET", "registered-models/alias"):
            for v in st.versions.values():
                if v.name == query.get("name") and v.semver == query.get("alias"):
                    return self._send(200, {"model_version": self._present(v)})
            return self._mlflow_error("RESOURCE_DOES_NOT_EXIST", 404)
        if (method, route) == ("POST", "model-versions/create"):
            name, tags = body.get("name"), body.get("tags") or []
            if name not in st.models:
                return self._mlflow_error("RESOURCE_DOES_NOT_EXIST", 404)
            semver = next((t["value"] for t in tags if t.get("key") == "gitlab.version"), None)
            if semver is None or not SEMVER.match(semver):
                return self._mlflow_error("INVALID_PARAMETER_VALUE", 400,
                                          "Version must be semantic version")
            if any(v.name == name and v.semver == semver for v in st.versions.values()):
                return self._mlflow_error("INVALID_PARAMETER_VALUE", 400,
                                          "Version has already been taken")
            v = Version(st.new_id(), name, semver, tags, body.get("description", ""))
            st.versions[v.id] = v
            return self._send(200, {"model_version": self._present(v)})
        if (method, route) == ("GET", "model-versions/get"):
            v = st.versions.get(int(query.get("version", "0") or 0))
            if v is None or v.name != query.get("name"):
                return self._mlflow_error("RESOURCE_DOES_NOT_EXIST", 404)
            return self._send(200, {"model_version": self._present(v)})
        return self._mlflow_error("ENDPOINT_NOT_FOUND", 404, f"{method} {route}")

    # --- ml_models package files -----------------------------------------------------

    def _package(self, method: str, rest: str) -> None:
        st = self.emulator.state
        match = re.fullmatch(r"(\d+)/files/(.+)", rest)
        version = st.versions.get(int(match[1])) if match else None
        if match is None or version is None:
            self._body()
            return self._send(404, {"message": "404 Not found"})
        rel = unquote(match[2])
        if method == "PUT":
            data = self._body()
            if len(data) > st.max_file_bytes:
                return self._send(400, {"message": "400 Bad request - File is too large"})
            version.files.setdefault(rel, []).append(data)
            return self._send(201, {"message": "201 Created"})
        if method == "GET":
            if rel not in version.files:
                return self._send(404, {"message": "404 Package file Not Found"})
            store = self.emulator.store
            if store is not None and not st.proxy_download:
                return self._redirect(store.presigned(version.id, rel))
            return self._send(200, raw=version.files[rel][-1])
        return self._send(405, {"message": "405 Method Not Allowed"})

    # --- repository, merge requests, releases ----------------------------------------

    def _project(self) -> dict[str, Any]:
        return {"id": int(PROJECT_ID), "default_branch": "main", "path_with_namespace":
                "team/llmops", "web_url": f"{self.emulator.url}/team/llmops"}

    def _head(self, branch: str) -> str:
        """The branch's head commit id (one is made up for a branch a test filled in)."""
        st = self.emulator.state
        if branch not in st.heads:
            st.heads[branch] = f"{st.new_id():040x}"
        return st.heads[branch]

    def _files_at(self, ref: str) -> dict[str, str] | None:
        """The files at a branch or a commit id; a head's are its branch's (tests edit those
        in place)."""
        st = self.emulator.state
        if ref in st.branches:
            return st.branches[ref]
        for branch, files in st.branches.items():
            if self._head(branch) == ref:
                return files
        return st.snapshots.get(ref)

    def _repository(self, method: str, rest: str, query: dict[str, str]) -> None:
        st = self.emulator.state
        body = self._json() if method in ("POST", "PUT") else {}
        if (method, rest) == ("GET", ""):
            return self._send(200, self._project())
        if (method, rest) == ("POST", "/repository/branches"):
            branch, ref = body.get("branch"), body.get("ref")
            if ref not in st.branches:
                return self._send(400, {"message": "Invalid reference name"})
            if branch in st.branches:
                return self._send(400, {"message": "Branch already exists"})
            st.branches[branch] = dict(st.branches[ref])
            st.heads[branch] = self._head(ref)
            return self._send(201, {"name": branch, "commit": {"id": st.heads[branch]}})
        match = re.fullmatch(r"/repository/branches/(.+)", rest)
        if method == "GET" and match:
            name = unquote(match[1])
            if name not in st.branches:
                return self._send(404, {"message": "404 Branch Not Found"})
            return self._send(200, {"name": name, "commit": {"id": self._head(name)}})
        if (method, rest) == ("POST", "/repository/commits"):
            # As GitLab: `start_branch`/`start_sha` start the branch from there; a branch
            # that exists already is refused unless `force`, which resets it onto the start.
            branch = body.get("branch", "")
            start = body.get("start_sha") or body.get("start_branch")
            if start is not None and start != branch:
                base = self._files_at(start)
                if base is None:
                    return self._send(400, {"message": f"Invalid reference {start}"})
                if branch in st.branches and not body.get("force"):
                    return self._send(400, {"message": f"A branch called '{branch}' already "
                                            "exists. Switch to that branch in order to make "
                                            "changes"})
            else:
                base = st.branches.get(branch)
                if base is None:
                    return self._send(400, {"message": "You can only create or edit files "
                                                       "when you are on a branch"})
            files = dict(base)  # a commit is all or nothing
            for action in body.get("actions") or []:
                path = action["file_path"]
                if action["action"] == "create" and path in files:
                    return self._send(400, {"message": "A file with this name already exists"})
                if action["action"] == "update" and path not in files:
                    return self._send(400, {"message": "A file with this name doesn't exist"})
                files[path] = action.get("content", "")
            commit = {"id": f"{st.new_id():040x}", "message": body.get("commit_message", "")}
            st.commits.append(commit)
            st.branches[branch], st.heads[branch] = files, commit["id"]
            st.snapshots[commit["id"]] = dict(files)
            return self._send(201, commit)
        match = re.fullmatch(r"/repository/files/(.+)/raw", rest)
        if method == "GET" and match:
            files = self._files_at(query.get("ref", "main")) or {}
            path = unquote(match[1])
            if path not in files:
                return self._send(404, {"message": "404 File Not Found"})
            return self._send(200, raw=files[path].encode())
        if (method, rest) == ("GET", "/merge_requests"):  # filters as GitLab's list
            keys = ("state", "source_branch", "target_branch")
            return self._send(200, [mr for mr in st.merge_requests.values()
                                    if all(query.get(k) in (None, mr[k]) for k in keys)])
        if (method, rest) == ("POST", "/merge_requests"):
            for mr in st.merge_requests.values():  # GitLab: one open MR per source → target
                if mr["state"] == "opened" and (mr["source_branch"], mr["target_branch"]) == (
                        body.get("source_branch"), body.get("target_branch")):
                    return self._send(409, {"message": [
                        "Another open merge request already exists for this source branch: "
                        f"!{mr['iid']}"]})
            iid = len(st.merge_requests) + 1
            st.merge_requests[iid] = {
                "iid": iid, "state": "opened", "title": body.get("title", ""),
                "description": body.get("description", ""),
                "source_branch": body.get("source_branch"),
                "target_branch": body.get("target_branch"),
                "web_url": f"{self.emulator.url}/team/llmops/-/merge_requests/{iid}"}
            return self._send(201, st.merge_requests[iid])
        match = re.fullmatch(r"/merge_requests/(\d+)(/merge)?", rest)
        if match and int(match[1]) in st.merge_requests:
            mr = st.merge_requests[int(match[1])]
            if method == "GET" and not match[2]:
                return self._send(200, mr)
            if method == "PUT" and not match[2]:  # update: title, description
                mr.update({k: body[k] for k in ("title", "description") if k in body})
                return self._send(200, mr)
            if method == "PUT" and match[2]:
                if mr["state"] != "opened":
                    return self._send(405, {"message": "405 Method Not Allowed"})
                st.branches[mr["target_branch"]].update(st.branches[mr["source_branch"]])
                st.heads[mr["target_branch"]] = f"{st.new_id():040x}"
                st.snapshots[st.heads[mr["target_branch"]]] = \
                    dict(st.branches[mr["target_branch"]])
                mr["state"] = "merged"
                return self._send(200, mr)
        if (method, rest) == ("POST", "/releases"):
            st.releases.append(body)
            return self._send(201, body)
        return self._send(404, {"message": f"404 Not Found: {method} {rest}"})
