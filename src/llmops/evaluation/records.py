"""An evaluation's per-question records in MLflow 3: why the gate decided what it did.

For each evaluation of a run, from its golden answers (evalserve.Answer as dicts) and its
suites' records:
- an evaluation table per question set (`mlflow.log_table`: `eval/answers.json`, one row
  per question and role, and `eval/suite-<name>.json` per suite), on the run, named on the
  candidate's logged model (its `llmops.eval.*` tags);
- one trace per evaluation request, in the run's experiment, made after the fact with
  MLflow's tracing API (`mlflow.start_span_no_context` with the request's own start and end,
  from its measured latency): the chat messages sent, the answer returned, the role; linked
  to the run (`mlflow.sourceRun`) and, for the candidate (`MODEL_ROLES`), to its logged
  model (`mlflow.modelId`: the model page's Traces tab); with two assessments, the
  expected answer (an expectation) and the verdict `correct` (a feedback, with the match
  rule as rationale).

Every string passes through `llmops.redact.redact`. Nothing here fails an evaluation: a
store that refuses traces or tables gets a warning, and the gate decides as it would have.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmops.redact import redact
from llmops.tracking import tracking_uri

log = logging.getLogger(__name__)

# The evaluation table's columns, in order (trace_id: the row's trace, when traces were logged).
TABLE_COLUMNS = ("role", "golden_set", "question", "expected", "answer", "correct", "rouge_l",
                 "latency_s", "finish_reason", "trace_id")
ANSWERS_TABLE = "eval/answers.json"
# Trace tags (searchable: `tag.llmops.role = 'candidate'`) and assessment names.
ROLE_TAG, RUN_TAG, EVALUATION_TAG, SET_TAG = ("llmops.role", "llmops.run_id",
                                              "llmops.evaluation", "llmops.golden_set")
EXPECTED, CORRECT = "expected_answer", "correct"
MATCH_SOURCE = "llmops.golden_match"  # the code that gave the verdicts
# The roles that are the candidate (served as deployed, and its adapter beside merged or
# quantized weights): their traces link to the candidate's logged model.
MODEL_ROLES = ("candidate", "candidate_adapter")
_RULES = {
    "contains": ("the answer contains the expected answer (case-insensitive)",
                 "the answer does not contain the expected answer (case-insensitive)"),
    "exact": ("the answer equals the expected answer (trimmed, case-insensitive)",
              "the answer differs from the expected answer (trimmed, case-insensitive)"),
}


@dataclass
class Records:
    """What was logged: table artifact paths, trace ids, and how long it took."""

    tables: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    assessments: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def rationale(correct: bool, match: str | None) -> str:
    """Why a golden answer was judged right or wrong (`match`: the golden set's rule)."""
    right, wrong = _RULES.get(match or "contains", _RULES["contains"])
    return f"{match or 'contains'} match: {right if correct else wrong}"


def _clean(value: Any) -> Any:
    """A value as it may reach MLflow: strings redacted, containers walked."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _cell(value: Any) -> Any:
    """A table cell: scalars as they are (strings redacted), anything else as JSON text."""
    import json

    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    return redact(json.dumps(value, default=str, ensure_ascii=False))


def answer_rows(answers: Iterable[Mapping[str, Any]],
                trace_ids: Sequence[str | None] = ()) -> dict[str, list[Any]]:
    """The evaluation table of the golden answers, as columns (`TABLE_COLUMNS`)."""
    rows = list(answers)
    ids = list(trace_ids) + [None] * (len(rows) - len(trace_ids))
    table: dict[str, list[Any]] = {c: [] for c in TABLE_COLUMNS}
    for a, trace_id in zip(rows, ids, strict=True):
        for column in TABLE_COLUMNS[:-1]:
            value = a.get(column)
            table[column].append(bool(value) if column == "correct" else _cell(value))
        table["trace_id"].append(trace_id or "")
    return table


def suite_rows(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """A suite's records (one per question and role, any keys) as table columns."""
    columns: list[str] = []
    for record in records:
        columns.extend(str(k) for k in record if str(k) not in columns)
    return {c: [_cell(r.get(c)) for r in records] for c in columns}


def _table_name(client: Any, run_id: str, wanted: str) -> str:
    """`wanted`, or `<stem>-<n>.json` when an earlier evaluation of the run logged it
    (log_table appends to an existing table: each evaluation keeps its own)."""
    import posixpath

    folder, name = posixpath.split(wanted)
    existing = {posixpath.basename(a.path) for a in client.list_artifacts(run_id, folder)}
    stem, n = name.removesuffix(".json"), 1
    while name in existing:
        n += 1
        name = f"{stem}-{n}.json"
    return posixpath.join(folder, name)


def _request(a: Mapping[str, Any]) -> dict[str, Any]:
    """The chat request as sent to the evaluation server (evalserve asks each role under
    its own model name, one user message, greedy decoding)."""
    return {"model": redact(str(a["role"])),
            "messages": [{"role": "user", "content": redact(str(a["question"]))}],
            "temperature": 0.0}


def _response(a: Mapping[str, Any]) -> dict[str, Any]:
    """The answer in the chat completion's shape (the UI renders it as the reply)."""
    return {"object": "chat.completion", "model": redact(str(a["role"])),
            "choices": [{"index": 0,
                         "finish_reason": redact(str(a.get("finish_reason") or "")),
                         "message": {"role": "assistant",
                                     "content": redact(str(a.get("answer") or ""))}}]}


def _assess(a: Mapping[str, Any], trace_id: str, run_id: str,
            match_rules: Mapping[str, str]) -> int:
    """The expected answer (an expectation) and the verdict (feedback `correct`, the match
    rule as rationale) on a request's trace; the number of assessments logged."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    golden_set = str(a.get("golden_set", ""))
    extra = {"golden_set": redact(golden_set), "mlflow.assessment.sourceRunId": run_id}
    mlflow.log_expectation(trace_id=trace_id, name=EXPECTED,
                           value=redact(str(a.get("expected") or "")), metadata=extra,
                           source=AssessmentSource(AssessmentSourceType.HUMAN, "golden set"))
    correct = bool(a.get("correct"))
    mlflow.log_feedback(trace_id=trace_id, name=CORRECT, value=correct, metadata=extra,
                        source=AssessmentSource(AssessmentSourceType.CODE, MATCH_SOURCE),
                        rationale=rationale(correct, match_rules.get(golden_set)))
    return 2


def _active(span: Any) -> Any:
    """The span as the active one while its trace is open: MLflow then keeps the
    assessments logged on it in memory and stores them with the trace, in one write, not
    two more per trace. A null context where this MLflow has no such helper (the
    assessments are then stored one by one once the traces are)."""
    try:
        from mlflow.tracing.provider import safe_set_span_in_context
    except ImportError:
        return contextlib.nullcontext()
    return safe_set_span_in_context(span)


def _environment_metadata() -> dict[str, str]:
    """The environment metadata MLflow's tracer puts on every trace (git remote, source),
    redacted where it carries a secret: given as the trace's own metadata, it wins."""
    try:
        from mlflow.tracing.utils.environment import resolve_env_metadata
    except ImportError:
        return {}
    found = resolve_env_metadata()
    return {str(k): redact(str(v)) for k, v in found.items() if redact(str(v)) != str(v)}


def _log_traces(run_id: str, experiment: str, answers: Sequence[Mapping[str, Any]],
                model_id: str | None, evaluation: str, ended_ns: int,
                match_rules: Mapping[str, str], out: Records) -> list[str | None]:
    """One trace per golden request with its expectation and verdict. The requests have
    no recorded start (unless an answer has `started_at`): each ends at `ended_ns` and
    lasts its measured latency."""
    import mlflow
    from mlflow.entities import SpanType
    from mlflow.entities.span import NO_OP_SPAN_TRACE_ID
    from mlflow.tracing.constant import TraceMetadataKey

    mlflow.set_tracking_uri(tracking_uri())  # where the tracer exports (reset on change)
    environment = _environment_metadata()
    ids: list[str | None] = []
    unassessed: list[tuple[Mapping[str, Any], str]] = []
    for a in answers:
        role = redact(str(a["role"]))
        golden_set = redact(str(a.get("golden_set", "")))
        latency_s = float(a.get("latency_s") or 0.0)
        started = a.get("started_at")  # epoch seconds, when the answer records it
        start_ns = int(float(started) * 1e9) if started else ended_ns - int(latency_s * 1e9)
        metadata = {**environment, TraceMetadataKey.SOURCE_RUN: run_id}
        if role in MODEL_ROLES and model_id:
            metadata[TraceMetadataKey.MODEL_ID] = model_id
        span = mlflow.start_span_no_context(
            f"{role}: {golden_set}" if golden_set else role, span_type=SpanType.CHAT_MODEL,
            inputs=_request(a), experiment_id=experiment, start_time_ns=start_ns,
            attributes={"llmops.role": role, "llmops.golden_set": golden_set,
                        "llmops.latency_s": f"{latency_s:.3f}"},
            tags={ROLE_TAG: role, RUN_TAG: run_id, EVALUATION_TAG: evaluation,
                  SET_TAG: golden_set,
                  "llmops.correct": str(bool(a.get("correct"))).lower()},
            metadata=metadata)
        if span.trace_id == NO_OP_SPAN_TRACE_ID:  # MLflow warned why; no trace for it
            ids.append(None)
            continue
        try:
            with _active(span):
                if mlflow.get_active_trace_id() == span.trace_id:
                    out.assessments += _assess(a, span.trace_id, run_id, match_rules)
                else:
                    unassessed.append((a, span.trace_id))
        finally:
            span.end(outputs=_response(a), end_time_ns=start_ns + int(latency_s * 1e9))
        ids.append(span.trace_id)
    mlflow.flush_trace_async_logging()  # stored before this returns (and before the table)
    for a, trace_id in unassessed:
        out.assessments += _assess(a, trace_id, run_id, match_rules)
    return ids


def log_evaluation_records(run_id: str, answers: Sequence[Mapping[str, Any]],
                           suites: Sequence[Mapping[str, Any]] = (), *,
                           model_id: str | None = None,
                           match_rules: Mapping[str, str] | None = None,
                           ended_at: float | None = None, traces: bool = True) -> Records:
    """Log an evaluation's tables and traces to `run_id` (see the module); never raises.

    `model_id`: the candidate's logged model; `match_rules`: golden set name -> its match
    rule ('contains', 'exact'); `ended_at`: when the requests ended (epoch seconds, now by
    default)."""
    import mlflow

    started = time.perf_counter()
    out = Records()
    client = mlflow.MlflowClient(tracking_uri())
    evaluation = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ended_at or time.time()))
    ids: list[str | None] = []
    if traces and answers:
        try:
            experiment = str(client.get_run(run_id).info.experiment_id)
            ids = _log_traces(run_id, experiment, answers, model_id, evaluation,
                              int((ended_at or time.time()) * 1e9), match_rules or {}, out)
            out.trace_ids = [i for i in ids if i]
        except Exception as exc:  # any store or tracer failure: the evaluation stands
            out.warnings.append(_warn("traces", exc))
    tables: list[tuple[str, dict[str, list[Any]]]] = []
    if answers:
        tables.append((ANSWERS_TABLE, answer_rows(answers, ids)))
    for suite in suites:
        records = suite.get("records") or []
        if records:
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(suite["name"]))
            tables.append((f"eval/suite-{name}.json", suite_rows(records)))
    for wanted, table in tables:
        try:
            path = _table_name(client, run_id, wanted)
            client.log_table(run_id, data=table, artifact_file=path)
            out.tables.append(path)
        except Exception as exc:
            out.warnings.append(_warn(f"table {wanted}", exc))
    if model_id and (out.tables or out.trace_ids):
        try:  # the model page names its evaluation's records
            client.set_logged_model_tags(model_id, {
                "llmops.eval.run_id": run_id, "llmops.eval.evaluation": evaluation,
                "llmops.eval.tables": ",".join(out.tables),
                "llmops.eval.traces": str(sum(1 for a, i in zip(answers, ids, strict=False)
                                              if i and a.get("role") in MODEL_ROLES))})
        except Exception as exc:
            out.warnings.append(_warn("logged model tags", exc))
    out.seconds = time.perf_counter() - started
    return out


def _warn(what: str, exc: BaseException) -> str:
    message = redact(f"evaluation records: could not log the {what} to MLflow "
                     f"({type(exc).__name__}: {str(exc)[:300]}); the evaluation and its "
                     "gate decision stand")
    log.warning(message)
    return message
