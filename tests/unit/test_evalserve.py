"""Generation metrics: accuracy per set, ROUGE-L, format checks and latency."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmops.config.golden import answer_matches, read_golden
from llmops.errors import UsageError
from llmops.evaluation.evalserve import Answer, generation_metrics


def ans(text: str, expected: str, finish: str = "stop", latency: float = 1.0,
        role: str = "candidate", golden_set: str = "golden") -> Answer:
    return Answer(role, golden_set, "q", expected, text, finish, latency,
                  answer_matches(text, expected, "contains"), 0.5)


def test_accuracy_format_and_latency() -> None:
    answers = [ans("Port 7431.", "7431", latency=1.0),
               ans("<|im_end|>Tallinn", "Tallinn", latency=2.0),
               ans("", "23 days", latency=3.0),
               ans("It lasts 23 days and", "23 days", finish="length", latency=4.0),
               ans("x", "7431", role="base")]
    m = generation_metrics(answers, "candidate")
    assert m["golden_accuracy"] == 0.75 and m["golden.golden.accuracy"] == 0.75
    assert m["format_template_leak_rate"] == 0.25
    assert m["format_empty_rate"] == 0.25 and m["format_truncated_rate"] == 0.25
    assert m["latency_p50_s"] == pytest.approx(2.5)
    assert m["latency_p95_s"] == pytest.approx(3.85)
    assert generation_metrics(answers, "base")["golden_accuracy"] == 0.0
    assert generation_metrics(answers, "production") == {}


def test_single_answer_latency_and_no_answers() -> None:
    m = generation_metrics([ans("7431", "7431", latency=0.3)], "candidate")
    assert m["latency_p50_s"] == m["latency_p95_s"] == 0.3
    assert not math.isnan(m["golden.golden.rouge_l"])


def test_matching_rules() -> None:
    assert answer_matches("The port is 7431.", "7431", "contains")
    assert not answer_matches("The port is 7431.", "7431", "exact")
    assert answer_matches(" Tallinn ", "tallinn", "exact")


def test_a_malformed_golden_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "golden.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{"question": "q"\n')
    with pytest.raises(UsageError, match=r"golden.jsonl:2: not a JSON object"):
        read_golden(path)
    path.write_text('{"question": "q", "answer": ""}\n')
    with pytest.raises(UsageError, match=r"golden.jsonl:1: a golden row needs"):
        read_golden(path)


def test_golden_sets_pair_each_configured_set_with_its_items() -> None:
    from llmops.config import load_model

    spec = load_model("support-bot")
    sets = spec.golden_sets()
    assert [g for g, _ in sets] == spec.validation.eval.golden
    assert all(items and all(i.question and i.answer for i in items) for _, items in sets)
