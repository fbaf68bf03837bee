"""Load-test arithmetic and thresholds (the HTTP part runs against vLLM in tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest

from llmops.config import LoadSettings
from llmops.loadtest import LoadResult, load_problems, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0  # ceil(100*0.5) = 50th value
    assert percentile(values, 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # ceil(1.5) = 2nd of [1, 2, 3]
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def summary(**kw: Any) -> dict[str, Any]:
    r = LoadResult(concurrency=64, duration_s=10.0, requests=64, errors=0, tokens=2048,
                   latency_s=[1.0] * 63 + [4.0], ttft_s=[0.2] * 64)
    for k, v in kw.items():
        setattr(r, k, v)
    return r.summary()


def test_a_clean_run_passes_default_thresholds() -> None:
    s = summary()
    assert s["tokens_per_s"] == 204.8 and s["p99_s"] == 4.0 and s["error_rate"] == 0.0
    assert load_problems(s, LoadSettings()) == []


def test_one_error_breaks_a_zero_error_budget_and_shows_a_sample() -> None:
    s = summary(errors=1, error_samples=["ReadTimeout: timed out"])
    [problem] = load_problems(s, LoadSettings())
    assert "1.6% > 0.0%" in problem and "ReadTimeout" in problem


@pytest.mark.parametrize("settings,needle", [
    (LoadSettings(max_p99_latency_s=3.0), "p99 latency 4.0 s > 3.0 s"),
    (LoadSettings(min_tokens_per_s=500), "204.8 tokens/s < 500"),
    (LoadSettings(min_requests=100), "64 requests < 100"),
])
def test_each_threshold_can_fail(settings: LoadSettings, needle: str) -> None:
    assert any(needle in p for p in load_problems(summary(), settings))


def test_no_answers_at_all_fail_closed() -> None:
    s = summary(requests=64, errors=64, latency_s=[], ttft_s=[], tokens=0)
    problems = load_problems(s, LoadSettings(max_p99_latency_s=5, min_tokens_per_s=1))
    assert len(problems) == 3  # error rate, missing p99, no tokens
