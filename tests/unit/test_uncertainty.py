"""Per-question verdicts pair the roles question by question; the summary and its metrics."""

from __future__ import annotations

import pytest

from llmops.evaluation.uncertainty import paired, question_verdicts, summarize


def answer(role: str, question: str, correct: bool,
           golden_set: str = "golden") -> dict[str, object]:
    return {"role": role, "golden_set": golden_set, "question": question, "correct": correct,
            "answer": "", "expected": ""}


def test_verdicts_are_keyed_by_set_and_question_with_repeats_numbered() -> None:
    answers = [answer(r, q, ok, s) for r, q, ok, s in [
        ("base", "port?", False, "golden"), ("base", "port?", True, "golden"),
        ("base", "who?", False, "extra"),
        ("candidate", "port?", True, "golden"), ("candidate", "port?", True, "golden"),
        ("candidate", "who?", True, "extra")]]
    v = question_verdicts(answers)
    assert v["base"]["golden_accuracy"] == {"golden: port?": False, "golden: port? #2": True,
                                            "extra: who?": False}
    assert v["candidate"]["golden.extra.accuracy"] == {"extra: who?": True}
    assert set(v["base"]) == {"golden_accuracy", "golden.golden.accuracy",
                              "golden.extra.accuracy"}
    diff = paired(v, "candidate", "base", "golden_accuracy")
    assert diff is not None and (diff.both, diff.only_first, diff.only_second) == (1, 2, 0)
    assert paired(v, "candidate", "production", "golden_accuracy") is None


def test_summary_has_every_accuracy_and_the_candidates_differences() -> None:
    answers = ([answer("candidate", f"q{i}", i < 22) for i in range(28)]
               + [answer("production", f"q{i}", i < 20) for i in range(28)]
               + [answer("base", f"q{i}", False) for i in range(28)])
    unc = summarize(question_verdicts(answers))
    assert list(unc.accuracy["candidate"]) == ["golden_accuracy", "golden.golden.accuracy"]
    assert unc.accuracy["candidate"]["golden_accuracy"].text() == \
        "0.786 (22/28, 95% CI 0.605–0.898)"
    assert list(unc.differences) == ["candidate-production", "candidate-base"]
    vs_prod = unc.differences["candidate-production"]["golden_accuracy"]
    assert (vs_prod.n, vs_prod.only_first, vs_prod.only_second) == (28, 2, 0)
    assert vs_prod.within_noise
    assert not unc.differences["candidate-base"]["golden_accuracy"].within_noise
    metrics = unc.metrics()
    assert metrics["candidate"]["golden_accuracy_ci_low"] == pytest.approx(0.604614, abs=1e-6)
    assert set(metrics["candidate"]) == {
        "golden_accuracy_ci_low", "golden_accuracy_ci_high",
        "golden_accuracy_vs_production_ci_low", "golden_accuracy_vs_production_ci_high",
        "golden_accuracy_vs_base_ci_low", "golden_accuracy_vs_base_ci_high"}
    assert set(metrics["base"]) == {"golden_accuracy_ci_low", "golden_accuracy_ci_high"}
    body = unc.to_json()
    assert body["differences"]["candidate-production"]["golden_accuracy"]["within_noise"]
    assert body["accuracy"]["base"]["golden_accuracy"]["n"] == 28


def test_no_production_means_no_production_difference() -> None:
    answers = [answer("candidate", "q", True), answer("base", "q", False)]
    assert list(summarize(question_verdicts(answers)).differences) == ["candidate-base"]
