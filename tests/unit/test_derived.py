"""Derived weight folders (merged, int8): built once, never half-written, checked against
their own manifest before they are served again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmops.config import ServeSettings
from llmops.errors import StageFailed
from llmops.models import derived
from llmops.serve import process as serve


class Builder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        (folder / "config.json").write_text("{}")
        (folder / "weights.bin").write_bytes(b"w" * 64)


def test_built_once_with_a_manifest_of_its_files(tmp_path: Path) -> None:
    build = Builder()
    out = derived.built_once(tmp_path / "merged", build)
    assert derived.built_once(tmp_path / "merged", build) == out and build.calls == 1
    listed = json.loads((out / derived.DERIVED).read_text())["files"]
    assert sorted(listed) == ["config.json", "weights.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary folder left


def test_a_changed_file_is_rebuilt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build = Builder()
    out = derived.built_once(tmp_path / "merged", build)
    (out / "weights.bin").write_bytes(b"x" * 64)
    derived.built_once(out, build)
    assert build.calls == 2 and (out / "weights.bin").read_bytes() == b"w" * 64
    assert "weights.bin: sha256 differs" in capsys.readouterr().out


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("out of disk")

    with pytest.raises(RuntimeError, match="out of disk"):
        derived.built_once(tmp_path / "merged-w8a8", broken)
    assert list(tmp_path.iterdir()) == []


def test_verify_names_the_file_and_accepts_a_folder_without_manifest(tmp_path: Path) -> None:
    out = derived.built_once(tmp_path / "merged", Builder())
    derived.verify(out)
    (out / "weights.bin").unlink()
    with pytest.raises(StageFailed, match=r"weights.bin: missing, listed in .*derived.json"):
        derived.verify(out)
    older = tmp_path / "older"  # built before manifests: used as it was
    older.mkdir()
    derived.verify(older)


def test_a_rollback_refuses_changed_int8_weights_before_starting(tmp_path: Path) -> None:
    out = derived.built_once(tmp_path / "merged-w8a8", Builder())
    (out / "weights.bin").write_bytes(b"tampered")
    record = serve.Deployment("m", "local", "1.0.0", "m", "base", str(tmp_path), 0, 0,
                              ["--model", str(out), "--port", "1"], "")
    with pytest.raises(StageFailed, match=r"merged-w8a8/weights.bin: sha256 differs"):
        serve.restart(record, ServeSettings())
