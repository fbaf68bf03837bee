"""Which models a change touches (merge-request pipelines validate those models' data only),
and how the CLI ends its process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmops.data.changes import changed_files, models_touched
from llmops.errors import UsageError


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=root, check=True, capture_output=True)


@pytest.fixture()
def committed(repo_copy: Path) -> Path:
    git(repo_copy, "init", "-q")
    git(repo_copy, "add", "-A")
    git(repo_copy, "commit", "-qm", "base")
    return repo_copy


def test_nothing_changed_touches_no_model(committed: Path) -> None:
    assert models_touched(changed_files("HEAD")) == {}


def test_a_suite_touches_its_model_only(committed: Path) -> None:
    suite = committed / "validation" / "tiny.yml"
    suite.write_text(suite.read_text() + "\n")
    assert models_touched(changed_files("HEAD")) == {"tiny": [suite.resolve()]}


def test_an_evaluation_suites_files_touch_their_model(committed: Path) -> None:
    kept = committed / "validation" / "retention" / "support-bot.jsonl"
    task = committed / "validation" / "lm_eval" / "kept_arithmetic.jsonl"
    for path in (kept, task):
        path.write_text(path.read_text() + "\n")
    assert models_touched(changed_files("HEAD")) == {
        "support-bot": sorted([kept.resolve(), task.resolve()])}


def test_a_shared_dataset_touches_every_model_trained_on_it(committed: Path) -> None:
    data = committed / "datasets" / "support-bot" / "eval.jsonl"
    data.write_text(data.read_text() + data.read_text().splitlines()[0] + "\n")
    (committed / "deploy" / "local.yml").write_text(
        (committed / "deploy" / "local.yml").read_text() + "\n")  # not a data input
    assert models_touched(changed_files("HEAD")) == {"support-bot": [data.resolve()],
                                                     "tiny": [data.resolve()]}


def test_an_unknown_base_says_how_to_fetch_it(committed: Path) -> None:
    with pytest.raises(UsageError, match=r"cannot compare .* with '0123abc'(.|\n)*GIT_DEPTH"):
        changed_files("0123abc")


ENDING = """
import atexit, sys, threading, time
from pathlib import Path
from llmops.cli.main import end_process
out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late():
    time.sleep(0.5)
    (out / "thread").write_text("joined")
threading.Thread(target=late).start()
print("no newline yet", end="")
end_process(3)
"""


def test_end_process_joins_threads_runs_atexit_and_flushes(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", ENDING, str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 3
    assert done.stdout == "no newline yet"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "joined"
