"""Who touches the process environment. The environment is read once, into `Settings`
(`config/settings.py`), and passed down; a module that reads `os.environ` for itself makes a
hidden channel, and one that writes it changes every later call and every child. The
exceptions are named below, function by function, each with its reason: the process entry
points, the builders of a child process's environment (from a parent mapping they are
given, this process's by default), a third party's own variables, and code that runs in a
training process rather than the CLI's."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "llmops"

READ, WRITE = "read", "write"
# "module::function" ("*": the whole module) -> (what it may do, why).
ALLOWED: dict[str, tuple[frozenset[str], str]] = {
    "config/settings.py::Settings.from_env": (
        frozenset({READ}), "the one reader: a command's Settings, built once and passed down"),
    "config/paths.py::repo_root": (
        frozenset({READ}), "LLMOPS_ROOT: where the checkout is, asked by every layer before "
        "any Settings exist (the config layer's own lookup)"),
    "config/paths.py::state_dir": (
        frozenset({READ}), "LLMOPS_HOME: where the state folder is, likewise"),
    "cli/main.py::*": (
        frozenset({READ, WRITE}), "the CLI's entry point: third parties' defaults set before "
        "they are imported, the given secrets remembered for redaction, LLMOPS_DEBUG"),
    "kubernetes/fetch.py::main": (
        frozenset({READ}), "the init container's entry point (its own process, no Settings)"),
    "kubernetes/kubectl.py::_env": (
        frozenset({READ}), "builds kubectl's environment from a parent mapping (this "
        "process's by default)"),
    "serve/guard/llmops_keyguard.py::KeyGuard.__init__": (
        frozenset({READ}), "runs inside vLLM's API server, not llmops: VLLM_API_KEY, the key "
        "vLLM itself reads"),
    "serve/guard/llmops_router.py::main": (
        frozenset({READ}), "the local router's launcher, a process of its own in the serving "
        "env: VLLM_API_KEY, the key it checks, kept from the router child's environment"),
    "serve/router.py::start": (
        frozenset({READ}), "builds the router's environment from a parent mapping (this "
        "process's by default)"),
    "serve/isolation_run.py::LocalVllm.serving": (
        frozenset({READ}), "a runtime-LoRA server's environment: this process's, with "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING added (launch's parent mapping)"),
    "serve/process.py::serve_python": (
        frozenset({READ}), "LLMOPS_SERVE_PYTHON of the environment a vLLM server starts "
        "from (a parent mapping, this process's by default)"),
    "serve/process.py::launch": (
        frozenset({READ}), "builds a vLLM server's environment from a parent mapping (this "
        "process's by default)"),
    "serve/process.py::cpu_env": (
        frozenset({READ}), "extends this process's LD_PRELOAD for the vLLM child (to take "
        "launch's parent mapping)"),
    "train/run.py::training_env": (
        frozenset({READ}), "builds the Axolotl process's environment from a parent mapping "
        "(this process's by default, where tracking_uri exported MLflow's variables)"),
    "tracking.py::tracking_uri": (
        frozenset({READ, WRITE}), "MLflow's own MLFLOW_TRACKING_URI, which MLflow reads from "
        "this process's environment and children inherit: the embedded store exported"),
    "tracking.py::_move_credentials": (
        frozenset({READ, WRITE}), "user and password of the URI moved to MLflow's own "
        "variables, which its client reads (never printed in its links)"),
    "orchestration/prefect_api.py::start_local_api": (
        frozenset({READ}), "builds Prefect's API server's environment from a parent mapping "
        "(this process's by default), with Prefect's own settings in it"),
    "orchestration/prefect_api.py::point_prefect_at": (
        frozenset({WRITE}), "PREFECT_API_URL: Prefect's client in this process reads its "
        "API's address from there only"),
    "train/unsloth.py::mlflow_callback_logs_into": (
        frozenset({READ, WRITE}), "MLFLOW_RUN_ID for the duration of training, then restored: "
        "transformers' MLflow callback takes its run from the environment only (Unsloth "
        "trains in the CLI's process)"),
    "train/axolotl_cpu.py::join_cpu_world": (
        frozenset({READ}), "WORLD_SIZE and AXOLOTL_NCCL_TIMEOUT, the launcher's variables, "
        "inside the Axolotl child process (no Settings there)"),
    "train/axolotl_cpu.py::tell_accelerate": (
        frozenset({WRITE}), "accelerate's settings, which it reads from the environment only, "
        "inside the Axolotl child process"),
}

_WRITING_METHODS = {"setdefault", "pop", "popitem", "update", "clear", "__setitem__",
                    "__delitem__"}


class _Finder(ast.NodeVisitor):
    """Every read and write of the environment in one module, by enclosing function."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.os_names: set[str] = set()  # names bound to the os module
        self.environ_names: set[str] = set()  # `from os import environ`
        self.read_names: set[str] = set()  # `from os import getenv`
        self.write_names: set[str] = set()  # `from os import putenv, unsetenv`
        self.found: set[tuple[str, str]] = set()

    def _add(self, kind: str) -> None:
        self.found.add((".".join(self.scope) or "<module>", kind))

    def _scoped(self, node: ast.AST, name: str) -> None:
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, node.name)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped(node, node.name)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scoped(node, node.name)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "os":
                self.os_names.add(alias.asname or "os")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module != "os":
            return
        for alias in node.names:
            name = alias.asname or alias.name
            if alias.name in ("environ", "environb"):
                self.environ_names.add(name)
            elif alias.name in ("getenv", "getenvb"):
                self.read_names.add(name)
            elif alias.name in ("putenv", "unsetenv"):
                self.write_names.add(name)

    def _is_environ(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.environ_names
        return (isinstance(node, ast.Attribute) and node.attr in ("environ", "environb")
                and isinstance(node.value, ast.Name) and node.value.id in self.os_names)

    def _os_function(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.read_names:
                return READ
            if node.id in self.write_names:
                return WRITE
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in self.os_names:
            if node.attr in ("getenv", "getenvb"):
                return READ
            if node.attr in ("putenv", "unsetenv"):
                return WRITE
        return None

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if self._is_environ(node.value):
            self._add(READ if isinstance(node.ctx, ast.Load) else WRITE)
            self.visit(node.slice)
            return
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if self._is_environ(node.value):  # os.environ.<method>
            self._add(WRITE if node.attr in _WRITING_METHODS else READ)
            return
        if self._is_environ(node):  # os.environ itself: read (passed, iterated, a default)
            self._add(READ)
            return
        if (kind := self._os_function(node)) is not None:
            self._add(kind)
            return
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.environ_names:
            self._add(READ)
        elif (kind := self._os_function(node)) is not None:
            self._add(kind)


def environment_access(source: str) -> set[tuple[str, str]]:
    """{(function, "read" | "write")} of the environment in one module's source."""
    finder = _Finder()
    finder.visit(ast.parse(source))
    return finder.found


def package_access(package: Path = PACKAGE) -> dict[str, set[tuple[str, str]]]:
    """{module (relative path): its accesses} for every module of `package` that has any."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        if accesses := environment_access(path.read_text(encoding="utf-8")):
            found[path.relative_to(package).as_posix()] = accesses
    return found


def unexplained(found: dict[str, set[tuple[str, str]]]) -> list[str]:
    """Each access that no entry of ALLOWED covers, as `module::function: kind`."""
    out = []
    for module, accesses in found.items():
        for function, kind in sorted(accesses):
            entry = ALLOWED.get(f"{module}::{function}") or ALLOWED.get(f"{module}::*")
            if entry is None or kind not in entry[0]:
                out.append(f"{module}::{function}: {kind}")
    return out


def test_only_the_named_places_read_or_write_the_environment() -> None:
    problems = unexplained(package_access())
    assert not problems, (
        "these read or write os.environ outside the allowed places: take the value from "
        "Settings (config/settings.py) or as a parameter, or name the place in ALLOWED "
        "with its reason:\n  " + "\n  ".join(problems))


def test_every_allowed_place_still_touches_the_environment() -> None:
    """An exception whose code has moved is removed from the list, which only shrinks."""
    found = package_access()
    used = {f"{module}::{function}" for module, accesses in found.items()
            for function, _ in accesses} | {f"{module}::*" for module in found}
    assert sorted(set(ALLOWED) - used) == []


@pytest.mark.parametrize("source,expected", [
    ("import os\ndef f():\n    return os.environ.get('X')", {("f", READ)}),
    ("import os\ndef f():\n    return os.environ['X']", {("f", READ)}),
    ("import os\ndef f():\n    return os.getenv('X')", {("f", READ)}),
    ("import os\ndef f(env=os.environ):\n    return env", {("f", READ)}),
    ("import os\nclass C:\n    def f(self):\n        return dict(os.environ)",
     {("C.f", READ)}),
    ("import os\ndef f():\n    os.environ['X'] = '1'", {("f", WRITE)}),
    ("import os\ndef f():\n    del os.environ['X']", {("f", WRITE)}),
    ("import os\ndef f():\n    os.environ.setdefault('X', '1')", {("f", WRITE)}),
    ("import os\ndef f():\n    os.environ.pop('X', None)", {("f", WRITE)}),
    ("import os\ndef f():\n    os.putenv('X', '1')", {("f", WRITE)}),
    ("import os as o\nX = o.environ.get('X')", {("<module>", READ)}),
    ("from os import environ\ndef f():\n    return environ.get('X')", {("f", READ)}),
    ("from os import getenv\ndef f():\n    return getenv('X')", {("f", READ)}),
    ("import os\ndef f(env):\n    return env.get('X'), os.path.join('a', 'b')", set()),
])
def test_the_scan_sees_every_way_of_touching_the_environment(
        source: str, expected: set[tuple[str, str]]) -> None:
    assert environment_access(source) == expected
