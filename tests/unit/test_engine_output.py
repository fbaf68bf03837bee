"""The engine holds no terminal code: what it has to say goes through
`llmops.process.activity` (`tell`, `warn`, `note`, spinners, progress), and the shell that
installed the handler decides how it looks."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
from rich.console import Console

from llmops.cli.console import Terminal
from llmops.process import activity

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "llmops"

# Where printing is the job: the CLI, the entry points of processes of their own, and the
# default handler (no shell installed: a flow in a Prefect worker, a script).
PRINTERS = {
    "cli/*": "the shell",
    "kubernetes/fetch.py::main": "the init container's entry point",
    "train/node.py::main": "the entry point of a training node's process",
    "serve/guard/llmops_router.py::main": "the local router's launcher, a process of its own",
    "process/activity.py::Plain.*": "the handler in force when no shell installed one",
}


def print_calls(source: str) -> list[str]:
    """The function (dotted) around each `print(...)` call of a module's source."""
    found: list[str] = []

    def walk(node: ast.AST, scope: tuple[str, ...]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                walk(child, (*scope, child.name))
                continue
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) \
                    and child.func.id == "print":
                found.append(".".join(scope) or "<module>")
            walk(child, scope)

    walk(ast.parse(source), ())
    return found


def _allowed(module: str, function: str) -> bool:
    for place in PRINTERS:
        where, _, what = place.partition("::")
        if where.endswith("/*") and module.startswith(where[:-1]):
            return True
        if where == module and (what == function or (what.endswith(".*") and function
                                                     .startswith(what[:-1]))):
            return True
    return False


def test_the_engine_prints_nothing_itself() -> None:
    printing = [f"{path.relative_to(PACKAGE).as_posix()}::{function}"
                for path in sorted(PACKAGE.rglob("*.py"))
                for function in print_calls(path.read_text(encoding="utf-8"))
                if not _allowed(path.relative_to(PACKAGE).as_posix(), function)]
    assert printing == [], "use llmops.process.activity (tell, warn, note) instead"


def test_the_scan_finds_prints_by_function() -> None:
    source = "print(1)\nclass C:\n    def f(self):\n        print(2)\ndef g():\n    x.print(3)"
    assert print_calls(source) == ["<module>", "C.f"]


def test_without_a_shell_lines_go_to_stdout_and_warnings_to_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    previous = activity.install(None)
    try:
        activity.tell("rolling back m in local: 1.0.1 → 1.0.0")
        activity.warn("history line 2 skipped")
    finally:
        activity.install(previous)
    out = capsys.readouterr()
    assert out.out == "rolling back m in local: 1.0.1 → 1.0.0\n"
    assert out.err == "warning: history line 2 skipped\n"


@pytest.mark.parametrize("verbose", [False, True])
def test_the_cli_shows_lines_and_warnings_whether_verbose_or_not(
        verbose: bool, capsys: pytest.CaptureFixture[str]) -> None:
    console = io.StringIO()
    previous = activity.install(Terminal(verbose, out=Console(file=console, width=200)))
    try:
        activity.tell("MLflow run abc (tiny-1), backend axolotl")
        activity.warn("history line 2 skipped")
        activity.note("a note")
    finally:
        activity.install(previous)
    assert capsys.readouterr().out == "MLflow run abc (tiny-1), backend axolotl\n"
    shown = console.getvalue()
    assert "warning: history line 2 skipped" in shown
    assert ("a note" in shown) is verbose  # notes stay in the log unless -v


def test_the_cli_shows_lines_where_print_is_a_log_record(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a Prefect flow (log_prints) `print` becomes a log record below the level the
    terminal shows: the release's first line (its compute plan) was lost there."""
    import builtins

    swallowed: list[str] = []
    monkeypatch.setattr(builtins, "print", lambda *a, **k: swallowed.append(" ".join(a)))
    previous = activity.install(Terminal(False, out=Console(file=io.StringIO(), width=200)))
    try:
        activity.tell("compute plan: CPU AMX, 2 cores: train bf16")
    finally:
        activity.install(previous)
    assert capsys.readouterr().out == "compute plan: CPU AMX, 2 cores: train bf16\n"
    assert swallowed == []
