"""Local deployments: a vLLM CPU server on 127.0.0.1, managed as a background process.

Each deployment has a record (`.llmops/deployments/<model>-<env>.json`: pid, port, version,
arguments) and a folder with its log; vLLM's compile cache is shared by all of them
(`.llmops/cache/vllm`). Each server also has a short private folder in the system temp dir
(its Unix sockets, torch's temp files), removed when it is stopped. A server that never
becomes healthy is killed and its log tail is raised, so nothing is left running by a
failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from llmops.config import HTTP_KEEP_ALIVE_S, ServeSettings
from llmops.config.paths import repo_root, state_subdir
from llmops.errors import UsageError
from llmops.process.health import wait_for_health
from llmops.process.native import preloaded, tcmalloc
from llmops.serve.vllm import VllmServer
from llmops.serve.vllm import vllm_args as common_vllm_args


@dataclass
class Deployment:
    """One running (or stopped) local server, as recorded on disk."""

    model: str
    env: str
    version: str
    served_name: str
    base_model: str
    adapter_dir: str
    port: int
    pid: int
    args: list[str]
    log_path: str
    started_at: float = field(default_factory=time.time)
    digest: str = ""  # the registry manifest's sha256, checked again before a restart
    sockets_dir: str = ""  # the server's private temp folder, removed when it is stopped

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def kill(self) -> None:
        """Stop the server's processes and remove its temp folder."""
        kill(self.pid, self.sockets_dir)


def serve_python() -> Path:
    """The serving environment's interpreter: `$LLMOPS_SERVE_PYTHON`, else `.venv-serve` in
    the repository or beside the installed package's checkout."""
    if env := os.environ.get("LLMOPS_SERVE_PYTHON"):
        candidates = [Path(env)]
    else:
        checkout = Path(__file__).resolve().parents[3]  # src/llmops/serve/ -> the checkout
        candidates = [repo_root() / ".venv-serve/bin/python",
                      checkout / ".venv-serve/bin/python"]
    for path in candidates:
        if path.exists():
            return path
    raise UsageError(f"vLLM serving environment not found at {candidates[0]}: run `make setup`")


def _record_path(model: str, env: str) -> Path:
    return state_subdir("deployments") / f"{model}-{env}.json"


def load_record(model: str, env: str) -> Deployment | None:
    path = _record_path(model, env)
    return Deployment(**json.loads(path.read_text())) if path.is_file() else None


def list_records() -> list[Deployment]:
    folder = state_subdir("deployments")
    return [Deployment(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]


def save_record(dep: Deployment) -> None:
    path = _record_path(dep.model, dep.env)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(dep), indent=2))
    tmp.replace(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lora_rank(adapter_dir: Path) -> int:
    return int(json.loads((adapter_dir / "adapter_config.json").read_text())["r"])


def vllm_args(base_model: str, base_name: str, loras: dict[str, Path], port: int,
              settings: ServeSettings) -> list[str]:
    """A local CPU server's arguments: the base model on 127.0.0.1 with each adapter as a
    LoRA module (served under its key), and the CPU engine's own settings."""
    server = VllmServer(base_model, base_name, "127.0.0.1", port, settings.dtype,
                        settings.max_model_len, settings.max_num_seqs,
                        {name: str(path) for name, path in loras.items()},
                        max(lora_rank(p) for p in loras.values()) if loras else None)
    extras = ["--block-size", str(settings.block_size),
              "--stream-interval", str(settings.stream_interval),
              "--uvicorn-log-level", "warning"]
    if settings.enforce_eager:
        extras.append("--enforce-eager")
    return common_vllm_args(server, extras + list(settings.extra_args))


def cpu_env(settings: ServeSettings) -> dict[str, str]:
    """Thread binding, the OpenMP runtime and TCMalloc for the vLLM CPU engine."""
    env: dict[str, str] = {}
    if settings.cpu_threads_bind == "all":
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, sorted(os.sched_getaffinity(0))))
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    else:
        env["VLLM_CPU_OMP_THREADS_BIND"] = settings.cpu_threads_bind
    iomp = serve_python().parent.parent / "lib" / "libiomp5.so"
    libs = [tcmalloc() if settings.preload_tcmalloc else None,
            str(iomp) if settings.preload_iomp and iomp.is_file() else None]
    if preload := preloaded(libs, os.environ.get("LD_PRELOAD")):
        env["LD_PRELOAD"] = preload
    return env


def with_port(args: list[str], port: int) -> list[str]:
    """Recorded server arguments with another port (the old one may be taken)."""
    out = list(args)
    out[out.index("--port") + 1] = str(port)
    return out


