"""The data gate: check every dataset before any compute is spent on it.

The file is streamed once into one row of features per example (does it parse, are the
roles allowed, is every content non-empty, how many tokens does it render to through the
model's own chat template). Great Expectations then validates that feature table against
a suite built from validation/<model>.yml, and writes its Data Docs HTML.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops.config import DatasetRef, ModelSpec
from llmops.paths import state_subdir

BOOL_CHECKS = {
    "is_object": "every line is a JSON object",
    "has_messages": "a non-empty 'messages' list of objects",
    "roles_allowed": "every role is in allowed_roles",
    "content_nonempty": "every content is a non-empty string",
    "has_assistant": "at least one assistant turn",
    "renders": "renders through the model's chat template",
}
CHUNK = 2048


@dataclass
class CheckResult:
    """One row of the report: a check, its verdict, and the first offending lines."""

    check: str
    passed: bool
    observed: str
    threshold: str
    lines: list[int] = field(default_factory=list)


@dataclass
class DatasetReport:
    path: str
    split: str
    sha256: str
    examples: int
    token_p50: int
    token_p95: int
    token_max: int
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass
class DataReport:
    """The data gate's verdict over every dataset of a model, with where its reports are."""

    model: str
    datasets: list[DatasetReport]
    json_path: str
    docs_path: str
    seconds: float

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.datasets)


def _features(messages: Any, allowed: set[str]) -> dict[str, bool]:
    ok_list = isinstance(messages, list) and bool(messages) and all(
        isinstance(m, dict) for m in messages)
    msgs = messages if ok_list else []
    return {
        "has_messages": ok_list,
        "roles_allowed": ok_list and all(m.get("role") in allowed for m in msgs),
        "content_nonempty": ok_list and all(
            isinstance(m.get("content"), str) and m["content"].strip() for m in msgs),
        "has_assistant": ok_list and any(m.get("role") == "assistant" for m in msgs),
    }


def _stream(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line, parsed object or None) for every non-blank line; BOM tolerated."""
    with open(path, encoding="utf-8-sig", errors="strict") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield n, json.loads(raw)
            except json.JSONDecodeError:
                yield n, None


def feature_table(path: Path, tokenizer: Any, allowed_roles: list[str]) -> Any:
    """One row per example: line, the boolean checks, and the rendered token count.

    token_count is null for a row that failed a structural check (GX skips nulls, so the
    row is reported once, under that check, not again under length).
    """
    import pandas as pd

    allowed = set(allowed_roles)
    cols: dict[str, list[Any]] = {k: [] for k in ("line", *BOOL_CHECKS, "token_count")}
    pending: list[tuple[int, str]] = []  # (row index, rendered text) awaiting tokenization

    def flush() -> None:
        if pending:
            ids = tokenizer([t for _, t in pending], add_special_tokens=False)["input_ids"]
            for (row, _), toks in zip(pending, ids, strict=True):
                cols["token_count"][row] = len(toks)
            pending.clear()

    for n, obj in _stream(path):
        row = len(cols["line"])
        cols["line"].append(n)
        cols["is_object"].append(isinstance(obj, dict))
        feats = _features(obj.get("messages") if isinstance(obj, dict) else None, allowed)
        for k, v in feats.items():
            cols[k].append(v)
        cols["token_count"].append(None)
        renders = True
        if all(feats.values()):
            try:
                text = tokenizer.apply_chat_template(obj["messages"], tokenize=False)
                pending.append((row, text))
            except Exception:  # the model's template refused this conversation
                renders = False
        cols["renders"].append(renders)
        if len(pending) >= CHUNK:
            flush()
    flush()
    return pd.DataFrame(cols).astype({"token_count": "Int64"})


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _suite(name: str, spec: ModelSpec) -> Any:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    checks = spec.validation.data
    expectations: list[Any] = [
        gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[True]) for col in BOOL_CHECKS
    ]
    expectations.append(gxe.ExpectColumnValuesToBeBetween(
        column="token_count", min_value=1, max_value=spec.sequence_len,
        mostly=1.0 - checks.max_over_length_share))
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=checks.min_examples))
    return gx.ExpectationSuite(name=name, expectations=expectations)


def _first_lines(df: Any, mask: Any, limit: int = 5) -> list[int]:
    return [int(x) for x in df.loc[mask, "line"].head(limit)]


def _check_rows(df: Any, gx_result: Any, spec: ModelSpec) -> list[CheckResult]:
    """Turn GX's per-expectation results into report rows with offending line numbers."""
    rows = []
    seq = spec.sequence_len
    for res in gx_result.results:
        cfg = res.expectation_config
        col = cfg.kwargs.get("column")
        ok = bool(res.success)
        if cfg.type == "expect_table_row_count_to_be_between":
            rows.append(CheckResult("size", ok, f"{len(df)} examples",
                                    f">= {cfg.kwargs['min_value']}"))
        elif col == "token_count":
            counts = df["token_count"]
            over = (counts > seq).fillna(False)
            bad = ((counts < 1) | (counts > seq)).fillna(False)
            share = float(over.sum()) / max(int(counts.notna().sum()), 1)
            rows.append(CheckResult(
                "length", ok, f"{share:.1%} over {seq} tokens",
                f"<= {spec.validation.data.max_over_length_share:.1%} (sequence_len {seq})",
                _first_lines(df, bad)))
        else:
            bad = ~df[col].astype(bool)
            rows.append(CheckResult(col, ok, f"{int(bad.sum())} failing", BOOL_CHECKS[col],
                                    _first_lines(df, bad)))
    return rows


def validate_dataset(spec: ModelSpec, ref: DatasetRef, tokenizer: Any, context: Any) -> \
        DatasetReport:
    """Validate one dataset file with GX; the report names the first offending lines."""
    import great_expectations as gx

    df = feature_table(ref.path, tokenizer, spec.validation.data.allowed_roles)
    name = f"{spec.name}-{ref.split}-{ref.path.stem}"
    source = context.data_sources.add_or_update_pandas(name="llmops")
    asset = next((a for a in source.assets if a.name == name), None) or \
        source.add_dataframe_asset(name=name)
    batch = next((b for b in asset.batch_definitions if b.name == "whole"), None) or \
        asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add_or_update(_suite(name, spec))
    vd = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite))
    checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
        name=name, validation_definitions=[vd],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")]))
    result = checkpoint.run(batch_parameters={"dataframe": df})
    gx_result = next(iter(result.run_results.values()))
    counts = df["token_count"].dropna()
    q = counts.quantile([0.5, 0.95]) if len(counts) else None
    return DatasetReport(
        path=str(ref.path), split=ref.split, sha256=sha256_of(ref.path), examples=len(df),
        token_p50=int(q[0.5]) if q is not None else 0,
        token_p95=int(q[0.95]) if q is not None else 0,
        token_max=int(counts.max()) if len(counts) else 0,
        checks=_check_rows(df, gx_result, spec))


def validate_model_data(spec: ModelSpec, tokenizer: Any) -> DataReport:
    """Validate every dataset the model's Axolotl YAML names; write JSON and Data Docs."""
    import great_expectations as gx

    started = time.perf_counter()
    out = state_subdir("reports") / spec.name
    context = gx.get_context(mode="file", project_root_dir=str(out))
    reports = [validate_dataset(spec, ref, tokenizer, context) for ref in spec.datasets]
    docs = out / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    report = DataReport(spec.name, reports, str(out / "data_report.json"), str(docs),
                        time.perf_counter() - started)
    body = {**asdict(report), "passed": report.passed}
    Path(report.json_path).write_text(json.dumps(body, indent=2))
    return report
