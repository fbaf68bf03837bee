"""Folders derived from verified files: the merged model, its int8 rewrite.

They are built once, into a temporary sibling renamed when complete (never half-written),
with a manifest of their own (`derived.json`): sha256 per file, and the folder they were
built from with that folder's digest (`source_digest`). Before one is served again it is
checked against both: `built_once` rebuilds a folder that no longer matches, or whose source
changed (another version's files downloaded into the same place), and a restart from a
recorded deployment (rollback) refuses it. A folder without derived.json is not trusted:
it is rebuilt (or, on a restart, refused). They live in the state folder (`served_cache`,
`deployed_cache`), never among a registered version's files, so their derived.json is a
record only this machine wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from llmops.config.paths import state_dir
from llmops.digests import DERIVED, file_digests, first_mismatch, sha256_file
from llmops.errors import StageFailed
from llmops.process import activity

__all__ = ["DERIVED", "built_once", "cache_key", "deployed_cache", "mismatch", "served_cache",
           "served_cache_root", "source_digest", "verify"]

# The only files a merge reads from an adapter folder: the training output and the copy
# shipped in a version (which holds reports, a card and a manifest too) agree on them.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def source_digest(folder: Path) -> str:
    """What a folder derived from `folder` is bound to: a derived folder's own derived.json
    (which pins its files), an adapter's config and weights (verified against the version's
    manifest before a deploy uses them), else every file of `folder`."""
    own = folder / DERIVED
    if own.is_file():
        return "sha256:" + sha256_file(own)
    files = {n: sha256_file(folder / n) for n in ADAPTER_FILES if (folder / n).is_file()}
    body = json.dumps(files or file_digests(folder), sort_keys=True)
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def mismatch(folder: Path, source: Path | None = None) -> str | None:
    """What in `folder` differs from its `derived.json`, or None. `source` is the folder it
    must have been built from (default: the one derived.json records)."""
    manifest = folder / DERIVED
    if not manifest.is_file():
        return f"{folder}: no {DERIVED}, so nothing ties it to the files it was built from"
    recorded = json.loads(manifest.read_text())
    built_from = recorded.get("source") or {}
    if not built_from.get("digest"):
        return f"{manifest}: records no source digest (built by an older llmops)"
    source = source or (folder / built_from.get("path", "..")).resolve()
    if not source.is_dir():
        return f"{manifest}: built from {source}, which is gone"
    if (current := source_digest(source)) != built_from["digest"]:
        return (f"{folder}: built from {source} at {built_from['digest']}, but that is now "
                f"{current}")
    path = first_mismatch(folder, recorded.get("files") or {})
    if path is None:
        return None
    return f"{path}: sha256 differs from {manifest}" if path.is_file() else \
        f"{path}: missing, listed in {manifest}"


def verify(folder: Path) -> None:
    """Refuse a derived folder whose files differ from its manifest, that has none, or
    whose source changed since it was built."""
    if problem := mismatch(folder):
        raise StageFailed(f"{problem}; refusing to serve it (deploy the version again to "
                          f"rebuild it)")


def built_once(out: Path, build: Callable[[Path], None], source: Path,
               reuse: Path | None = None) -> Path:
    """`out`, built from `source` by `build(folder)` if it is missing, no longer matches its
    manifest, or was built from other files than `source` holds now. `reuse`: a folder
    derived the same way elsewhere (evaluation's, `served_cache`); when it matches its own
    manifest and was built from files with `source`'s digest, its files are linked (or
    copied) instead of building them again."""
    if reuse is not None and reuse.resolve() != out.resolve() and reuse.is_dir() and \
            mismatch(reuse, source) is None:
        build = _linked_from(reuse)
    if out.exists():
        problem = mismatch(out, source)
        if problem is None:
            return out
        activity.tell(f"{problem}: rebuilding {out.name}/")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    built_from = {"path": os.path.relpath(source.resolve(), out.parent.resolve() / out.name),
                  "digest": source_digest(source)}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        build(tmp)
        (tmp / DERIVED).write_text(json.dumps({"files": file_digests(tmp),
                                               "source": built_from}, indent=2) + "\n")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _linked_from(folder: Path) -> Callable[[Path], None]:
    """A build that hard-links `folder`'s files (its manifest aside; copies where links
    cannot be made): same bytes, checked by the new folder's own manifest."""
    def build(out: Path) -> None:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.relative_to(folder) == Path(DERIVED):
                continue
            target = out / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    return build


def cache_key(base_model: str, adapter_dir: Path) -> str:
    """The folder name of an adapter's derived weights in `served_cache`: the digest of the
    adapter's files (`source_digest`) and of the base model's path."""
    body = f"{source_digest(adapter_dir)}\n{Path(base_model).resolve()}"
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def served_cache_root(model: str) -> Path:
    """`.llmops/eval/<model>/served/`: evaluation's derived weights, a folder per adapter."""
    return state_dir() / "eval" / model / "served"


def deployed_cache(model: str, base_model: str, adapter_dir: Path) -> Path:
    """Where a deployment builds the weights it serves for this adapter on its base:
    `.llmops/deployments/<model>/derived/<key>/`, beside the versions' folders, not in them."""
    return state_dir() / "deployments" / model / "derived" / cache_key(base_model, adapter_dir)


def served_cache(model: str, base_model: str, adapter_dir: Path) -> Path:
    """Where evaluation builds the weights it serves for this adapter on its base
    (`llmops.evaluation.served`: `merged/`, `merged-w8a8/`), which a deployment of the same
    adapter reuses (`built_once`'s `reuse`) instead of building them a second time."""
    return served_cache_root(model) / cache_key(base_model, adapter_dir)