def server_env(settings: ServeSettings, sockets: Path) -> dict[str, str]:
    """The variables a vLLM CPU server starts with (over the caller's environment)."""
    return {
        # Shared by every deployment, so that only the first start of a model compiles.
        "VLLM_CACHE_ROOT": str(state_subdir("cache") / "vllm"),
        # vLLM 0.32's AOT compile cache fails to load its own artifacts with torch 2.13
        # ("'function' object has no attribute 'finalize_loading'") and compiles again on
        # every start; the Inductor cache it falls back to without AOT loads, so a warm
        # start reuses the compiled graphs.
        "VLLM_USE_AOT_COMPILE": "0",
        "VLLM_RPC_BASE_PATH": str(sockets),
        "TMPDIR": str(sockets),
        **cpu_env(settings),
        "VLLM_CPU_KVCACHE_SPACE": str(settings.kvcache_space_gib),
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE": str(HTTP_KEEP_ALIVE_S),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


@dataclass
class Server:
    """A vLLM process that `launch` started, not yet healthy."""

    proc: subprocess.Popen[bytes]
    port: int
    args: list[str]
    log_path: Path
    sockets: Path  # private temp folder: vLLM's sockets, torch's temp files

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll /health until 200; raise with the log's tail if it exits or times out."""
        wait_for_health("vLLM", f"http://127.0.0.1:{self.port}/health", self.proc,
                        self.log_path, timeout_s)

    def kill(self) -> None:
        kill(self.proc.pid, self.sockets)


def launch(name: str, args_for: Callable[[int], list[str]], settings: ServeSettings) -> Server:
    """Start a vLLM server process (not yet healthy)."""
    port = free_port()
    workdir = state_subdir("deployments") / f"{name}-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    # vLLM binds Unix sockets under these; a socket path may not exceed 107 characters,
    # which a deep state dir does: use a short private folder in the system temp dir.
    sockets = Path(tempfile.mkdtemp(prefix=f"llmops-{port}-"))
    args = args_for(port)
    env_vars = {**os.environ, **server_env(settings, sockets)}
    log_path = workdir / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(serve_python()), "-m", "vllm.entrypoints.openai.api_server", *args],
            stdout=log, stderr=subprocess.STDOUT, env=env_vars, cwd=workdir,
            start_new_session=True,  # outlives the CLI; stopped by `llmops stop`
        )
    return Server(proc, port, args, log_path, sockets)


def start(model: str, env: str, version: str, base_model: str, adapter_dir: Path,
          settings: ServeSettings, digest: str = "") -> Deployment:
    """Start a deployment's server and wait until it is healthy; on failure kill it."""
    if settings.serve == "merged":
        from llmops.models.merge import merged_model

        print(f"merging the {model} {version} adapter into its base for serving", flush=True)
        weights = merged_model(base_model, adapter_dir)
        if settings.quantization == "w8a8-int8":
            from llmops.models.quantize import int8_model

            weights = int8_model(weights)

        def args_for(port: int) -> list[str]:
            return vllm_args(str(weights), model, {}, port, settings)
    else:
        def args_for(port: int) -> list[str]:
            return vllm_args(base_model, f"{model}-base", {model: adapter_dir}, port, settings)

    template = Deployment(model, env, version, model, base_model, str(adapter_dir), 0, 0, [],
                          "", digest=digest)
    return _start(template, args_for, settings)


def restart(record: Deployment, settings: ServeSettings) -> Deployment:
    """Start a recorded deployment again with its own arguments (on a free port). Weights
    derived at deploy time (merged, int8) are checked against their manifest first."""
    from llmops.models import derived

    if "--model" in record.args:
        derived.verify(Path(record.args[record.args.index("--model") + 1]))
    return _start(record, lambda port: with_port(record.args, port), settings)


def _start(template: Deployment, args_for: Callable[[int], list[str]],
           settings: ServeSettings) -> Deployment:
    server = launch(f"{template.model}-{template.env}-{template.version}", args_for, settings)
    dep = replace(template, port=server.port, pid=server.proc.pid, args=server.args,
                  log_path=str(server.log_path), sockets_dir=str(server.sockets),
                  started_at=time.time())
    try:
        server.wait_healthy(settings.startup_timeout_s)
    except BaseException:
        server.kill()
        raise
    return dep


def kill(pid: int, sockets: str | Path = "", grace_s: float = 20) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after `grace_s`, then remove
    its temp folder `sockets` (a server that compiles leaves its generated headers there)."""
    _stop_group(pid, grace_s)
    if sockets:
        shutil.rmtree(sockets, ignore_errors=True)


def _stop_group(pid: int, grace_s: float) -> None:
    """Until every process of the group is gone: vLLM's engine and worker processes outlive
    its API process by a moment, and a server this process did not start is reaped by init."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def activate(dep: Deployment) -> Deployment | None:
    """Record `dep` as the environment's deployment; stop and return the one it replaces."""
    previous = load_record(dep.model, dep.env)
    save_record(dep)
    if previous and previous.pid != dep.pid and previous.alive():
        previous.kill()
    return previous


# --- history: one JSON line per deploy, rollback and stop, per model and environment --------


def history_path(model: str, env: str) -> Path:
    return state_subdir("deployments") / f"{model}-{env}.history.jsonl"


def record_event(model: str, env: str, version: str, action: str, result: str,
                 reason: str = "", dep: Deployment | None = None,
                 extra: dict[str, object] | None = None) -> None:
    """Append what happened: action (deploy, rollback, stop), result (serving, failed,
    restored, stopped), the version and, when a local server ran, its arguments (a
    cluster's rollout records its own `extra` fields)."""
    event: dict[str, object] = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action, "result": result,
        "model": model, "env": env, "version": version, "reason": reason[:2000]}
    if dep is not None:
        event.update(port=dep.port, base_model=dep.base_model, adapter_dir=dep.adapter_dir,
                     digest=dep.digest, args=dep.args)
    event.update(extra or {})
    with open(history_path(model, env), "a") as fh:
        fh.write(json.dumps(event) + "\n")


def read_history(model: str, env: str) -> list[dict[str, object]]:
    path = history_path(model, env)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stop(model: str, env: str) -> Deployment:
    """Stop a model's server in an environment and forget its record."""
    dep = load_record(model, env)
    if dep is None:
        raise UsageError(f"no deployment of {model!r} in {env!r}; see `llmops status`")
    dep.kill()
    _record_path(model, env).unlink(missing_ok=True)
    record_event(model, env, dep.version, "stop", "stopped", dep=dep)
    return dep
