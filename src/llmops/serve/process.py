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
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from llmops.config import HTTP_KEEP_ALIVE_S, ServeSettings
from llmops.config.paths import machine_cache, repo_root, state_dir, state_subdir
from llmops.errors import UsageError
from llmops.process.health import wait_for_health
from llmops.process.native import preloaded, tcmalloc
from llmops.redact import remember, scrubbed_env
from llmops.serve.history import History
from llmops.serve.vllm import GUARD_DIR, VllmServer
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
    created: float = 0.0  # the process's start time: a pid is ours only with it
    address: str = ""  # the model's stable address (its router), whichever worker serves

    @property
    def url(self) -> str:
        """Where clients call it: the stable address (the worker's own before a router)."""
        return f"http://{self.address}/v1" if self.address else self.check_url

    @property
    def check_url(self) -> str:
        """The worker itself: where a new version is verified before the router sends it
        anything."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def worker(self) -> str:
        """The worker as the router names it."""
        return f"http://127.0.0.1:{self.port}"

    def history_fields(self) -> dict[str, object]:
        """What the history keeps of a server: enough to start it again (rollback)."""
        return {"port": self.port, "base_model": self.base_model,
                "adapter_dir": self.adapter_dir, "digest": self.digest, "args": self.args}

    def alive(self) -> bool:
        """Whether the recorded server still runs (not another process that got its pid,
        after a reboot or a long time)."""
        return is_our_server(self.pid, self.created)

    def kill(self) -> None:
        """Stop the server's processes and remove its temp folder (a pid that is no longer
        the recorded server's is left alone)."""
        if self.alive():
            kill(self.pid, self.sockets_dir)
        elif self.sockets_dir:
            shutil.rmtree(self.sockets_dir, ignore_errors=True)
        if self.log_path:
            (Path(self.log_path).parent / STARTING).unlink(missing_ok=True)


SERVER_MODULE = "vllm.entrypoints.openai.api_server"
STARTING = "starting.json"  # in a server's folder until it is recorded or stopped


def process_created(pid: int) -> float:
    """When process `pid` started (0.0 when there is none)."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def is_our_server(pid: int, created: float) -> bool:
    """Whether `pid` is the vLLM server started at `created`: both the start time (when
    recorded) and the command line must match before anything signals it."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if created and abs(proc.create_time() - created) > 1.0:
            return False
        return SERVER_MODULE in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def serve_python(parent_env: Mapping[str, str] = os.environ) -> Path:
    """The serving environment's interpreter: LLMOPS_SERVE_PYTHON of the environment the
    server starts from (by default this process's), else `.venv-serve` in the repository
    or beside the installed package's checkout."""
    if env := parent_env.get("LLMOPS_SERVE_PYTHON"):
        candidates = [Path(env)]
    else:
        checkout = Path(__file__).resolve().parents[3]  # src/llmops/serve/ -> the checkout
        candidates = [repo_root() / ".venv-serve/bin/python",
                      checkout / ".venv-serve/bin/python"]
    for path in candidates:
        if path.exists():
            return path
    raise UsageError(f"vLLM serving environment not found at {candidates[0]}: run `make setup`")


# The secrets a vLLM server may need: the Hub's, for a gated base model. GitLab's and the
# registry's tokens, and MLflow's credentials, stay with the CLI.
SERVE_SECRETS = ("HF_TOKEN",)


def api_key_path() -> Path:
    return state_dir() / "api-key"


