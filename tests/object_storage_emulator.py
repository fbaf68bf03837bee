"""TEST DOUBLE: the S3-like object storage GitLab redirects package downloads to. Tests only.

A second server, on its own port (and under whatever host name the test announces it), so
that a redirect from the GitLab emulator goes to another origin, as a pre-signed URL from
GitLab goes to another host. Like S3 it checks the URL's signature, and refuses a request
that carries an `Authorization` header beside it ("only one auth mechanism allowed").
Every request's headers are kept in `seen`: a test reads them to show that no GitLab
token ever reached the store.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

SECRET = b"emulator-object-storage-secret"
# Every header a GitLab client authenticates with.
TOKEN_HEADERS = {"authorization", "private-token", "job-token"}


class ObjectStore:
    """`files(version_id, rel)` gives a package file's bytes, or None; started and stopped
    by its owner (`server.serve_forever`, `server.shutdown`)."""

    def __init__(self, host: str, files: Callable[[int, str], bytes | None]) -> None:
        self.files = files
        self.seen: list[dict[str, str]] = []
        self.lock = threading.Lock()
        handler = type("StoreHandler", (_StoreHandler,), {"store": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"

    @staticmethod
    def signature(path: str) -> str:
        return hmac.new(SECRET, unquote(path).encode(), hashlib.sha256).hexdigest()

    def tokens_seen(self, token: str) -> list[str]:
        """Headers of requests to the store that carried a GitLab credential."""
        with self.lock:
            return [name for headers in self.seen for name, value in headers.items()
                    if name.lower() in TOKEN_HEADERS or token in value]

    def presigned(self, version_id: int, rel: str) -> str:
        """A URL that needs no other credential (and must get none)."""
        path = f"/packages/{version_id}/{quote(rel)}"
        return (f"{self.url}{path}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=600"
                f"&X-Amz-Signature={self.signature(path)}")


class _StoreHandler(BaseHTTPRequestHandler):
    store: ObjectStore
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, data: bytes, kind: str = "application/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
                   .encode())

    def do_GET(self) -> None:  # noqa: N802
        with self.store.lock:
            self.store.seen.append(dict(self.headers.items()))
        parsed = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        if not hmac.compare_digest(query.get("X-Amz-Signature", ""),
                                   self.store.signature(parsed.path)):
            return self._error(403, "SignatureDoesNotMatch", "The request signature we "
                               "calculated does not match the signature you provided.")
        if "Authorization" in self.headers:
            return self._error(400, "InvalidArgument", "Only one auth mechanism allowed; "
                               "only the X-Amz-Algorithm query parameter, Signature query "
                               "string parameter or the Authorization header should be "
                               "specified")
        match = re.fullmatch(r"/packages/(\d+)/(.+)", parsed.path)
        data = self.store.files(int(match[1]), unquote(match[2])) if match else None
        if data is None:
            return self._error(404, "NoSuchKey", "The specified key does not exist.")
        self._send(200, data, "application/octet-stream")
