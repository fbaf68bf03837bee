"""A real MLflow tracking server for tests (its artifacts on local disk), and a proxy in
front of one that loses answers, the way a network between a runner and a server can."""

from __future__ import annotations

import http.client
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(root: Path) -> Iterator[tuple[str, Path, Path]]:
    """`mlflow server` on a free port, its store under `root`: (url, db, artifacts)."""
    port, db, artifacts = free_port(), root / "mlflow.db", root / "mlartifacts"
    mlflow = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{db}", "--no-serve-artifacts",
         "--default-artifact-root", artifacts.as_uri()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server down"
            time.sleep(0.5)
        yield url, db, artifacts
    finally:
        server.terminate()
        server.wait(30)


class LosingProxy:
    """Forwards every request to `upstream`; the first `lose` POSTs whose path ends with
    `suffix` reach the server, but their answers are dropped (the connection closes)."""

    def __init__(self, upstream: str, suffix: str, lose: int = 1) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.suffix, self.lose = suffix, lose
        self.seen: list[str] = []  # method and path of every request forwarded
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body, headers)
                answer = conn.getresponse()
                data = answer.read()
                proxy.seen.append(f"{self.command} {self.path}")
                if (self.command == "POST" and self.path.split("?")[0].endswith(proxy.suffix)
                        and proxy.lose > 0):
                    proxy.lose -= 1
                    self.close_connection = True  # made upstream; the answer is lost
                    return
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection",
                                           "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LosingProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
