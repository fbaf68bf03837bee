"""Prefect's API for one `llmops release`: started first, waited for last.

With no PREFECT_API_URL, Prefect starts a temporary API server (a uvicorn subprocess over the
database in PREFECT_HOME) when a flow first needs it. Started that way, the CLI process first
imports Prefect's server package (holding the GIL while the CLI checks the Axolotl
config), and only then does the subprocess import it again, migrate its database and
register the block types, slowest for a fresh home. Here the CLI starts the same server,
the same way Prefect does, before it imports anything heavy, and points PREFECT_API_URL at
it: the server comes up on another core while the CLI works, and the CLI waits for its
/health only when the flow is about to run.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llmops.errors import StageFailed
from llmops.redact import scrubbed_env

# What Prefect's own temporary server runs with (prefect.server.api.server, 3.7): the API
# without its UI, with the services of an ephemeral server.
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1"}
DEFAULT_STARTUP_TIMEOUT_S = 180.0  # a fresh database migrates first, slowly on few cores
LOG_MAX_BYTES = 10 * 2**20


@dataclass
class LocalApi:
    """A Prefect API server that this process started and stops at exit."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    _log_file: IO[bytes]
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Block until /health answers 200; raise StageFailed, with the server's log, when
        the server exits or does not answer in time (`startup_timeout_s` unless given; and
        stop it)."""
        from llmops.process.health import wait_for_health

        timeout_s = timeout_s or self.startup_timeout_s
        try:
            wait_for_health(
                "Prefect's API server", f"{self.url}/health", self.process, self.log,
                timeout_s, interval_s=0.1, hint="To use a server of your own instead, set "
                "PREFECT_API_URL (make orchestrator starts one).")
        except StageFailed:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


def rotate(log: Path, max_bytes: int = LOG_MAX_BYTES) -> None:
    """Keep one earlier log (`api.log.1`) once the log passes `max_bytes`: every release
    appends to it."""
    if log.is_file() and log.stat().st_size > max_bytes:
        log.replace(log.with_name(log.name + ".1"))


def start_local_api(log: Path | None = None,
                    parent_env: Mapping[str, str] = os.environ) -> LocalApi | None:
    """Start Prefect's temporary API server in the background and point this process (and
    its children) at it. None when PREFECT_API_URL already names a server, or when the
    environment forbids a temporary one (Prefect then says what to do). Prefect's settings
    come from `parent_env` (by default this process's), which the server's own
    environment is built from; `log`: by default api.log in PREFECT_HOME."""
    if parent_env.get("PREFECT_API_URL"):
        return None
    if parent_env.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true").lower() in ("0", "false"):
        return None
    log = log or Path(parent_env["PREFECT_HOME"]) / "api.log"
    from llmops.serve.process import free_port

    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    rotate(log)
    log_file = log.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
         "--lifespan", "on"],
        # Its own settings (a database URL may carry credentials), none of the pipeline's.
        env={**scrubbed_env(parent_env,
                            keep=[k for k in parent_env if k.startswith("PREFECT_")]),
             **SERVER_ENV}, stdout=log_file, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    api = LocalApi(process, f"http://127.0.0.1:{port}/api", log, log_file, float(
        parent_env.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
        or DEFAULT_STARTUP_TIMEOUT_S))
    point_prefect_at(api.url)
    atexit.register(api.stop)
    return api


def point_prefect_at(api_url: str) -> None:
    """PREFECT_API_URL, this module's one write to the environment: Prefect's client in
    this process reads its API's address from there (Prefect's own variable, as MLflow's
    tracking URI is MLflow's), and the flow's children inherit it."""
    os.environ["PREFECT_API_URL"] = api_url


def load_flow(name: str) -> Any:
    """Import flows/<name>.py of the repository (flows/ is wiring, not package code)."""
    import importlib

    from llmops.config.paths import repo_root

    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"flows.{name}")


def release_via_prefect(model: str, env: str, version: str | None) -> tuple[Any, float]:
    """`llmops release`: the release flow under a Prefect API started first. While it comes
    up, the Axolotl config is checked (a bad YAML exits 2 before any flow run exists) and
    the model's MLflow experiment is opened (an unreachable MLflow exits 2 likewise).
    (summary, when this began)."""
    import time

    from llmops.config import load_model
    from llmops.process.activity import activity
    from llmops.stages.data import check_config, require_base_model
    from llmops.stages.steps import Steps
    from llmops.tracking import experiment_id

    spec = load_model(model)  # fail fast (exit 2) before Prefect starts
    require_base_model(spec)  # likewise: a Hub id this machine cannot download
    started = time.time()
    api = start_local_api()
    first = Steps()  # reported like the flow's steps
    first("check-config", check_config, spec)
    config_s = first.seconds["check-config"]
    with activity("loading the release flow and MLflow"):
        release = load_flow("release").release
        experiment_id(spec.name)
    if api is not None:
        with activity(f"waiting for Prefect's API server (log: {api.log})"):
            api.wait_healthy()
    summary = release(model=model, env=env, version=version, config_checked=True)
    summary.seconds = {"check-config": config_s, **summary.seconds}
    summary.work_seconds = {"check-config": config_s, **summary.work_seconds}
    return summary, started
