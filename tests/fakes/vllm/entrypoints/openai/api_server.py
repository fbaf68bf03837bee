"""TEST DOUBLE: a stand-in for vLLM's OpenAI server, for process-lifecycle tests only.

It is started exactly as the real server is (`python -m vllm.entrypoints.openai.api_server
--port N ...`, VLLM_API_KEY in its environment), so that launching, recording, reaping and
killing are exercised without a model. `--fake-health-after S` delays /health (a slow start).
POST /v1/chat/completions answers "I am not sure." (finish_reason stop) and appends the
request's body to `requests.jsonl` in its working folder, so a test can count what was asked.
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str]) -> None:
    port = int(argv[argv.index("--port") + 1])
    delay = float(argv[argv.index("--fake-health-after") + 1]) \
        if "--fake-health-after" in argv else 0.0
    ready_at = time.monotonic() + delay
    key = os.environ.get("VLLM_API_KEY", "")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200 if time.monotonic() >= ready_at else 503, {})
            elif self.headers.get("Authorization") != f"Bearer {key}":
                self._send(401, {"error": "Unauthorized"})
            else:
                self._send(200, {"data": [{"id": "fake"}]})

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.headers.get("Authorization") != f"Bearer {key}":
                self._send(401, {"error": "Unauthorized"})
                return
            with open("requests.jsonl", "a") as log:
                log.write(json.dumps(body) + "\n")
            self._send(200, {"id": "fake", "object": "chat.completion", "created": 0,
                             "model": body.get("model"),
                             "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                 "role": "assistant", "content": "I am not sure."}}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 4,
                                       "total_tokens": 5}})

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
