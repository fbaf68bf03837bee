"""sha256 of files and folders, and the manifest that binds a folder's files to one digest.

Shared by the registry (versions), derived weight folders and the data gate's cache keys,
and shipped into the init container (`llmops.kubernetes.fetch`): standard library only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from llmops.errors import StageFailed

MANIFEST = "manifest.json"
# A folder built from a version's files at deploy time (merged, int8) carries its own
# manifest of this name (`llmops.models.derived`). It lives in the state folder, outside the
# version's files: the registry's content can never bring one in.
DERIVED = "derived.json"
# The version's signature (`llmops.signatures`): beside the manifest, not listed in it, so
# that the version's digest does not depend on who signed it.
SIGNATURE = "model.sig"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (its manifest.json and signature aside), by
    relative path."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST and p != folder / SIGNATURE}


def folder_digest(folder: Path) -> str:
    """One digest for every file of `folder` (a base model's identity, e.g.)."""
    body = json.dumps(file_digests(folder), sort_keys=True)
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def first_mismatch(folder: Path, files: dict[str, str]) -> Path | None:
    """The first of `files` (relative path → sha256) missing from `folder` or changed."""
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file() or sha256_file(path) != want:
            return path
    return None


def write_manifest(folder: Path) -> str:
    """Write manifest.json (sha256 of every file) and return the manifest's own digest."""
    files = file_digests(folder)
    body = json.dumps({"files": files}, indent=2, sort_keys=True)
    (folder / MANIFEST).write_text(body + "\n")
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def safe_relative(rel: str) -> PurePosixPath:
    """A manifest path that stays inside the destination (no absolute path, `..`, `\\`,
    nothing empty, not the manifest itself): the one check for every fetch and verify."""
    path = PurePosixPath(rel)
    if not rel or "\\" in rel or path.is_absolute() or ".." in path.parts \
            or not path.parts or str(path) == MANIFEST:
        raise StageFailed(f"{MANIFEST} lists {rel!r}, a path outside the model folder; "
                          "refusing to fetch or serve this version (re-register it)")
    return path


def inside(folder: Path, rel: str) -> Path:
    """`folder / rel`, refused when `rel` is unsafe or resolves (through a link) outside."""
    path = folder / safe_relative(rel)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise StageFailed(f"{path}: resolves outside {folder} (a link?); refusing to serve it")
    return path


def checked_manifest(body: bytes, expected_digest: str, where: str) -> dict[str, str]:
    """The files (relative path → sha256) of a manifest's raw bytes, parsed only after the
    bytes match the registered digest, and only when every path stays inside the folder."""
    text = body.decode("utf-8", errors="replace").rstrip("\n")
    if "sha256:" + hashlib.sha256(text.encode()).hexdigest() != expected_digest:
        raise StageFailed(f"{where}: digest differs from the registered {expected_digest}; "
                          "refusing to serve it")
    files = json.loads(text).get("files")
    if not isinstance(files, dict):
        raise StageFailed(f"{where}: no `files` mapping; refusing to serve it")
    for rel in files:
        safe_relative(rel)
    return {str(k): str(v) for k, v in files.items()}


def unlisted(folder: Path, files: dict[str, str]) -> Path | None:
    """The first file under `folder` its manifest does not list (its signature aside): vLLM
    loads every weight file of a folder, so a stray one would be served unverified."""
    listed = {PurePosixPath(rel) for rel in files} | {PurePosixPath(MANIFEST),
                                                      PurePosixPath(SIGNATURE)}
    for path in sorted(folder.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        if PurePosixPath(path.relative_to(folder).as_posix()) not in listed:
            return path
    return None


def verify_manifest(folder: Path, expected_digest: str) -> None:
    """Refuse a folder whose manifest does not match the registered digest, whose listed
    files are missing or changed, or that holds a file the manifest does not list."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise StageFailed(f"{folder}: no {MANIFEST}; refusing to serve unverified files")
    files = checked_manifest(manifest.read_bytes(), expected_digest, str(manifest))
    for rel in files:
        inside(folder, rel)
    if path := first_mismatch(folder, files):
        raise StageFailed(f"{path}: sha256 mismatch against the manifest; refusing to serve")
    if path := unlisted(folder, files):
        raise StageFailed(f"{path}: not listed in {manifest}; refusing to serve files the "
                          "registry did not record (deploy the version again for a clean "
                          "copy)")
