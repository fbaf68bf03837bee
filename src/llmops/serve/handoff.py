"""The server that evaluated a release's candidate, kept running for that release's deploy.

Within one `llmops release`, the gate judges the candidate on a vLLM server started for it
(its merged or int8 weights, `llmops.evaluation.served`), and the deploy would then start
the same weights again: on two CPU cores a second start costs a minute or more. When the
target says it can (`takes_over`), evaluation keeps that server instead of stopping it, and
the deploy serves it, so the process the gate judged is the one clients reach.

It is taken over only when nothing differs from a fresh start (`mismatch`): the weights the
deploy built from the registered version are the same bytes as the ones the server loaded
(both folders' manifests, `llmops.models.derived`), the arguments are the ones the deploy
would pass (the weights' path aside), the settings and the API key are the deploy's, and
it still answers /health. Otherwise it is stopped and the version starts as always. A kept
server that no deploy takes is stopped when the release ends, whatever ended it (`discard`);
if the release's process dies, the server's `starting.json` names a dead owner and the next
command stops it (`process.reap_orphans`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from llmops.config import ServeSettings
from llmops.digests import DERIVED
from llmops.models import derived
from llmops.process.activity import tell
from llmops.serve.process import Deployment, Prepared, Server, process_created, with_model


@dataclass(frozen=True)
class Kept:
    """An evaluation server kept for a deploy of `model`."""

    model: str
    server: Server
    weights: Path  # the derived folder it serves (evaluation's, `derived.served_cache`)
    settings: ServeSettings
    api_key: str  # the key it was started with


_kept: dict[str, Kept] = {}  # model → its kept server; one release per model at a time
_lock = threading.Lock()


def keep(kept: Kept) -> None:
    """Keep `kept` for the next deploy of its model (one replaced is stopped)."""
    with _lock:
        previous = _kept.pop(kept.model, None)
        _kept[kept.model] = kept
    if previous is not None:
        previous.server.kill()


def take(model: str) -> Kept | None:
    """The server kept for `model`, no longer kept (the caller serves or stops it)."""
    with _lock:
        return _kept.pop(model, None)


def discard(model: str) -> None:
    """Stop the server kept for `model`, if any."""
    if (kept := take(model)) is not None:
        kept.server.kill()


def _files(folder: Path) -> dict[str, str]:
    try:
        files = json.loads((folder / DERIVED).read_text()).get("files")
    except (OSError, ValueError):
        return {}
    return files if isinstance(files, dict) else {}


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def mismatch(kept: Kept, weights: Path, args_for: Callable[[int], list[str]],
             settings: ServeSettings, api_key: str) -> str | None:
    """Why `kept` cannot serve as the deploy of `weights` started with `args_for(port)`,
    `settings` and `api_key`; None when it can."""
    if kept.settings != settings:
        return "it was started with other serving settings"
    if kept.api_key != api_key:
        return "it requires another API key"
    if (problem := derived.mismatch(weights)) is not None:
        return problem
    if (problem := derived.mismatch(kept.weights)) is not None:
        return problem
    theirs, ours = _files(kept.weights), _files(weights)
    if not ours or theirs != ours:
        return f"{kept.weights.name}/ and {weights.name}/ are not the same files"
    port = kept.server.port
    if with_model(kept.server.args, weights) != args_for(port):
        return "its arguments differ from the deploy's"
    if kept.server.proc.poll() is not None:
        return f"it exited (code {kept.server.proc.returncode})"
    if not _healthy(port):
        return "it does not answer /health"
    return None


def take_over(prepared: Prepared, settings: ServeSettings, api_key: str) -> Deployment | None:
    """The server kept for `prepared`'s model, as its deployment, where it serves what a
    fresh start would (`mismatch`); else None, and one kept that cannot serve is stopped
    first (the caller starts the version)."""
    template = prepared.template
    kept = take(template.model)
    if kept is None:
        return None
    server = kept.server
    problem = "the version is served as a LoRA module" if prepared.weights is None else \
        mismatch(kept, prepared.weights, prepared.args_for, settings, api_key)
    if problem is not None:
        server.kill()
        tell(f"the server that evaluated {template.model} is not served ({problem}): "
             "starting the version")
        return None
    tell(f"{template.model} {template.version}: serving the server the gate evaluated "
         f"(pid {server.proc.pid}, port {server.port}): the same weights and arguments, "
         "no second start")
    # The record's arguments start it again (a rollback) from the deployment's own copy of
    # the weights: evaluation's is replaced by the next candidate's.
    return replace(template, port=server.port, pid=server.proc.pid,
                   args=prepared.args_for(server.port), log_path=str(server.log_path),
                   sockets_dir=str(server.sockets), started_at=time.time(),
                   created=process_created(server.proc.pid))
