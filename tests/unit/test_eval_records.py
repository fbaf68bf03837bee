"""An evaluation's records in MLflow 3: the evaluation table on the run, one trace per
request (the candidate's on its logged model) with the expected answer and the verdict as
assessments, and no secret in any of them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmops import redact
from llmops.evaluation.records import (
    ANSWERS_TABLE,
    CORRECT,
    EXPECTED,
    ROLE_TAG,
    TABLE_COLUMNS,
    log_evaluation_records,
    rationale,
)
from llmops.tracking import experiment_id

TOKEN = "glpat-" + "x" * 24  # shaped like a GitLab token
REMEMBERED = "hunter2-the-db-password"


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import mlflow
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "state"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # also points MLflow's tracer at this store
    redact.remember([REMEMBERED])
    yield mlflow.MlflowClient(uri)
    redact.forget_all()
    mlflow.flush_trace_async_logging()
    mlflow.tracing.reset()  # the next test's tracer exports to its own store


def answer(role: str, question: str, correct: bool, golden_set: str = "facts",
           answer_text: str | None = None) -> dict[str, Any]:
    return {"role": role, "golden_set": golden_set, "question": question,
            "expected": "Paris", "answer": answer_text or ("Paris." if correct else "Lyon."),
            "finish_reason": "stop", "latency_s": 0.25, "correct": correct, "rouge_l": 0.5}


def a_candidate(client: Any, model: str) -> tuple[str, str, str]:
    """(experiment, run, the candidate's logged model) as training leaves them."""
    exp = experiment_id(model)
    run = client.create_run(exp, run_name=f"{model}-1").info.run_id
    model_id = client.create_logged_model(exp, name=model, source_run_id=run).model_id
    return exp, run, str(model_id)


def fake_report() -> list[dict[str, Any]]:
    leak = f"My token is {TOKEN} and the password {REMEMBERED}"
    return [answer("base", "Capital of France?", False),
            answer("base", "Largest city of France?", True),
            answer("candidate", "Capital of France?", True),
            answer("candidate", "Largest city of France?", False, answer_text=leak),
            answer("production", "Capital of France?", True, golden_set="exact-facts")]


def test_each_request_is_a_trace_with_its_verdict_and_the_candidates_on_its_model(
        store: Any) -> None:
    exp, run, model_id = a_candidate(store, "traced")
    answers = fake_report()
    out = log_evaluation_records(run, answers, model_id=model_id,
                                 match_rules={"facts": "contains", "exact-facts": "exact"},
                                 ended_at=1_800_000_000.0)
    assert out.warnings == [] and len(out.trace_ids) == len(answers)
    assert out.assessments == 2 * len(answers)

    traces = store.search_traces(locations=[exp], max_results=100)
    assert sorted(t.info.trace_id for t in traces) == sorted(out.trace_ids)
    by_id = {t.info.trace_id: t for t in traces}
    for a, trace_id in zip(answers, out.trace_ids, strict=True):
        trace = by_id[trace_id]
        root = trace.data.spans[0]
        assert root.inputs["messages"] == [{"role": "user", "content": a["question"]}]
        reply = root.outputs["choices"][0]
        assert reply["finish_reason"] == "stop"
        assert reply["message"]["content"] == redact.redact(a["answer"])
        assert (root.end_time_ns - root.start_time_ns) == 250_000_000  # its latency
        assert root.end_time_ns == 1_800_000_000 * 10**9
        info = trace.info
        assert info.tags[ROLE_TAG] == a["role"] and info.tags["llmops.run_id"] == run
        assert info.trace_metadata["mlflow.sourceRun"] == run
        assert (info.trace_metadata.get("mlflow.modelId") == model_id) == (
            a["role"] == "candidate")
        got = {x.name: x for x in info.assessments}
        assert got[EXPECTED].expectation.value == "Paris"
        assert got[CORRECT].feedback.value is a["correct"]
        rule = "exact" if a["golden_set"] == "exact-facts" else "contains"
        assert got[CORRECT].rationale == rationale(a["correct"], rule)
        assert got[CORRECT].source.source_id == "llmops.golden_match"

    # The logged model's Traces tab: the candidate's requests, and only those.
    on_model = store.search_traces(locations=[exp], model_id=model_id)
    assert len(on_model) == 2
    assert {t.info.tags[ROLE_TAG] for t in on_model} == {"candidate"}
    assert len(store.search_traces(locations=[exp], run_id=run)) == len(answers)
    tags = store.get_logged_model(model_id).tags
    assert (tags["llmops.eval.run_id"], tags["llmops.eval.tables"],
            tags["llmops.eval.traces"]) == (run, ANSWERS_TABLE, "2")


def test_the_evaluation_table_has_one_row_per_answer_and_a_new_file_per_evaluation(
        store: Any) -> None:
    exp, run, model_id = a_candidate(store, "tabled")
    answers = fake_report()
    suites = [{"name": "probes", "metrics": {},
               "records": [{"role": "candidate", "prompt": "Leak it", "refused": True,
                            "reply": TOKEN, "scores": {"refusal": 1.0}}]}]
    out = log_evaluation_records(run, answers, suites, model_id=model_id)
    assert out.tables == [ANSWERS_TABLE, "eval/suite-probes.json"]
    table = store.load_table(exp, ANSWERS_TABLE, run_ids=[run])
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert len(table) == len(answers)
    assert list(table["role"]) == [a["role"] for a in answers]
    assert list(table["correct"]) == [a["correct"] for a in answers]
    assert list(table["trace_id"]) == out.trace_ids
    probes = store.load_table(exp, "eval/suite-probes.json", run_ids=[run])
    assert probes.to_dict("records") == [{"role": "candidate", "prompt": "Leak it",
                                          "refused": True, "reply": "[REDACTED]",
                                          "scores": '{"refusal": 1.0}'}]
    # A second evaluation of the same run keeps its own table (log_table would append).
    again = log_evaluation_records(run, answers[:1], model_id=model_id, traces=False)
    assert again.tables == ["eval/answers-2.json"] and again.trace_ids == []
    assert len(store.load_table(exp, "eval/answers-2.json", run_ids=[run])) == 1


def test_no_secret_reaches_the_traces_or_the_table(store: Any, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow.tracing.processor import base_mlflow
    from mlflow.tracing.utils import environment

    # A CI clone's remote carries the job token: MLflow's tracer puts it on every trace.
    remote = {"mlflow.source.git.repoURL": f"https://ci:{REMEMBERED}@gitlab.example/x.git"}
    for module in (base_mlflow, environment):
        monkeypatch.setattr(module, "resolve_env_metadata", lambda: dict(remote))
    mlflow.tracing.reset()  # a tracer made now, with that environment
    exp, run, model_id = a_candidate(store, "secret")
    log_evaluation_records(run, fake_report(), model_id=model_id)
    traces = store.search_traces(locations=[exp])
    assert {t.info.trace_metadata["mlflow.source.git.repoURL"] for t in traces} == {
        "https://[REDACTED]@gitlab.example/x.git"}
    texts = [t.to_json() for t in traces]
    local = mlflow.artifacts.download_artifacts(run_id=run, artifact_path=ANSWERS_TABLE,
                                                dst_path=str(tmp_path / "dl"))
    texts.append(Path(local).read_text())
    assert any("[REDACTED]" in t for t in texts[:-1]) and "[REDACTED]" in texts[-1]
    mlflow.flush_trace_async_logging()
    stored = [p for p in tmp_path.rglob("*") if p.is_file() and "dl" not in p.parts]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in stored]  # the store itself
    for text in texts:
        assert TOKEN not in text and REMEMBERED not in text


def test_a_store_that_refuses_traces_fails_nothing(store: Any, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    import mlflow

    exp, run, model_id = a_candidate(store, "refused")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"store down at https://user:{REMEMBERED}@mlflow.example")

    monkeypatch.setattr(mlflow, "start_span_no_context", refuse)
    with caplog.at_level(logging.WARNING, "llmops.evaluation.records"):
        out = log_evaluation_records(run, fake_report(), model_id=model_id)
    assert out.trace_ids == [] and out.tables == [ANSWERS_TABLE]  # the table still is
    assert len(out.warnings) == 1 and "gate decision stand" in out.warnings[0]
    assert REMEMBERED not in caplog.text and "could not log the traces" in caplog.text
    assert list(store.load_table(exp, ANSWERS_TABLE, run_ids=[run])["trace_id"]) == [""] * 5
    assert len(store.search_traces(locations=[exp])) == 0
