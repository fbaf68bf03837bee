"""`llmops build-retention <model>`: the model's retention set, built once.

The base model, served by vLLM exactly as evaluation serves it (llmops.evaluation.evalserve),
answers every prompt of the candidate pool greedily; the prompts it answers correctly
become `eval.retention.path` (validation/retention/<model>.jsonl), with its provenance
beside it (<model>.provenance.json: the base model's digest, the pool's sha256, the vLLM
release, the date, the generation settings, what was asked, kept and dropped). Both files
are written into the checkout, to review and commit.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops.compute import serve_settings
from llmops.config import ModelSpec, ServeSettings, load_deploy
from llmops.config.paths import resolve_in_repo
from llmops.digests import folder_digest, sha256_file
from llmops.errors import CheckFailed, UsageError
from llmops.evaluation.retention import ask, provenance_path, read_items, trained_on
from llmops.evaluation.suite import EvalEndpoint
from llmops.models.base import ensure_base_model
from llmops.process.activity import activity
from llmops.redact import redact
from llmops.serve import process as serve
from llmops.serve.vllm_release import vllm_version
from llmops.stages.evaluation import EVAL_ENV


@dataclass(frozen=True)
class RetentionBuilt:
    path: Path
    provenance_path: Path
    asked: int
    kept: int
    by_category: dict[str, tuple[int, int]]  # category -> (kept, asked)


@contextlib.contextmanager
def _serve_base(spec: ModelSpec, base_model: str,
                settings: ServeSettings) -> Iterator[EvalEndpoint]:
    """A vLLM server of the base model alone (served as "base"), stopped on exit."""
    api_key = secrets.token_urlsafe(24)
    server = serve.launch(f"{spec.name}-retention",
                          lambda p: serve.vllm_args(base_model, "base", {}, p, settings),
                          settings, api_key)
    try:
        try:
            server.wait_healthy(settings.startup_timeout_s)
        except Exception as exc:
            raise CheckFailed(f"vLLM could not load {base_model}: {exc}") from exc
        yield EvalEndpoint(f"http://127.0.0.1:{server.port}/v1", api_key, ("base",),
                       spec.validation.eval.max_new_tokens, settings.max_num_seqs)
    finally:
        server.kill()


def build_retention(spec: ModelSpec, base_model: str | None = None) -> RetentionBuilt:
    """Ask the pool of the model's base, keep what it answers right, write the set and its
    provenance (`eval.retention` of validation/<model>.yml says where)."""
    settings = spec.validation.eval.retention
    if settings is None:
        raise UsageError(f"validation/{spec.name}.yml: eval.retention: not configured; add "
                         "`retention: {path: validation/retention/<model>.jsonl}` under eval")
    pool_path = resolve_in_repo(settings.pool)
    pool = read_items(pool_path)
    if not pool:
        raise UsageError(f"{settings.pool}: the pool is empty")
    trained_on(spec, pool, settings.pool)
    base = base_model or ensure_base_model(spec.base_model)
    served = serve_settings(load_deploy(EVAL_ENV), spec.name)
    with _serve_base(spec, base, served) as endpoint, \
            activity(f"asking the base model {len(pool)} retention prompts"):
        replies = ask(endpoint, pool, settings.max_new_tokens)
    kept = [r.item for r in replies if r.correct]
    asked_by = Counter(i.category for i in pool)
    kept_by = Counter(i.category for i in kept)
    out = resolve_in_repo(settings.path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(i.to_row(), ensure_ascii=False) + "\n" for i in kept),
                   encoding="utf-8")
    provenance: dict[str, Any] = {
        "model": spec.name,
        "set": settings.path,
        "set_sha256": "sha256:" + sha256_file(out),
        "pool": settings.pool,
        "pool_sha256": "sha256:" + sha256_file(pool_path),
        "base_model": spec.base_model,
        "base_model_digest": folder_digest(Path(base)) if Path(base).is_dir() else None,
        "engine": f"vllm {vllm_version()}",
        "dtype": served.dtype,
        "max_new_tokens": settings.max_new_tokens,
        "temperature": 0.0,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "asked": len(pool),
        "kept": len(kept),
        "by_category": {c: {"kept": kept_by[c], "asked": n} for c, n in sorted(asked_by.items())},
        "dropped": [{"id": r.item.id, "answer": redact(r.answer)} for r in replies
                    if not r.correct],
    }
    prov = provenance_path(out)
    prov.write_text(json.dumps(provenance, indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    return RetentionBuilt(out, prov, len(pool), len(kept),
                          {c: (kept_by[c], n) for c, n in sorted(asked_by.items())})
