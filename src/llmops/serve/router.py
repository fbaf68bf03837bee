"""A local model's stable address: the vLLM router in front of its workers.

Clients use one address per model (`serve.address` in deploy/local.yml, 127.0.0.1:8000 by
default) whatever version serves. A deploy starts the new worker beside the old one and
verifies it directly; only then is it added here, the old one removed (no new requests
reach it), drained (its in-flight requests finish) and stopped. A failed verification
never reaches the router; a rollback is the same swap backwards.

The router is `guard/llmops_router.py` run with the serving environment's Python: it
requires the API key on every path, /health included, and has a record like a worker's
(`.llmops/routers/<model>-<env>.json`: pid, address, metrics port, log).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from llmops.config.paths import state_subdir
from llmops.errors import StageFailed, UsageError
from llmops.process.health import log_tail
from llmops.redact import scrubbed_env
from llmops.serve.vllm import GUARD_DIR

ROUTER_SCRIPT = GUARD_DIR / "llmops_router.py"
START_TIMEOUT_S = 60.0


@dataclass
class Router:
    """One model's router, as recorded on disk."""

    model: str
    env: str
    host: str
    port: int
    pid: int
    created: float  # the process's start time: a pid is ours only with it
    metrics_port: int
    log_path: str
    started_at: float = field(default_factory=time.time)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/v1"

    def alive(self) -> bool:
        from llmops.serve.process import process_created

        return bool(self.pid) and abs(process_created(self.pid) - self.created) <= 1.0


def split_address(address: str) -> tuple[str, int]:
    """`host:port` → (host, port); UsageError naming the setting when it is not one. Port 0:
    any free port, chosen when the router starts."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"serve.address: {address!r} is not host:port (e.g. 127.0.0.1:8000)")
    return host, int(port)


def _path(model: str, env: str) -> Path:
    return state_subdir("routers") / f"{model}-{env}.json"


def load(model: str, env: str) -> Router | None:
    path = _path(model, env)
    return Router(**json.loads(path.read_text())) if path.is_file() else None


def _save(router: Router) -> None:
    from llmops.serve.process import _write_json  # the workers' records are written so

    _write_json(_path(router.model, router.env), asdict(router))


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _serves_at(router: Router | None, address: str) -> bool:
    """Whether `router` runs at the configured `address` (port 0: any port of its host,
    chosen when it started and kept while it runs)."""
    if router is None or not router.alive():
        return False
    host, port = split_address(address)
    return router.address == address or (port == 0 and router.host == host)


def address_problem(model: str, env: str, address: str) -> str | None:
    """Why `model` cannot be served at `address`: another process holds it (this model's
    own router may)."""
    host, port = split_address(address)
    if port == 0 or _serves_at(load(model, env), address) or _port_free(host, port):
        return None
    return (f"{address} is in use by another process: stop it, or give {model} another "
            f"address in deploy/{env}.yml (models.{model}.address)")


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _call(router: Router, method: str, path: str, key: str, **params: str) -> httpx.Response:
    response = httpx.request(method, f"http://{router.address}{path}", params=params,
                             headers=_headers(key), timeout=30)
    if response.status_code != 200:
        raise StageFailed(f"router {router.address}: {method} {path} answered "
                          f"{response.status_code}: {response.text[:300]}")
    return response


def workers(router: Router, key: str) -> list[str]:
    return list(_call(router, "GET", "/list_workers", key).json().get("urls", []))


def add_worker(router: Router, worker: str, key: str) -> None:
    _call(router, "POST", "/add_worker", key, url=worker)


def remove_worker(router: Router, worker: str, key: str) -> None:
    if worker in workers(router, key):
        _call(router, "POST", "/remove_worker", key, url=worker)


def start(model: str, env: str, address: str, first_worker: str, key: str,
          python: Path, parent_env: Mapping[str, str] = os.environ) -> Router:
    """Start the model's router with `first_worker` behind it; wait until it answers."""
    from llmops.serve.process import free_port, process_created

    host, port = split_address(address)
    port = port or free_port()
    folder = state_subdir("routers")
    log_path = folder / f"{model}-{env}.log"
    env_vars = {**scrubbed_env(parent_env), "VLLM_API_KEY": key}
    metrics_port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(python), str(ROUTER_SCRIPT), "--host", host, "--port", str(port),
             "--metrics-port", str(metrics_port), "--worker", first_worker],
            stdout=log, stderr=subprocess.STDOUT, env=env_vars, cwd=folder,
            start_new_session=True)  # outlives the CLI, like the workers
    router = Router(model, env, host, port, proc.pid, process_created(proc.pid),
                    metrics_port, str(log_path))
    _save(router)  # recorded at once: a command killed while it waits leaves no stray router
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StageFailed(f"the router of {model} exited with code {proc.returncode}; "
                              f"its log is {log_path}\n{log_tail(log_path)}")
        try:
            if httpx.get(f"http://{router.address}/health", headers=_headers(key),
                         timeout=2).status_code == 200:
                return router
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_process(router)
    raise StageFailed(f"the router of {model} did not answer at {address} within "
                      f"{START_TIMEOUT_S:.0f} s; its log is {log_path}\n{log_tail(log_path)}")


def ensure(model: str, env: str, address: str, worker: str, key: str,
           python: Path) -> Router:
    """The model's router at `address` with `worker` behind it: the running one (a router
    at another address is replaced), else a new one."""
    router = load(model, env)
    if router is not None and _serves_at(router, address):
        if worker not in workers(router, key):
            add_worker(router, worker, key)
        return router
    if router is not None:
        stop_process(router)
    return start(model, env, address, worker, key, python)


def in_flight(worker_port: int, key: str) -> float:
    """Requests a vLLM worker is running or holding in its queue (its Prometheus gauges)."""
    text = httpx.get(f"http://127.0.0.1:{worker_port}/metrics", headers=_headers(key),
                     timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def drain(worker_port: int, key: str, timeout_s: float) -> bool:
    """Wait until the worker has nothing in flight (True), or `timeout_s` passes (False).
    A worker that no longer answers has nothing left to finish."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if in_flight(worker_port, key) == 0:
                return True
        except (httpx.HTTPError, ValueError, IndexError):
            return True
        time.sleep(0.25)
    return False


def stop_process(router: Router) -> None:
    from llmops.serve.process import kill

    if router.alive():
        kill(router.pid, grace_s=10)
    _path(router.model, router.env).unlink(missing_ok=True)


def stop(model: str, env: str) -> Router | None:
    """Stop the model's router (when its last worker stops) and forget its record."""
    router = load(model, env)
    if router is not None:
        stop_process(router)
    return router
