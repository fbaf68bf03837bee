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

RESOLVED = ServeSettings(dtype="bfloat16", quantization="none", kvcache_space_gib=1)


def adapter(tmp_path: Path, weights: bytes = b"a" * 16) -> Path:
    """A source folder: what a merge reads from an adapter, plus files it does not."""
    folder = tmp_path / "adapter"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "README.md").write_text("card")
    return folder


class Builder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        (folder / "config.json").write_text("{}")
        (folder / "weights.bin").write_bytes(b"w" * 64)


def test_built_once_with_a_manifest_of_its_files(tmp_path: Path) -> None:
    build, source = Builder(), adapter(tmp_path)
    out = derived.built_once(tmp_path / "merged", build, source)
    assert derived.built_once(tmp_path / "merged", build, source) == out and build.calls == 1
    listed = json.loads((out / derived.DERIVED).read_text())["files"]
    assert sorted(listed) == ["config.json", "weights.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged"]  # no temp left


def test_a_changed_file_is_rebuilt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build, source = Builder(), adapter(tmp_path)
    out = derived.built_once(tmp_path / "merged", build, source)
    (out / "weights.bin").write_bytes(b"x" * 64)
    derived.built_once(out, build, source)
    assert build.calls == 2 and (out / "weights.bin").read_bytes() == b"w" * 64
    assert "weights.bin: sha256 differs" in capsys.readouterr().out


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("out of disk")

    with pytest.raises(RuntimeError, match="out of disk"):
        derived.built_once(tmp_path / "merged-w8a8", broken, adapter(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_verify_names_the_missing_file(tmp_path: Path) -> None:
    out = derived.built_once(tmp_path / "merged", Builder(), adapter(tmp_path))
    derived.verify(out)
    (out / "weights.bin").unlink()
    with pytest.raises(StageFailed, match=r"weights.bin: missing, listed in .*derived.json"):
        derived.verify(out)


def test_a_folder_without_derived_json_is_not_trusted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing ties such a folder to the files it was built from: a restart refuses it, a
    deploy rebuilds it."""
    stale = tmp_path / "merged"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    (stale / "weights.bin").write_bytes(b"from some other version")
    with pytest.raises(StageFailed, match=r"no derived.json"):
        derived.verify(stale)
    build = Builder()
    derived.built_once(stale, build, adapter(tmp_path))
    assert build.calls == 1 and (stale / "weights.bin").read_bytes() == b"w" * 64
    assert "no derived.json" in capsys.readouterr().out
    derived.verify(stale)


def test_derived_json_records_its_source_and_a_changed_source_rebuilds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another version's adapter downloaded into the same folder: the merged weights built
    from the old one are refused on a restart and rebuilt on a deploy."""
    build, source = Builder(), adapter(tmp_path)
    out = derived.built_once(source / "merged", build, source)
    recorded = json.loads((out / derived.DERIVED).read_text())["source"]
    assert recorded == {"path": "..", "digest": derived.source_digest(source)}
    (source / "README.md").write_text("another card")  # not read by a merge: still bound
    derived.verify(out)
    (source / "adapter_model.safetensors").write_bytes(b"b" * 16)
    with pytest.raises(StageFailed, match=r"built from .*adapter at sha256:.*now sha256:"):
        derived.verify(out)
    derived.built_once(out, build, source)
    assert build.calls == 2 and "rebuilding merged/" in capsys.readouterr().out
    derived.verify(out)


def test_an_int8_folder_is_bound_to_the_merged_folder_it_came_from(tmp_path: Path) -> None:
    source = adapter(tmp_path)
    merged = derived.built_once(source / "merged", Builder(), source)
    int8 = derived.built_once(source / "merged-w8a8", Builder(), merged)
    assert json.loads((int8 / derived.DERIVED).read_text())["source"]["path"] == "../merged"
    # The merged folder rebuilt from a changed adapter: the int8 one no longer matches it.
    (source / "adapter_model.safetensors").write_bytes(b"c" * 16)
    derived.built_once(merged, Builder(), source)
    with pytest.raises(StageFailed, match=r"built from .*merged at"):
        derived.verify(int8)


def test_derived_json_without_a_source_is_rebuilt(tmp_path: Path) -> None:
    """A folder built by an older llmops (files listed, no source) is rebuilt once."""
    build, source = Builder(), adapter(tmp_path)
    out = derived.built_once(tmp_path / "merged", build, source)
    body = json.loads((out / derived.DERIVED).read_text())
    (out / derived.DERIVED).write_text(json.dumps({"files": body["files"]}))
    with pytest.raises(StageFailed, match="records no source digest"):
        derived.verify(out)
    derived.built_once(out, build, source)
    assert build.calls == 2


def test_a_rollback_refuses_changed_int8_weights_before_starting(tmp_path: Path) -> None:
    out = derived.built_once(tmp_path / "merged-w8a8", Builder(), adapter(tmp_path))
    (out / "weights.bin").write_bytes(b"tampered")
    record = serve.Deployment("m", "local", "1.0.0", "m", "base", str(tmp_path), 0, 0,
                              ["--model", str(out), "--port", "1"], "")
    with pytest.raises(StageFailed, match=r"merged-w8a8/weights.bin: sha256 differs"):
        serve.restart(record, RESOLVED)
