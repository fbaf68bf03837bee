"""Load a YAML file into a pydantic model, with errors that name the file, line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llmops.errors import UsageError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file; return the data and its node tree (for line numbers)."""
    if not path.is_file():
        raise UsageError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{where}: malformed YAML: {problem}") from exc
    return data, node


def line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest node along `loc` in a composed YAML tree."""
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
            if match is None:
                break
            line = next(k for k, v in node.value if v is match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(
            node.value
        ):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_model_file(path: Path, model: type[M]) -> M:
    """Validate a YAML file against `model`; a bad key raises UsageError naming file:line key."""
    data, node = read_yaml(path)
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise UsageError(format_validation_error(path, node, exc)) from exc


def format_validation_error(path: Path, node: yaml.Node | None, exc: ValidationError) -> str:
    """One line per pydantic error: `file:line: key.path: message`."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        line = line_of(node, loc)
        where = f"{path}:{line}" if line else str(path)
        key = ".".join(str(p) for p in loc) or "(top level)"
        lines.append(f"{where}: {key}: {err['msg']}")
    return "\n".join(lines)
