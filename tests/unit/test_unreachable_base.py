"""A base model given as a Hub id that this machine cannot download, and has no copy of,
is refused at check-config in one line that names the YAML and how to point at a local
copy; a path, a cached copy or a Hub that answers passes. No test reaches the Internet:
the Hub is a local server or a closed port."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmops.config import load_model
from llmops.errors import UsageError
from llmops.models.base import unreachable_base_model
from llmops.serve.process import free_port
from llmops.stages.data import require_base_model


@pytest.fixture()
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Hugging Face's settings as the library read them: online, an empty cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # closed
    return constants


class _NotFound(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def answering_hub(hub: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(hub, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    yield
    server.shutdown()


def test_offline_without_a_copy_is_refused_naming_the_fix(hub: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    problem = unreachable_base_model("org/name")
    assert problem is not None and "\n" not in problem
    assert problem.startswith("org/name is a Hugging Face Hub id")
    assert "HF_HUB_OFFLINE is set" in problem
    assert "point base_model at a local copy instead, the path of a folder" in problem


def test_a_hub_that_does_not_answer_is_asked_once(hub: Any) -> None:
    problem = unreachable_base_model("org/name")
    assert problem is not None and f"{hub.ENDPOINT} does not answer" in problem


def test_a_hub_that_answers_whatever_the_status_passes(answering_hub: None) -> None:
    assert unreachable_base_model("org/name") is None


def test_a_cached_copy_passes_offline(hub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    repo = Path(hub.HF_HUB_CACHE) / "models--org--name"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert unreachable_base_model("org/name") is None


def test_paths_are_not_hub_ids(hub: Any, repo_copy: Path) -> None:
    (repo_copy / "models" / "mine").mkdir(parents=True)  # one slash, but a folder here
    for base in (".llmops/models/tiny-llama", "/srv/models/smollm2", "models/mine"):
        assert unreachable_base_model(base) is None, base


def test_check_config_refuses_it_in_one_line_naming_the_yaml(
        hub: Any, repo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    yml = repo_copy / "axolotl_configs" / "tiny.yml"
    yml.write_text(yml.read_text().replace("base_model: .llmops/models/tiny-llama",
                                           "base_model: org/name"))
    with pytest.raises(UsageError, match=r"^\S*/axolotl_configs/tiny\.yml: base_model: "
                       r"org/name is a Hugging Face Hub id.*local copy[^\n]*$"):
        require_base_model(load_model("tiny"))
