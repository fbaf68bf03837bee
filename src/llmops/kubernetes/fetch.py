"""The init container's fetch: a registered version's files from GitLab's package API,
checked with `llmops.digests.verify_manifest`, the check every local deploy runs, and its
signature with `llmops.signatures.verify` against the identities the manifests trust.

It runs in the pipeline image (`kubernetes.fetch_image`: Python with model-signing, from
requirements/pipeline.lock); the manifests ship this module and those it imports
(`llmops.digests`, `llmops.errors`, `llmops.redirects`, `llmops.signatures`) and the trusted
public keys in a ConfigMap, so it needs no llmops installed.
Files land in a fresh folder beside the destination and are renamed into place only once
the whole version verifies; a path in the manifest that would leave the folder is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPMessage
from pathlib import Path
from typing import IO

# safe_relative is the one path check every fetch and verify uses (re-exported here).
from llmops.digests import MANIFEST, SIGNATURE, checked_manifest, safe_relative, verify_manifest
from llmops.errors import StageFailed
from llmops.redirects import redirect_refusal, same_origin
from llmops.signatures import Trusted, verify

__all__ = ["TokenRedirects", "fetch", "main", "safe_relative", "shipped_sources"]

# What the ConfigMap carries, and where each file goes under the scripts volume.
SHIPPED = {"errors.py": "llmops/errors.py", "digests.py": "llmops/digests.py",
           "redirects.py": "llmops/redirects.py", "signatures.py": "llmops/signatures.py",
           "fetch.py": "llmops/kubernetes/fetch.py", "init.py": "llmops/__init__.py",
           "kubernetes_init.py": "llmops/kubernetes/__init__.py",
           # Not the fetch's: the vLLM container's key guard (`--middleware`).
           "keyguard.py": "llmops_keyguard.py"}
# Where the ConfigMap's trust entries land in the pod (`shipped_trust`).
TRUST_DIR = "/scripts/trust"
TRUST_FILE = "trust.json"


def shipped_sources() -> dict[str, str]:
    """ConfigMap data: this module and what it imports, by key."""
    package = Path(__file__).resolve().parents[1]
    return {"errors.py": (package / "errors.py").read_text(),
            "digests.py": (package / "digests.py").read_text(),
            "redirects.py": (package / "redirects.py").read_text(),
            "signatures.py": (package / "signatures.py").read_text(),
            "fetch.py": Path(__file__).read_text(), "init.py": "", "kubernetes_init.py": "",
            "keyguard.py": (package / "serve" / "guard" / "llmops_keyguard.py").read_text()}


def shipped_trust(trust: list[Trusted], root: str = TRUST_DIR) -> dict[str, str]:
    """ConfigMap data (key → text) for the trusted identities: each public key and
    certificate as `trust-<n>.pem`, and `trust.json` naming them as the pod sees them
    (under `root`, where the keys are mounted as `trust/<n>.pem`)."""
    data: dict[str, str] = {}
    entries = []
    for t in trust:
        files = []
        for path in ([t.key] if t.key else []) + list(t.chain):
            key = f"trust-{len(data)}.pem"
            data[key] = path.read_text()
            files.append(f"{root}/{key.removeprefix('trust-')}")
        entries.append(Trusted(Path(files[0]) if t.key else None,
                               tuple(Path(f) for f in files) if t.chain else (),
                               t.identity, t.issuer).as_json())
    data[TRUST_FILE] = json.dumps(entries, indent=1)
    return data


def trust_items(data: dict[str, str]) -> list[dict[str, str]]:
    """The ConfigMap items that mount `shipped_trust`'s entries under trust/."""
    return [{"key": key, "path": f"trust/{key.removeprefix('trust-')}"}
            for key in data if key.startswith("trust-")] + \
        [{"key": TRUST_FILE, "path": f"trust/{TRUST_FILE}"}]


class TokenRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only where `redirect_refusal` allows it, and sends the token again
    only to the origin first asked: urllib would copy it to any target, http included."""

    def __init__(self, first: str, token: str) -> None:
        super().__init__()
        self.first, self.token = first, token

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: HTTPMessage,
                         newurl: str) -> urllib.request.Request | None:
        refusal = redirect_refusal(self.first, newurl)
        if refusal is not None:
            fp.close()
            raise StageFailed(refusal)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        # The token is an unredirected header: urllib leaves it behind on every redirect.
        if new is not None and same_origin(self.first, newurl):
            new.add_unredirected_header("Authorization", f"Bearer {self.token}")
        return new


def _get_if_there(url: str, token: str) -> bytes | None:
    """The file's bytes, or None where the registry has none (404)."""
    try:
        return _get(url, token)
    except StageFailed as exc:
        if isinstance(exc.__cause__, urllib.error.HTTPError) and exc.__cause__.code == 404:
            return None
        raise


def _get(url: str, token: str) -> bytes:
    request = urllib.request.Request(url)
    request.add_unredirected_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(TokenRedirects(url, token))
    try:
        with opener.open(request, timeout=600) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise StageFailed(f"GET {url.split('?')[0]}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise StageFailed(f"GET {url.split('?')[0]}: {exc.reason}") from exc


def fetch(api: str, token: str, model: str, version: str, expected_digest: str,
          dest: Path, trust: list[Trusted]) -> tuple[int, str]:
    """Download `model` `version` (its SemVer alias) into `dest`, its files checked against
    the digest and its signature against `trust`: the number of files, and who signed."""
    api = api.rstrip("/")
    query = urllib.parse.urlencode({"name": model, "alias": version})
    found = json.loads(_get(f"{api}/ml/mlflow/api/2.0/mlflow/registered-models/alias?{query}",
                            token))
    files_url = f"{api}/packages/ml_models/{found['model_version']['version']}/files"
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        manifest = _get(f"{files_url}/{MANIFEST}", token)
        # Checked against the digest, and every path, before anything is written.
        listed = checked_manifest(manifest, expected_digest, f"{model} {version} {MANIFEST}")
        (staging / MANIFEST).write_bytes(manifest)
        for rel in listed:
            target = staging / safe_relative(rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_get(f"{files_url}/{urllib.parse.quote(rel)}", token))
        signature = _get_if_there(f"{files_url}/{SIGNATURE}", token)
        if signature is not None:  # none: `verify` says the version is unsigned
            (staging / SIGNATURE).write_bytes(signature)
        verify_manifest(staging, expected_digest)
        signer = verify(staging, trust, f"{model} {version}")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(listed), signer


def main() -> int:
    env = os.environ
    try:
        trust_file = Path(env.get("TRUST_FILE", f"{TRUST_DIR}/{TRUST_FILE}"))
        if not trust_file.is_file():
            raise StageFailed(f"{trust_file}: missing, so no signer can be trusted")
        trust = [Trusted.from_json(t) for t in json.loads(trust_file.read_text())]
        count, signer = fetch(env["REGISTRY_API"], env["REGISTRY_TOKEN"], env["MODEL"],
                              env["VERSION"], env["EXPECTED_DIGEST"],
                              Path(env.get("MODEL_DIR", "/models/adapter")), trust)
    except StageFailed as exc:
        print(f"refusing to serve: {exc}", file=sys.stderr)
        return 1
    print(f"verified {count} files, signed by {signer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