def local_api_key() -> str:
    """The key every local server requires (`Authorization: Bearer <key>`), kept in
    `.llmops/api-key` with mode 0600 and created on first use; the same for every local
    deployment, so that clients keep working across deploys."""
    import secrets

    path = api_key_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # readable by its owner only, whoever widened it
    key = path.read_text().strip()
    if not key:
        raise UsageError(f"{path} is empty: delete it and a new key is made on the next deploy")
    remember([key])
    return key


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
    if "auto" in (settings.dtype, settings.quantization, settings.kvcache_space_gib):
        raise ValueError("serve settings with `auto` undecided: take them from "
                         "llmops.compute.serve_settings (the machine's compute plan)")
    server = VllmServer(base_model, base_name, "127.0.0.1", port, settings.dtype,
                        settings.max_model_len, settings.max_num_seqs,
                        {name: str(path) for name, path in loras.items()},
                        max(lora_rank(p) for p in loras.values()) if loras else None)
    extras = ["--distributed-executor-backend", "uni",  # one CPU process runs the model
              "--block-size", str(settings.block_size),
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


def with_model(args: list[str], weights: Path) -> list[str]:
    """Server arguments with another model folder (the same weights elsewhere)."""
    out = list(args)
    out[out.index("--model") + 1] = str(weights)
    return out


def server_env(settings: ServeSettings, sockets: Path) -> dict[str, str]:
    """The variables a vLLM CPU server starts with (over the caller's environment)."""
    return {
        # Per machine, shared by every deployment and checkout: only the first start of a
        # model compiles, and only the first start of an architecture inspects it (in a
        # subprocess that imports vLLM again).
        "VLLM_CACHE_ROOT": str(machine_cache() / "vllm"),
        # With the uni executor (vllm_args), the engine core runs the model in its own
        # process instead of spawning a worker that imports vLLM a third time; vLLM's CPU
        # platform keeps `uni` only when this is 0 (the API server still runs the engine
        # core in a process of its own).
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
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
        from llmops.process.activity import activity

        with activity(f"starting vLLM on port {self.port} (log: {self.log_path})"):
            wait_for_health("vLLM", f"http://127.0.0.1:{self.port}/health", self.proc,
                            self.log_path, timeout_s)

    def kill(self) -> None:
        kill(self.proc.pid, self.sockets)
        (self.log_path.parent / STARTING).unlink(missing_ok=True)


def launch(name: str, args_for: Callable[[int], list[str]], settings: ServeSettings,
           api_key: str, parent_env: Mapping[str, str] = os.environ) -> Server:
    """Start a vLLM server process (not yet healthy) that requires `api_key` (given through
    its environment: a command line is visible to every user of the machine); its
    environment is built from `parent_env` (by default this process's)."""
    port = free_port()
    workdir = state_subdir("deployments") / f"{name}-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    # vLLM binds Unix sockets under these; a socket path may not exceed 107 characters,
    # which a deep state dir does: use a short private folder in the system temp dir.
    sockets = Path(tempfile.mkdtemp(prefix=f"llmops-{port}-"))
    args = args_for(port)
    env_vars = {**scrubbed_env(parent_env, keep=SERVE_SECRETS), **server_env(settings, sockets),
                "VLLM_API_KEY": api_key}
    # The key guard (`--middleware`) first, so that no folder of the caller's shadows it.
    env_vars["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(GUARD_DIR), parent_env.get("PYTHONPATH", "")) if p)
    env_vars.pop("TQDM_DISABLE", None)  # the CLI's, for its own terminal: the log keeps bars
    log_path = workdir / "server.log"
    # Written before the launch: if this process dies before the server is recorded
    # (SIGKILL, a crash), the next command finds the server by its folder and stops it.
    _write_json(workdir / STARTING, {"owner": os.getpid(),
                                     "owner_created": process_created(os.getpid()),
                                     "sockets": str(sockets)})
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(serve_python(parent_env)), "-m", SERVER_MODULE, *args],
            stdout=log, stderr=subprocess.STDOUT, env=env_vars, cwd=workdir,
            start_new_session=True,  # outlives the CLI; stopped by `llmops stop`
        )
    return Server(proc, port, args, log_path, sockets)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def reap_orphans() -> list[int]:
    """Stop the servers whose launching command died before recording them (their folder
    still has `starting.json` and its owner is gone); the pids stopped. A server that
    another running command is starting is left to it."""
    import psutil

    stopped: list[int] = []
    for marker in state_subdir("deployments").glob(f"*/{STARTING}"):
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        owner = int(info.get("owner") or 0)
        if owner and process_created(owner) and \
                abs(process_created(owner) - float(info.get("owner_created") or 0)) <= 1.0:
            continue  # its command still runs
        folder = marker.parent.resolve()
        for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
            with contextlib.suppress(psutil.Error, TypeError):
                if proc.info["cwd"] and Path(proc.info["cwd"]).resolve() == folder and \
                        SERVER_MODULE in " ".join(proc.info["cmdline"] or []):
                    kill(proc.info["pid"], str(info.get("sockets") or ""))
                    stopped.append(proc.info["pid"])
        marker.unlink(missing_ok=True)
    return stopped


@dataclass(frozen=True)
class Prepared:
    """A deployment ready to start: its record without a process, the weights it serves
    (None: the adapter as a LoRA module on its base) and its arguments for a port."""

    template: Deployment
    weights: Path | None
    args_for: Callable[[int], list[str]]


def prepare(model: str, env: str, version: str, base_model: str, adapter_dir: Path,
            settings: ServeSettings, digest: str = "") -> Prepared:
    """What a deployment serves and how it starts (merged or int8 weights built or linked
    first), not yet started."""
    weights: Path | None = None
    if settings.serve == "merged":
        from llmops.models.derived import deployed_cache, served_cache
        from llmops.models.merge import merged_model

        # What evaluation built for this adapter is linked, not built again (both are
        # checked against their manifests and the files they were built from). They are
        # built in the state folder, never inside the version's files: whatever a folder
        # downloaded from the registry holds beyond its manifest is refused, not served.
        # A version that ships its merged weights (merge_lora) serves them as they are:
        # they are listed in its manifest and signed, both checked before this is called.
        evaluated = served_cache(model, base_model, adapter_dir)
        own = deployed_cache(model, base_model, adapter_dir)
        shipped = adapter_dir / "merged"
        served = shipped if (shipped / "config.json").is_file() else merged_model(
            base_model, adapter_dir, out=own / "merged",  # announced when it merges
            reuse=evaluated / "merged")
        if settings.quantization == "w8a8-int8":
            from llmops.models.quantize import INT8_DIR, int8_model

            served = int8_model(served, out=own / INT8_DIR, reuse=evaluated / INT8_DIR)
        weights = served

        def args_for(port: int) -> list[str]:
            return vllm_args(str(served), model, {}, port, settings)
    else:
        def args_for(port: int) -> list[str]:
            return vllm_args(base_model, f"{model}-base", {model: adapter_dir}, port, settings)

    template = Deployment(model, env, version, model, base_model, str(adapter_dir), 0, 0, [],
                          "", digest=digest)
    return Prepared(template, weights, args_for)


def start(model: str, env: str, version: str, base_model: str, adapter_dir: Path,
          settings: ServeSettings, digest: str = "") -> Deployment:
    """Start a deployment's server and wait until it is healthy; on failure kill it."""
    return start_prepared(prepare(model, env, version, base_model, adapter_dir, settings,
                                  digest), settings)


def start_prepared(prepared: Prepared, settings: ServeSettings) -> Deployment:
    return _start(prepared.template, prepared.args_for, settings)


def restart(record: Deployment, settings: ServeSettings) -> Deployment:
    """Start a recorded deployment again with its own arguments (on a free port). Weights
    derived at deploy time (merged, int8) are checked against their manifest first."""
    from llmops.models import derived

    if "--model" in record.args:
        weights = Path(record.args[record.args.index("--model") + 1])
        # What was built has derived.json and is checked against it. Merged weights shipped
        # without one are the version's own files, which the caller checked against its
        # manifest and signature; anything else is refused (derived.verify says why).
        shipped = weights.resolve().is_relative_to(Path(record.adapter_dir).resolve())
        if (weights / derived.DERIVED).is_file() or not shipped:
            derived.verify(weights)
    return _start(record, lambda port: with_port(record.args, port), settings)


def _start(template: Deployment, args_for: Callable[[int], list[str]],
           settings: ServeSettings) -> Deployment:
    server = launch(f"{template.model}-{template.env}-{template.version}", args_for, settings,
                    local_api_key())
    dep = replace(template, port=server.port, pid=server.proc.pid, args=server.args,
                  log_path=str(server.log_path), sockets_dir=str(server.sockets),
                  started_at=time.time(), created=process_created(server.proc.pid))
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


def record_started(dep: Deployment) -> Deployment | None:
    """Record `dep` as the environment's deployment (its launch is over); the record it
    replaces, whose server the caller stops."""
    previous = load_record(dep.model, dep.env)
    save_record(dep)
    (Path(dep.log_path).parent / STARTING).unlink(missing_ok=True)
    return previous


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGTERM and SIGINT until the block ends, then deliver them. Python runs signal
    handlers in the main thread whichever thread the signal reaches, so the handlers are
    swapped (a thread mask would not do); off the main thread (a Prefect task), signals
    are not delivered to the block anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for held in previous:
        signal.signal(held, lambda number, frame: pending.append(number))
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        for number in pending:
            signal.raise_signal(number)


# --- history: one JSON line per deploy, rollback and stop, per model and environment --------


def stop(model: str, env: str) -> Deployment:
    """Stop a model's server in an environment and forget its record."""
    reap_orphans()
    dep = load_record(model, env)
    if dep is None:
        raise UsageError(f"no deployment of {model!r} in {env!r}; see `llmops status`")
    dep.kill()
    _record_path(model, env).unlink(missing_ok=True)
    History(model, env).record(dep.version, "stop", "stopped", fields=dep.history_fields())
    return dep
