"""Load-test arithmetic and thresholds, and its HTTP client against a real streaming server
(against vLLM in tests/e2e)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from llmops.config import LoadSettings
from llmops.serve.loadtest import LoadResult, load_problems, load_test, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0  # ceil(100*0.5) = 50th value
    assert percentile(values, 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # ceil(1.5) = 2nd of [1, 2, 3]
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def summary(**kw: Any) -> dict[str, Any]:
    r = LoadResult(concurrency=64, duration_s=10.0, requests=64, errors=0, tokens=2048,
                   latency_s=[1.0] * 63 + [4.0], ttft_s=[0.2] * 64)
    for k, v in kw.items():
        setattr(r, k, v)
    return r.summary()


def test_a_clean_run_passes_default_thresholds() -> None:
    s = summary()
    assert s["tokens_per_s"] == 204.8 and s["p99_s"] == 4.0 and s["error_rate"] == 0.0
    assert load_problems(s, LoadSettings()) == []


def test_one_error_breaks_a_zero_error_budget_and_shows_a_sample() -> None:
    s = summary(errors=1, error_samples=["ReadTimeout: timed out"])
    [problem] = load_problems(s, LoadSettings())
    assert "1.6% > 0.0%" in problem and "ReadTimeout" in problem


@pytest.mark.parametrize("settings,needle", [
    (LoadSettings(max_p99_latency_s=3.0), "p99 latency 4.0 s > 3.0 s"),
    (LoadSettings(min_tokens_per_s=500), "204.8 tokens/s < 500"),
    (LoadSettings(min_requests=100), "64 requests < 100"),
])
def test_each_threshold_can_fail(settings: LoadSettings, needle: str) -> None:
    assert any(needle in p for p in load_problems(summary(), settings))


def test_no_answers_at_all_fail_closed() -> None:
    s = summary(requests=64, errors=64, latency_s=[], ttft_s=[], tokens=0)
    problems = load_problems(s, LoadSettings(max_p99_latency_s=5, min_tokens_per_s=1))
    assert len(problems) == 3  # error rate, missing p99, no tokens


KEY = "load-test-key"


class StreamingServer:
    """A real HTTP server (uvicorn) streaming OpenAI-style chunks; it records the client
    address of every request, i.e. which TCP connection carried it."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.peers.append(tuple(scope["client"]))
        while (await receive()).get("more_body"):
            pass
        if (b"authorization", f"Bearer {KEY}".encode()) not in scope["headers"]:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b'{"error": "Unauthorized"}'})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        chunks = [{"choices": [{"delta": {"content": "hi"}}]},
                  {"choices": [], "usage": {"completion_tokens": 3}}]
        for chunk in chunks:
            await asyncio.sleep(0.01)
            line = f"data: {json.dumps(chunk)}\n\n".encode()
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


@pytest.fixture
def streaming_server() -> Iterator[tuple[str, StreamingServer]]:
    app = StreamingServer()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1", app
    server.should_exit = True
    thread.join(10)


def test_each_client_is_a_user_with_its_own_kept_alive_connection(
        streaming_server: tuple[str, StreamingServer]) -> None:
    url, app = streaming_server
    result = load_test(url, "m", ["a", "b"], concurrency=4, duration_s=0.3, max_tokens=3,
                       min_requests=20, api_key=KEY)
    assert result.errors == 0 and result.requests >= 20
    assert result.tokens == 3 * result.requests
    assert len(result.ttft_s) == result.requests
    # 4 users, 4 connections, each reused for several requests (not a pool shared by all,
    # and not a connection per request).
    assert len(set(app.peers)) == 4
    assert len(app.peers) == result.requests


def test_every_request_presents_the_endpoints_api_key(
        streaming_server: tuple[str, StreamingServer]) -> None:
    url, _ = streaming_server
    wrong = load_test(url, "m", ["a"], concurrency=2, duration_s=0.0, max_tokens=3,
                      min_requests=2, api_key="not-the-key")
    assert wrong.errors == 2 and "HTTP 401" in wrong.error_samples[0]


def test_the_users_share_one_tls_context(streaming_server: tuple[str, StreamingServer],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx loads the trust store for every client it builds (34 ms of CPU each here): 64
    users took 2.2 s of CPU from the server under test. One context serves them all."""
    import ssl

    built: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(real(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    url, _ = streaming_server
    result = load_test(url, "m", ["a"], concurrency=8, duration_s=0.0, max_tokens=3,
                       min_requests=8, api_key=KEY)
    assert result.errors == 0 and result.requests == 8
    assert len(built) == 1
