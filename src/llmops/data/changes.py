"""Which models a change touches, so that a merge request's pipeline validates the data of
those models only (`llmops validate-data --changed-since <base commit>`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from llmops.config import known_models, load_model
from llmops.config.paths import repo_root
from llmops.errors import UsageError


def changed_files(since: str) -> set[Path]:
    """Files that differ between commit `since` and the working tree, as absolute paths."""
    root = repo_root()

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  check=True)
        except FileNotFoundError as exc:
            raise UsageError("--changed-since needs git, which is not installed") from exc
        except subprocess.CalledProcessError as exc:
            raise UsageError(
                f"git cannot compare {root} with {since!r}: {exc.stderr.strip()[:300]}\n"
                "In GitLab CI, fetch the whole history for this job (variables: GIT_DEPTH: "
                "\"0\"); locally, name a commit or branch that exists.") from exc
        return done.stdout

    top = Path(git("rev-parse", "--show-toplevel").strip())
    names = git("diff", "--name-only", "--no-renames", since, "--").splitlines()
    return {(top / name).resolve() for name in names if name}


def models_touched(changed: set[Path]) -> dict[str, list[Path]]:
    """Each model that one of `changed` is released from, with those files (a model whose
    YAML is malformed raises UsageError: a change that breaks it is a change to report)."""
    touched = {}
    for name in known_models():
        mine = sorted(f for f in {p.resolve() for p in load_model(name).source_files()}
                      if f in changed)
        if mine:
            touched[name] = mine
    return touched
