"""The local stable address: the real vLLM router (`vllm-router`, serving env) in front of
stub workers that speak what the router and the swap read (health, a streamed chat, the
in-flight gauges of /metrics). The same swap with real vLLM workers is
tests/e2e/test_release.py's."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from llmops.errors import UsageError
from llmops.serve import router
from llmops.serve.process import serve_python

KEY = "router-test-key-0123456789"


class StubWorker:
    """A worker on a free port: /health, /metrics (its in-flight count), /v1/* with the
    key; a streamed chat answers `chunks` chunks, `delay_s` apart, naming the worker."""

    def __init__(self, name: str, chunks: int = 6, delay_s: float = 0.25) -> None:
        self.name, self.in_flight, self.served = name, 0, 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def reply(self, code: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/health":
                    return self.reply(200, b"{}")
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self.reply(401, b'{"error": "key"}')
                if self.path == "/metrics":
                    text = (f"vllm:num_requests_running{{model_name=\"m\"}} {stub.in_flight}\n"
                            "vllm:num_requests_waiting{model_name=\"m\"} 0.0\n")
                    return self.reply(200, text.encode(), "text/plain")
                return self.reply(200, json.dumps(
                    {"object": "list", "data": [{"id": "m", "object": "model"}]}).encode())

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    return self.reply(401, b'{"error": "key"}')
                stub.in_flight += 1
                try:
                    if not json.loads(body or b"{}").get("stream"):
                        return self.reply(200, json.dumps({"worker": stub.name}).encode())
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(chunks):
                        data = f"data: {json.dumps({'worker': stub.name, 'i': i})}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        time.sleep(delay_s)
                    self.wfile.write(b"0\r\n\r\n")
                finally:
                    stub.in_flight -= 1
                    stub.served += 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture()
def workers() -> Iterator[tuple[StubWorker, StubWorker]]:
    a, b = StubWorker("a"), StubWorker("b")
    yield a, b
    a.close()
    b.close()


@pytest.fixture()
def front(state: Path, workers: tuple[StubWorker, StubWorker]) -> Iterator[router.Router]:
    started = router.ensure("m", "local", "127.0.0.1:0", workers[0].url, KEY, serve_python())
    yield started
    router.stop("m", "local")
    assert not started.alive()


def ask(front: router.Router, stream: bool = False, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{front.url}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "m", "messages": [], "stream": stream})


def test_the_router_refuses_every_path_without_the_key(front: router.Router) -> None:
    """Its own routes too: without the validation URL, /add_worker would let any local
    process put another model behind the address."""
    base = f"http://{front.address}"
    routes = [("GET", "/health"), ("GET", "/v1/models"), ("GET", "/list_workers"),
              ("GET", "/get_loads"), ("GET", "/readiness"), ("GET", "/metrics"),
              ("POST", "/add_worker?url=http://127.0.0.1:9"), ("POST", "/flush_cache"),
              ("POST", "/remove_worker?url=http://127.0.0.1:9"),
              ("POST", "/v1/chat/completions"), ("POST", "/v1/completions")]
    for headers in ({}, {"Authorization": "Bearer not-the-key"}):
        for method, path in routes:
            # A body as a client sends one: the router's parser refuses a malformed one
            # (415, 422) before its key check runs, refused either way.
            body = {"model": "m", "prompt": "hi"} if "completions" in path and \
                "chat" not in path else {"model": "m", "messages": []}
            got = httpx.request(method, base + path, headers=headers, timeout=10,
                                json=body if method == "POST" else None)
            assert got.status_code == 401, (method, path, headers, got.status_code)
    assert router.workers(front, KEY) == [front_worker(front)]
    assert ask(front).json() == {"worker": "a"}


def front_worker(front: router.Router) -> str:
    return router.workers(front, KEY)[0]


def test_a_swap_loses_no_request_and_lets_the_old_worker_finish(
        front: router.Router, workers: tuple[StubWorker, StubWorker]) -> None:
    old, new = workers
    failures: list[str] = []
    answered: list[str] = []
    stop = threading.Event()

    def client() -> None:  # a steady client of the stable address across the swap
        while not stop.is_set():
            try:
                got = ask(front)
                if got.status_code == 200:
                    answered.append(got.json()["worker"])
                else:
                    failures.append(f"{got.status_code} {got.text[:100]}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))

    chunks: list[str] = []

    def streaming() -> None:  # in flight on the old worker while it is swapped out
        with httpx.stream("POST", f"{front.url}/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "m", "messages": [], "stream": True}) as got:
            chunks.extend(line for line in got.iter_lines() if line.startswith("data:"))

    threads = [threading.Thread(target=client), threading.Thread(target=streaming)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while old.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert old.in_flight >= 1, "the stream never reached the old worker"
    router.add_worker(front, new.url, KEY)
    router.remove_worker(front, old.url, KEY)
    drained = router.drain(old.port, KEY, timeout_s=20)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert drained and old.in_flight == 0
    assert not failures, failures[:5]
    assert len(chunks) == 6 and all('"worker": "a"' in c for c in chunks)  # finished on a
    assert router.workers(front, KEY) == [new.url]
    assert ask(front).json() == {"worker": "b"} and answered[-1] == "b"


def test_drain_gives_up_after_its_timeout(workers: tuple[StubWorker, StubWorker]) -> None:
    busy = workers[0]
    busy.in_flight = 1  # a request that never finishes
    started = time.monotonic()
    assert router.drain(busy.port, KEY, timeout_s=1.0) is False
    assert time.monotonic() - started < 10
    busy.in_flight = 0
    assert router.drain(busy.port, KEY, timeout_s=1.0) is True


def test_an_address_held_by_another_process_is_refused_before_anything_starts(
        state: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        problem = router.address_problem("m", "local", address)
        assert problem is not None and address in problem and "models.m.address" in problem
    assert router.address_problem("m", "local", "127.0.0.1:0") is None
    with pytest.raises(UsageError, match="not host:port"):
        router.split_address("localhost")


def test_the_router_refuses_to_start_without_a_key(state: Path, tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run([str(serve_python()), str(router.ROUTER_SCRIPT), "--port", "0",
                           "--metrics-port", "0"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 2 and "refusing to serve without a key" in done.stderr


def test_verify_passes_its_health_check_through_the_router(front: router.Router) -> None:
    """`llmops verify` checks the serving version at its stable address, where /health
    needs the key too."""
    from llmops.serve.verify import smoke_test

    result = smoke_test(front.url, "m", [], max_tokens=4, timeout_s=10, api_key=KEY)
    assert result.problems == [] and result.models == ["m"]
