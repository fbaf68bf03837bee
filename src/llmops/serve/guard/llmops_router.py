"""The local stable address: the vLLM project's router (`vllm-router`) in front of a
model's workers, with the API key required on every one of its paths.

Run by llmops with the serving environment's Python (where `vllm-router` is installed);
standard library otherwise. The router checks a client's key by asking a validation URL
(its `api_key_validation_urls`, which its command line does not expose), and keeps the
verdict. Without one, its own routes (/add_worker, /remove_worker, /list_workers,
/flush_cache, …) answer anyone who can reach the port, and any local process could swap
the model behind the address. So this process serves that validation URL on a private
loopback port and runs the router as its child; both stop together (one process group).

    python llmops_router.py --port 8000 --metrics-port 29100 --worker http://127.0.0.1:41234

VLLM_API_KEY: the key (refused without one, as the key guard is).
"""

from __future__ import annotations

import argparse
import hmac
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY_ENV = "VLLM_API_KEY"


class _Validator(BaseHTTPRequestHandler):
    """200 for the right bearer key, 401 for anything else (compared in constant time)."""

    expected = b""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # a line per client key checked says nothing the router's log does not

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        given = self.headers.get("Authorization", "").encode()
        ok = hmac.compare_digest(given, self.expected)
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET


def validator(key: str) -> ThreadingHTTPServer:
    """The validation URL's server on a free loopback port, serving in a thread."""
    handler = type("Validator", (_Validator,), {"expected": f"Bearer {key}".encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_router(args: argparse.Namespace) -> None:
    """The router itself (the child): blocks until it is stopped. Its Rust core holds the
    interpreter while it runs, which is why the validator lives in the parent."""
    from vllm_router.router import Router, policy_from_str
    from vllm_router.router_args import RouterArgs
    from vllm_router_rs import Router as _Router

    settings = RouterArgs(worker_urls=args.worker, host=args.host, port=args.port,
                          policy="round_robin", prometheus_host="127.0.0.1",
                          prometheus_port=args.metrics_port)
    options = vars(settings)
    options.pop("mini_lb")
    for name in ("policy", "prefill_policy", "decode_policy"):
        options[name] = policy_from_str(options[name])
    options["api_key_validation_urls"] = [args.validate]
    Router(router=_Router(**options)).start()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--worker", action="append", default=[])
    parser.add_argument("--validate", help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args(argv)
    if args.validate:
        run_router(args)
        return 0
    key = os.environ.get(KEY_ENV, "")
    if not key:
        print(f"llmops_router: {KEY_ENV} is not set; refusing to serve without a key",
              file=sys.stderr)
        return 2
    server = validator(key)
    validate = f"http://127.0.0.1:{server.server_address[1]}/validate"
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}  # the router needs no key
    child = subprocess.Popen([sys.executable, __file__, *argv, "--validate", validate],
                             env=env)

    def forward(number: int, frame: object) -> None:
        child.send_signal(number)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = child.wait()
    server.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
