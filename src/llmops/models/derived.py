"""Folders derived from verified files: the merged model, its int8 rewrite.

They are built once, into a temporary sibling renamed when complete (never half-written),
with a manifest of their own files (`derived.json`: sha256 per file). Before one is served
again it is checked against that manifest: `built_once` rebuilds a folder that no longer
matches, and a restart from a recorded deployment (rollback) refuses it. A folder built
before these manifests has none and is used as it is, as it was then.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from llmops.errors import StageFailed

DERIVED = "derived.json"


def mismatch(folder: Path) -> str | None:
    """What in `folder` differs from its `derived.json`, or None."""
    from llmops.digests import first_mismatch

    manifest = folder / DERIVED
    if not manifest.is_file():
        return None
    path = first_mismatch(folder, json.loads(manifest.read_text())["files"])
    if path is None:
        return None
    return f"{path}: sha256 differs from {manifest}" if path.is_file() else \
        f"{path}: missing, listed in {manifest}"


def verify(folder: Path) -> None:
    """Refuse a derived folder whose files differ from its manifest."""
    if problem := mismatch(folder):
        raise StageFailed(f"{problem}; refusing to serve it (deploy the version again to "
                          f"rebuild it)")


def built_once(out: Path, build: Callable[[Path], None]) -> Path:
    """`out`, built by `build(folder)` if it is missing or no longer matches its manifest."""
    from llmops.digests import file_digests

    if (out / "config.json").is_file():
        problem = mismatch(out)
        if problem is None:
            return out
        print(f"{problem}: rebuilding {out.name}/", flush=True)
        shutil.rmtree(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        build(tmp)
        (tmp / DERIVED).write_text(json.dumps({"files": file_digests(tmp)}, indent=2) + "\n")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
