"""Fixtures of the unit tier."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from llmops.evaluation.suite import Endpoint

# (served model name, the request's messages) → the assistant's answer
Answerer = Callable[[str, list[dict[str, str]]], str]
StartChat = Callable[..., tuple[Endpoint, list[dict[str, Any]]]]


class _ChatHandler(BaseHTTPRequestHandler):
    """/v1/chat/completions as vLLM's OpenAI server answers it (non-streaming), with the
    bearer key the Endpoint names."""

    answer: Answerer
    seen: list[dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers["Authorization"] != "Bearer k":
            self.send_error(401)
            return
        self.seen.append(body)
        text = type(self).answer(body["model"], body["messages"])
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": text}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def fake_chat_server() -> Iterator[StartChat]:
    """start(answer, roles=("base", "candidate")) → (Endpoint, the request bodies seen)."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Answerer, roles: tuple[str, ...] = ("base", "candidate")) -> \
            tuple[Endpoint, list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []
        handler = type("H", (_ChatHandler,), {"answer": staticmethod(answer), "seen": seen})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Endpoint(f"http://127.0.0.1:{server.server_port}/v1", "k", roles, 16, 4), seen

    yield start
    for server in servers:
        server.shutdown()
