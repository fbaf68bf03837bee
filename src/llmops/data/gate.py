"""The data gate: Great Expectations validates the feature table of every dataset.

Each boolean check becomes an `ExpectColumnValuesToBeInSet([True])` (with `mostly` where a
threshold allows a share of failures), token lengths an `ExpectColumnValuesToBeBetween`,
the size an `ExpectTableRowCountToBeBetween`. GX decides pass or fail and writes its Data
Docs; our report (JSON, and HTML that needs no network: `htmlreport`) adds the first
offending line numbers and token statistics.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from llmops.config import DatasetRef, ModelSpec
from llmops.config.golden import read_golden
from llmops.config.paths import state_subdir
from llmops.data.features import (
    BOOL_CHECKS,
    FeatureTable,
    References,
    extract,
    extract_file,
    stream_json_array,
    stream_lines,
)
from llmops.data.formats import format_of, to_messages
from llmops.data.htmlreport import write_html
from llmops.data.report import CheckResult, DataReport, DatasetReport
from llmops.data.scan import fingerprint, normalised
from llmops.digests import sha256_file


def references(spec: ModelSpec) -> References:
    """Fingerprints of the eval examples and golden questions, to keep out of training."""
    refs = References()
    for ref in spec.datasets:
        if ref.split == "eval":
            fmt = format_of(ref.entry, str(ref.path))
            for _, obj in stream_lines(ref.path, spec.validation.data.max_line_bytes):
                msgs = to_messages(obj, fmt) if isinstance(obj, dict) else None
                if msgs and all(isinstance(m["content"], str) for m in msgs):
                    refs.examples.add(fingerprint("\n".join(m["content"] for m in msgs)))
    for path in spec.golden_paths():
        refs.questions.update(normalised(g.question) for g in read_golden(path))
    return refs


def _allowed_share(spec: ModelSpec, check: str) -> float:
    data = spec.validation.data
    if check == "unique":
        return data.max_duplicate_share
    return 0.0


def _suite(name: str, spec: ModelSpec, checks: list[str]) -> Any:
    import great_expectations as gx
    import great_expectations.expectations as gxe

    exps: list[Any] = [
        gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True],
                                        mostly=1.0 - _allowed_share(spec, c))
        for c in checks
    ]
    exps.append(gxe.ExpectColumnValuesToBeBetween(
        column="token_count", min_value=1, max_value=spec.sequence_len,
        mostly=1.0 - spec.validation.data.max_over_length_share))
    exps.append(gxe.ExpectTableRowCountToBeBetween(min_value=spec.validation.data.min_examples))
    return gx.ExpectationSuite(name=name, expectations=exps)


def _first(df: Any, mask: Any, limit: int = 5) -> list[int]:
    return [int(x) for x in df.loc[mask, "line"].head(limit)]


def _rows(df: Any, table: FeatureTable, gx_result: Any, spec: ModelSpec) -> list[CheckResult]:
    rows = []
    seq = spec.sequence_len
    for res in gx_result.results:
        cfg = res.expectation_config
        col, ok = cfg.kwargs.get("column"), bool(res.success)
        if cfg.type == "expect_table_row_count_to_be_between":
            rows.append(CheckResult("size", ok, f"{len(df)} examples",
                                    f">= {cfg.kwargs['min_value']}"))
        elif col == "token_count":
            counts = df["token_count"]
            over = (counts > seq).fillna(False)
            share = float(over.sum()) / max(int(counts.notna().sum()), 1)
            rows.append(CheckResult(
                "length", ok, f"{share:.1%} over {seq} tokens",
                f"<= {spec.validation.data.max_over_length_share:.1%}",
                _first(df, ((counts < 1) | (counts > seq)).fillna(False))))
        else:
            bad = ~df[col].astype(bool)
            observed = f"{int(bad.sum())} failing"
            if col == "no_pii":
                kinds = sorted({k for v in table.pii.values() for k in v})
                observed += f" ({', '.join(kinds)})" if kinds else ""
            if col == "parse" and table.unreadable:
                line = min(table.unreadable)
                more = len(table.unreadable) - 1
                observed += (f" (line {line}: {table.unreadable[line]}"
                             + (f"; and {more} more such)" if more else ")"))
            threshold = BOOL_CHECKS[col]
            if _allowed_share(spec, col):
                threshold += f" (<= {_allowed_share(spec, col):.1%} may fail)"
            rows.append(CheckResult(col, ok, observed, threshold, _first(df, bad)))
    return rows


def validate_file(spec: ModelSpec, ref: DatasetRef, tokenizer: Any, context: Any,
                  refs: References | None) -> DatasetReport:
    """Validate one dataset file with GX; the report names the first offending lines."""
    import great_expectations as gx

    fmt = format_of(ref.entry, str(ref.path))
    refs_for = refs if ref.split == "train" else None
    if ref.path.suffix == ".json":
        table = extract(stream_json_array(ref.path, spec.validation.data.max_line_bytes), fmt,
                        tokenizer, spec.validation.data, refs_for)
    else:
        table = extract_file(ref.path, fmt, tokenizer, spec.validation.data, refs_for,
                             workers=os.cpu_count() or 1)
    df = table.frame()
    checks = [c for c in BOOL_CHECKS
              if not (c == "no_pii" and not spec.validation.data.pii_kinds)]
    name = f"{spec.name}-{ref.split}-{ref.path.stem}"
    source = context.data_sources.add_or_update_pandas(name="llmops")
    if name in {a.name for a in source.assets}:  # the context persists between runs
        source.delete_asset(name)
    batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add_or_update(_suite(name, spec, checks))
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
        path=str(ref.path), split=ref.split, sha256=sha256_file(ref.path), examples=len(df),
        token_p50=int(q[0.5]) if q is not None else 0,
        token_p95=int(q[0.95]) if q is not None else 0,
        token_max=int(counts.max()) if len(counts) else 0,
        checks=_rows(df, table, gx_result, spec))


def gx_context(folder: Path) -> Any:
    """A file-backed GX context under `folder` (Data Docs in gx/uncommitted/data_docs)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(folder))
    context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                         metric_calculations=False)
    context.variables.save()
    return context


def validate_model_data(spec: ModelSpec, tokenizer: Any,
                        only: list[DatasetRef] | None = None) -> DataReport:
    """Validate every dataset the Axolotl YAML names (or `only`); write the JSON, the
    self-contained HTML report (readable offline) and GX's Data Docs."""
    started = time.perf_counter()
    out = state_subdir("reports") / spec.name
    context = gx_context(out)
    refs = references(spec)
    reports = [validate_file(spec, ref, tokenizer, context, refs)
               for ref in (only or spec.datasets)]
    docs = out / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    report = DataReport(spec.name, reports, str(out / "data_report.json"), str(docs),
                        time.perf_counter() - started, str(out / "data_report.html"))
    report.write_json(report.json_path)
    write_html(report, report.html_path)
    return report
