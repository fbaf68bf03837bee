"""The key guard that runs inside vLLM's API server: every path but /health needs the key
(the real server, with every route it lists, is tests/e2e/test_release.py's)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmops.serve.guard.llmops_keyguard import KeyGuard


def call(path: str, headers: dict[str, str] | None = None,
         kind: str = "http") -> tuple[int | None, bool]:
    """A request through a guard of the key "s3cret": (the status or close code the guard
    sent, whether the app behind it ran)."""
    reached: list[bool] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": kind, "path": path, "method": "POST", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    asyncio.run(KeyGuard(app)(scope, receive, send))
    return next((m.get("status") or m.get("code") for m in sent), None), bool(reached)


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "s3cret")


@pytest.mark.parametrize("path", ["/invocations", "/tokenize", "/metrics", "/v1/models",
                                  "/openapi.json", "/docs", "/health/", "/healthz",
                                  "/v1/../health", "/load", "/anything-new"])
def test_every_path_but_health_needs_the_key(path: str) -> None:
    assert call(path) == (401, False)
    assert call(path, {"Authorization": "Bearer wrong"}) == (401, False)
    assert call(path, {"Authorization": "s3cret"}) == (401, False)  # no scheme
    assert call(path, {"Authorization": "Basic s3cret"}) == (401, False)
    assert call(path, {"Authorization": "Bearer s3cret"}) == (None, True)
    assert call(path, {"authorization": "bearer s3cret"}) == (None, True)


def test_health_is_open_and_a_websocket_without_the_key_is_closed() -> None:
    assert call("/health") == (None, True)
    assert call("/v1/realtime", kind="websocket") == (1008, False)


def test_the_guard_refuses_to_start_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_API_KEY")

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(RuntimeError, match="VLLM_API_KEY is not set"):
        KeyGuard(app)
