"""The data gate end to end through Great Expectations, on fixtures with known faults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmops.config import load_model
from llmops.data import validate_model_data

SECRET = "AKIAIOSFODNN7EXAMPLE"


def good(q: str, a: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": q},
                                    {"role": "assistant", "content": a}]})


def test_clean_repo_datasets_pass(repo_copy: Path, tokenizer: Any) -> None:
    report = validate_model_data(load_model("tiny"), tokenizer)
    assert report.passed, [c for d in report.datasets for c in d.checks if not c.passed]
    train = report.datasets[0]
    assert train.examples == 336 and 0 < train.token_p50 <= train.token_p95 <= train.token_max
    assert Path(report.docs_path).is_file()
    assert "<style>" in Path(report.html_path).read_text()


def test_a_faulty_file_fails_each_check_on_its_lines(repo_copy: Path, tokenizer: Any) -> None:
    train = repo_copy / "datasets" / "support-bot" / "train.jsonl"
    rows = train.read_text().splitlines()
    rows[1] = "{not json"
    rows[3] = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    rows[5] = good(f"my key is {SECRET}", "Noted.")
    rows[7] = rows[9]  # an exact duplicate
    rows[11] = good("Good morning. Which port is used by Quillbox sync?",
                    "The Quillbox sync daemon listens on port 7431.")  # an eval example
    rows[13] = good("word " * 400, "long")
    train.write_text("\n".join(rows) + "\n")
    checks = repo_copy / "validation" / "tiny.yml"
    checks.write_text(checks.read_text().replace("  min_examples: 20",
                                                 "  min_examples: 20\n  max_duplicate_share: 0.0"))
    spec = load_model("tiny")
    report = validate_model_data(spec, tokenizer)
    assert not report.passed
    failed = {c.check: c.lines for c in report.datasets[0].checks if not c.passed}
    assert failed == {"parse": [2], "assistant": [4], "no_pii": [6], "unique": [10],
                      "no_leak": [12], "length": [14]}
    # The eval split is checked on its own and passes; leakage is a training-set check.
    assert report.datasets[1].passed
    body = Path(report.json_path).read_text()
    assert json.loads(body)["passed"] is False
    docs = Path(report.docs_path).parent
    assert SECRET not in body
    assert not any(SECRET in p.read_text(errors="ignore") for p in docs.rglob("*.html"))
    html = Path(report.html_path).read_text()  # the offline report: each failing line
    assert SECRET not in html and "https://" not in html
    assert all(f"<td>{line}</td>" in html for lines in failed.values() for line in lines)


def test_duplicates_within_the_allowed_share_pass_but_are_reported(repo_copy: Path,
                                                                  tokenizer: Any) -> None:
    train = repo_copy / "datasets" / "support-bot" / "train.jsonl"
    rows = train.read_text().splitlines()
    rows[7] = rows[9]  # 1 of 336 (0.3%) is under the default 1% allowance
    train.write_text("\n".join(rows) + "\n")
    report = validate_model_data(load_model("tiny"), tokenizer)
    unique = next(c for c in report.datasets[0].checks if c.check == "unique")
    assert unique.passed and unique.lines == [10] and unique.observed == "1 failing"


def test_an_empty_file_fails_size(repo_copy: Path, tokenizer: Any) -> None:
    (repo_copy / "datasets" / "support-bot" / "eval.jsonl").write_text("")
    report = validate_model_data(load_model("tiny"), tokenizer)
    size = next(c for c in report.datasets[1].checks if c.check == "size")
    assert not size.passed and size.observed == "0 examples"


def test_a_line_over_max_line_bytes_fails_parse_and_says_what_to_do(repo_copy: Path,
                                                                    tokenizer: Any) -> None:
    train = repo_copy / "datasets" / "support-bot" / "train.jsonl"
    rows = train.read_text().splitlines()
    rows[2] = good("word " * 1000, "long")
    train.write_text("\n".join(rows) + "\n")
    checks = repo_copy / "validation" / "tiny.yml"
    checks.write_text(checks.read_text().replace("  min_examples: 20",
                                                 "  min_examples: 20\n  max_line_bytes: 4096"))
    report = validate_model_data(load_model("tiny"), tokenizer)
    parse = next(c for c in report.datasets[0].checks if c.check == "parse")
    assert not parse.passed and parse.lines == [3]
    assert parse.observed == (f"1 failing (line 3: {len(rows[2].encode())} bytes exceeds "
                              "max_line_bytes 4096; split the row or raise data.max_line_bytes)")
