"""sha256 of files and folders, and the manifest that binds a folder's files to one digest.

Shared by the registry (versions), derived weight folders and the data gate's cache keys.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llmops.errors import StageFailed

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (its manifest.json aside), by relative path."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


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


def verify_manifest(folder: Path, expected_digest: str) -> None:
    """Refuse a folder whose files, or whose manifest, do not match the registered digest."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise StageFailed(f"{folder}: no {MANIFEST}; refusing to serve unverified files")
    body = manifest.read_text().rstrip("\n")
    if "sha256:" + hashlib.sha256(body.encode()).hexdigest() != expected_digest:
        raise StageFailed(f"{manifest}: digest differs from the registered {expected_digest}")
    if path := first_mismatch(folder, json.loads(body)["files"]):
        raise StageFailed(f"{path}: sha256 mismatch against the manifest; refusing to serve")
