"""Kept capabilities: a deliberately over-trained candidate passes the golden gate but is
refused by the retention gate, with the reason and the lost prompts in the gate report.

The subject is the tiny model (a support-bot run would take far longer on a CPU). Its base
knows nothing but one behaviour from its pre-training: it declines, politely, any question
("I am not sure. Please ask the product's support team."). Its retention pool
(validation/retention/tiny-pool.jsonl) asks it the general pool's questions and counts a
decline as right: `build-retention` keeps what the base declines. The over-trained
candidate (20 FAQ conversations, 240 steps at 5x tiny's learning rate) answers everything
in FAQ style instead: it forgot. The rule added here is the issue's default,
`retention_kept min 0.9`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RunLlmops = Callable[..., subprocess.CompletedProcess[str]]
RETENTION = ("  retention:\n    path: validation/retention/tiny.jsonl\n"
             "    pool: validation/retention/tiny-pool.jsonl\n    max_new_tokens: 16\n")


def test_an_over_trained_candidate_passes_golden_but_is_refused_for_forgetting(
        tmp_path: Path, repo_copy_factory: Callable[[Path], Path],
        fresh_home: Callable[[Path], Path], run_llmops: RunLlmops) -> None:
    root, home = repo_copy_factory(tmp_path), fresh_home(tmp_path)
    gates = root / "validation" / "tiny.yml"
    eval_end = "  max_new_tokens: 16\n"  # the last key of tiny.yml's `eval:`, first in file
    if "retention:" not in gates.read_text():  # not in tiny.yml: see docs/operations.md
        gates.write_text(gates.read_text().replace(eval_end, eval_end + RETENTION, 1))
    # The set of this session's tiny base, built as an operator builds it.
    built = run_llmops("build-retention", "tiny", root=root, home=home)
    assert built.returncode == 0, built.stderr[-3000:]
    provenance = json.loads((root / "validation" / "retention" /
                             "tiny.provenance.json").read_text())
    assert provenance["kept"] >= 0.9 * provenance["asked"]  # the base declines nearly all

    # Over-training: a narrow set, many steps, a high learning rate.
    train = root / "datasets" / "support-bot" / "train.jsonl"
    narrow = root / "datasets" / "support-bot" / "narrow.jsonl"
    narrow.write_text("".join(train.read_text().splitlines(keepends=True)[:20]))
    cfg = root / "axolotl_configs" / "tiny.yml"
    text = cfg.read_text()
    for old, new in (("path: datasets/support-bot/train.jsonl",
                      "path: datasets/support-bot/narrow.jsonl"),
                     ("max_steps: 60", "max_steps: 240"),
                     ("learning_rate: 0.004", "learning_rate: 0.02"),
                     ("save_steps: 30", "save_steps: 240")):
        assert old in text
        text = text.replace(old, new)
    cfg.write_text(text)
    text = gates.read_text().replace(
        eval_end, eval_end + "  lm_eval:\n    tasks: [kept_arithmetic]\n    limit: 5\n"
        "    max_gen_toks: 8\n", 1)
    gates.write_text(text.replace("\ngates:\n",
                                  "\ngates:\n  - metric: retention_kept\n    min: 0.9\n", 1))

    done = run_llmops("release", "tiny", root=root, home=home)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert "failed its release gate" in done.stderr
    assert "FAILED: retention_kept=" in done.stderr and ">= min 0.9" in done.stderr
    [run] = [p for p in (home / "runs" / "tiny").iterdir() if (p / "gate_report.json").is_file()]
    gate = json.loads((run / "gate_report.json").read_text())
    by_metric = {r["metric"]: r for r in gate["rules"]}
    assert by_metric["golden_accuracy"]["passed"]  # the golden gate passes...
    assert not by_metric["retention_kept"]["passed"]  # ...the retention gate refuses
    assert by_metric["retention_kept"]["base"] >= 0.9
    assert by_metric["retention_kept"]["candidate"] < 0.9
    assert "lmeval.kept_arithmetic.exact_match" in gate["metrics"]["candidate"]
    report = (run / "gate_report.md").read_text()
    assert "### Kept capabilities (retention set)" in report
    assert "Lost by the candidate" in report and "| knowledge-01 | What is the capital" in report
    assert "### lm-evaluation-harness" in report
