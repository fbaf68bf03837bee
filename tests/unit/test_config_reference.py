"""docs/configuration.md is generated from the config schemas, and kept in step with them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from llmops.cli import commands
from llmops.cli.main import build_parser
from llmops.config import reference
from llmops.config.schema import Strict

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_the_generated_one() -> None:
    committed = (REPO / reference.OUT).read_text(encoding="utf-8")
    assert committed == reference.markdown(), \
        "docs/configuration.md is stale: run `llmops config-reference`"


def test_it_is_deterministic() -> None:
    assert reference.markdown() == reference.markdown()


def test_every_schema_model_and_field_is_documented() -> None:
    text = reference.markdown()
    for kind in reference.FILE_KINDS:
        assert f"## `{kind.path}`" in text
        for _path, model in reference.nested_models(kind.model):
            assert f": {model.__name__}\n" in text, model
            for name in model.model_fields:
                assert f"| `{name}` |" in text, f"{model.__name__}.{name}"
    # the nested models of deploy/<env>.yml, at the key path that reaches them
    for heading in ("`gpu`: GpuTarget", "`kubernetes`: KubernetesSettings",
                    "`kubernetes.clients[]`: NetworkPeer", "`serve`: ServeSettings",
                    "`verify.load`: LoadSettings", "`models.<key>`: Pin",
                    "`eval.golden[]`: GoldenSet", "`gates[]`: GateRule"):
        assert f"### {heading}" in text


class Inner(Strict):
    """An inner model."""

    depth: float = Field(default=0.5, gt=0, le=1, description="How deep.")


class Sample(Strict):
    """A model added to the schema: its docstring introduces its table."""

    mode: Literal["a", "b"] = Field(default="a", description="Which | mode.")
    name: str = Field(description="Required, so no default.")
    inner: list[Inner] = Field(default_factory=list, min_length=0)


def test_a_new_field_appears_with_type_default_and_description() -> None:
    section = reference.render_file(reference.FileKind("sample/<x>.yml", Sample))
    assert "## `sample/<x>.yml`" in section
    assert "### top level: Sample\n\nA model added to the schema: its docstring" in section
    assert '| `mode` | "a" \\| "b" | `"a"` | Which \\| mode. |' in section
    assert "| `name` | string | required | Required, so no default. |" in section
    assert "### `inner[]`: Inner\n\nAn inner model." in section
    assert "| `depth` | number (> 0, ≤ 1) | `0.5` | How deep. |" in section


def llmops(*argv: str) -> int:
    """The command as the CLI parses and dispatches it (without the process set-up)."""
    args = build_parser().parse_args(argv)
    return int(getattr(commands, args.func)(args))


def test_the_command_writes_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_ROOT", str(tmp_path))
    out = tmp_path / "ref.md"
    assert llmops("config-reference", "--out", str(out)) == 0
    assert out.read_text(encoding="utf-8") == reference.markdown()
    assert llmops("config-reference") == 0  # default: docs/configuration.md of the root
    assert (tmp_path / "docs" / "configuration.md").read_text(encoding="utf-8") \
        == reference.markdown()
