"""The API key on every path of a vLLM server but /health (`--middleware
llmops_keyguard.KeyGuard`, its folder on the server's PYTHONPATH).

vLLM's own `--api-key` guards the /v1, /v2, /inference and /cohere prefixes only: without a
key, /invocations answers a chat completion and /tokenize, /metrics, /load, /version and the
OpenAPI pages answer too. This guard is the outermost middleware and refuses any request
whose path is not exactly /health unless it carries `Authorization: Bearer <VLLM_API_KEY>`:
a route a later vLLM adds is guarded before anyone lists it. Standard library only: it runs
in the serving environment (or the vLLM image), where llmops is not installed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})  # liveness and readiness probes carry no key
KEY_VARIABLE = "VLLM_API_KEY"


class KeyGuard:
    def __init__(self, app: App) -> None:
        key = os.environ.get(KEY_VARIABLE, "")
        if not key:  # a guard that lets everyone in must not start quietly
            raise RuntimeError(f"llmops_keyguard: {KEY_VARIABLE} is not set")
        self.app = app
        self.digest = hashlib.sha256(key.encode()).digest()

    def allowed(self, scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root):]
        if path in OPEN_PATHS:
            return True
        header = b""
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                header = value
                break
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        return hmac.compare_digest(hashlib.sha256(token.strip().encode()).digest(),
                                   self.digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
        else:
            body = json.dumps({"error": "Unauthorized"}).encode()
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
