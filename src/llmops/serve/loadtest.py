"""A bounded load test of an OpenAI-compatible endpoint: N concurrent clients for T seconds.

Each client streams chat completions back to back (round-robin over the prompts), so that
time to first token is measured as a user sees it, and the server's own usage count gives
the generated tokens. Errors (transport, HTTP status, an empty stream) are counted and a
few are kept as samples; nothing is retried.

Every client is one user with its own keep-alive connection, as load tools model users:
one httpx pool shared by many streaming clients becomes the bottleneck itself, holding
requests back while they wait for a pooled connection.
The users share one TLS context: httpx builds one per client otherwise, and that CPU is
taken from the server under test when both run on one machine.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    tokens: int
    latency_s: list[float] = field(default_factory=list, repr=False)
    ttft_s: list[float] = field(default_factory=list, repr=False)
    error_samples: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.duration_s if self.duration_s else 0.0

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("latency_s", "ttft_s")}
        out.update(error_rate=self.error_rate, tokens_per_s=round(self.tokens_per_s, 1),
                   p50_s=percentile(self.latency_s, 50), p99_s=percentile(self.latency_s, 99),
                   ttft_p50_s=percentile(self.ttft_s, 50),
                   ttft_p99_s=percentile(self.ttft_s, 99))
        return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None when there are no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n*q/100), at least 1
    return round(ordered[int(rank) - 1], 4)


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any],
               result: LoadResult) -> None:
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first is None and any((c.get("delta") or {}).get("content")
                                         for c in chunk.get("choices", [])):
                    first = time.perf_counter()
                if chunk.get("usage"):
                    tokens = int(chunk["usage"].get("completion_tokens") or 0)
        if first is None or tokens == 0:
            raise RuntimeError("the stream ended without generating a token")
    except Exception as exc:  # every failure is an error of the load test, not of ours
        result.errors += 1
        if len(result.error_samples) < 3:
            result.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
        return
    finally:
        result.requests += 1
    result.latency_s.append(time.perf_counter() - started)
    result.ttft_s.append(first - started)
    result.tokens += tokens


async def _run(base_url: str, model: str, prompts: list[str], concurrency: int,
               duration_s: float, max_tokens: int, timeout_s: float,
               min_requests: int, api_key: str) -> LoadResult:
    result = LoadResult(concurrency, 0.0, 0, 0, 0)
    url = f"{base_url.rstrip('/')}/chat/completions"
    tls = httpx.create_ssl_context()  # the same trust store httpx would load per client
    started = time.perf_counter()
    deadline = started + duration_s
    counter = itertools.count()  # request numbers, shared by the users

    async def user() -> None:
        one_connection = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=timeout_s, limits=one_connection, verify=tls,
                                     headers={"Authorization": f"Bearer {api_key}"}) as client:
            while True:
                n = next(counter)
                if n >= min_requests and time.perf_counter() >= deadline:
                    return
                body = {"model": model, "max_tokens": max_tokens, "temperature": 0.0,
                        "ignore_eos": True, "stream": True,
                        "stream_options": {"include_usage": True},
                        "messages": [{"role": "user", "content": prompts[n % len(prompts)]}]}
                await _one(client, url, body, result)

    await asyncio.gather(*(user() for _ in range(concurrency)))
    result.duration_s = time.perf_counter() - started
    return result


def load_test(base_url: str, model: str, prompts: list[str], concurrency: int,
              duration_s: float, max_tokens: int, timeout_s: float = 120.0,
              min_requests: int = 0, *, api_key: str) -> LoadResult:
    """Run `concurrency` streaming clients until `duration_s` has passed and at least
    `min_requests` were sent; every request generates `max_tokens` tokens (ignore_eos)."""
    if not prompts:
        raise ValueError("a load test needs at least one prompt")
    return asyncio.run(_run(base_url, model, prompts, concurrency, duration_s, max_tokens,
                            timeout_s, min_requests, api_key))


def load_problems(summary: dict[str, Any], settings: Any) -> list[str]:
    """What a load-test summary breaks of `settings` (a LoadSettings); fails closed when a
    threshold's figure is missing."""
    problems = []
    if summary["requests"] < settings.min_requests:
        problems.append(f"{summary['requests']} requests < {settings.min_requests} required")
    if summary["error_rate"] > settings.max_error_rate:
        problems.append(f"error rate {summary['error_rate']:.1%} > "
                        f"{settings.max_error_rate:.1%} ({summary['errors']} of "
                        f"{summary['requests']}; e.g. {'; '.join(summary['error_samples'])})")
    p99 = summary.get("p99_s")
    if settings.max_p99_latency_s is not None and (p99 is None
                                                   or p99 > settings.max_p99_latency_s):
        problems.append(f"p99 latency {p99} s > {settings.max_p99_latency_s} s")
    rate = summary.get("tokens_per_s") or 0.0
    if settings.min_tokens_per_s is not None and rate < settings.min_tokens_per_s:
        problems.append(f"{rate} tokens/s < {settings.min_tokens_per_s}")
    return problems
