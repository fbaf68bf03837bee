"""Verifying an endpoint as a user would call it: the smoke test through the OpenAI client
(golden questions, with the minimum accuracy), then the bounded load test."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from llmops.config import ModelSpec, VerifySettings
from llmops.config.golden import GoldenItem, answer_matches
from llmops.serve.loadtest import load_problems, load_test


@dataclass
class SmokeResult:
    """What the endpoint answered; `passed` is False with reasons when any call failed."""

    url: str
    models: list[str]
    answers: list[dict[str, object]] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def right(self) -> int:
        """How many golden answers were right."""
        return sum(bool(a["correct"]) for a in self.answers)


def smoke_test(base_url: str, served_name: str, golden: list[GoldenItem], max_tokens: int,
               timeout_s: float, api_key: str, match: str = "contains") -> SmokeResult:
    """GET /health and /v1/models, then one chat completion per golden question, scored as
    the golden set scores them (`match`)."""
    from openai import OpenAI

    root = base_url.removesuffix("/v1")
    result = SmokeResult(base_url, [])
    try:
        # With the key: a local model's stable address (its router) requires it on /health
        # too; a vLLM worker's /health ignores it.
        health = httpx.get(f"{root}/health", timeout=timeout_s,
                           headers={"Authorization": f"Bearer {api_key}"})
        if health.status_code != 200:
            result.problems.append(f"/health answered {health.status_code}")
        client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
        result.models = [m.id for m in client.models.list().data]
        if served_name not in result.models:
            result.problems.append(f"/v1/models lacks {served_name!r}: {result.models}")
            return result
        for item in golden:
            started = time.perf_counter()
            reply = client.chat.completions.create(
                model=served_name, messages=[{"role": "user", "content": item.question}],
                max_tokens=max_tokens, temperature=0.0)
            result.latency_s.append(time.perf_counter() - started)
            text = reply.choices[0].message.content or ""
            result.answers.append({"question": item.question, "answer": text,
                                   "expected": item.answer,
                                   "correct": answer_matches(text, item.answer, match)})
            if not text.strip():
                result.problems.append(f"empty answer to {item.question!r}")
    except Exception as exc:  # any transport or API error is a failed smoke test
        result.problems.append(f"{type(exc).__name__}: {exc}")
    return result


def accuracy_problems(result: SmokeResult, minimum: float | None) -> list[str]:
    """The served model's share of right golden answers against `minimum` (None: none)."""
    if minimum is None or not result.answers:
        return []
    share = result.right / len(result.answers)
    if share >= minimum:
        return []
    return [f"golden accuracy {share:.2f} ({result.right} of {len(result.answers)} answers "
            f"right) is below the minimum {minimum:g} (verify.min_golden_accuracy)"]


@dataclass
class Verification:
    smoke: SmokeResult
    load: dict[str, Any] | None  # the load test's summary (None when not configured)


def golden_floor(spec: ModelSpec, minimum: float | str | None) -> float | None:
    """`verify.min_golden_accuracy` as a number: 'gate' is the highest golden_accuracy
    minimum of the model's gate rules (None when it has none)."""
    if minimum != "gate":
        return None if minimum is None else float(minimum)
    floors = [r.min for r in spec.validation.gates
              if r.metric == "golden_accuracy" and r.min is not None]
    return max(floors) if floors else None


def run_checks(spec: ModelSpec, verify: VerifySettings, url: str, served_name: str,
               api_key: str) -> tuple[Verification, list[str]]:
    """The smoke test, then (if it passed) the bounded load test, against any endpoint
    (a local server or a cluster's Service) with its API key; what each broke."""
    golden_set, golden = spec.golden_sets()[0]
    smoke = smoke_test(url, served_name, golden[: verify.golden_prompts],
                       spec.validation.eval.max_new_tokens, verify.request_timeout_s,
                       api_key, golden_set.match)
    problems, load = smoke.problems + accuracy_problems(
        smoke, golden_floor(spec, verify.min_golden_accuracy)), None
    if not problems and verify.load is not None:
        from llmops.process.activity import activity

        cfg = verify.load
        with activity(f"load test: {cfg.concurrency} clients × {cfg.duration_s:.0f} s "
                      f"(≥ {cfg.min_requests} requests, {cfg.max_tokens} tokens each)"):
            result = load_test(url, served_name, [g.question for g in golden],
                               cfg.concurrency, cfg.duration_s, cfg.max_tokens,
                               verify.request_timeout_s, cfg.min_requests, api_key=api_key)
        load = result.summary()
        problems += [f"load test: {p}" for p in load_problems(load, cfg)]
    return Verification(smoke, load), problems
