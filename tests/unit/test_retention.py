"""Kept capabilities: the retention set's scoring, its build (selection and provenance),
the retention suite and the lm-evaluation-harness suite against a fake OpenAI endpoint
(an HTTP server in this process: no vLLM, no network)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmops.errors import UsageError
from llmops.evaluation import lmeval, retention
from llmops.evaluation.retention import RetentionItem, is_right, read_items
from llmops.evaluation.suite import EvalEndpoint

REPO = Path(__file__).resolve().parents[2]
Answerer = Callable[[str, str], str]  # (role, question) -> answer


def item(answers: str | tuple[str, ...], match: str = "word") -> RetentionItem:
    return RetentionItem("k-01", "knowledge", "q?",
                         (answers,) if isinstance(answers, str) else answers,
                         match)  # type: ignore[arg-type]


def test_matching_rules() -> None:
    assert is_right("The capital of France is Paris.", item("Paris"))
    assert is_right("paris", item("Paris"))
    assert not is_right("It is 14.", item("4"))  # whole words: 4 is not in 14
    assert is_right("2 + 2 = 4", item(("4", "four")))
    assert is_right("Four.", item(("4", "four")))
    assert is_right("CAT", item("CAT", "cased")) and not is_right("cat", item("CAT", "cased"))
    assert is_right("Yes, it is.", item("yes", "starts"))
    assert not is_right("I do not know, yes", item("yes", "starts"))
    assert not is_right("Nothing", item("no", "starts"))
    assert is_right(" Paris. ", item("paris", "exact"))
    assert not is_right("Paris, France", item("paris", "exact"))


def test_the_pool_and_the_committed_sets_read(tmp_path: Path) -> None:
    pool = read_items(REPO / "validation" / "retention" / "pool.jsonl")
    assert len(pool) >= 60 and len({i.id for i in pool}) == len(pool)
    assert {i.category for i in pool} >= {"knowledge", "arithmetic", "instruction",
                                         "formatting", "yes-no", "reasoning"}
    import yaml

    configured = [name for name in ("support-bot", "tiny") if (yaml.safe_load(
        (REPO / "validation" / f"{name}.yml").read_text())["eval"].get("retention"))]
    assert "support-bot" in configured
    for name in configured:  # each configured set is committed, with its provenance
        kept = read_items(REPO / "validation" / "retention" / f"{name}.jsonl")
        provenance = json.loads((REPO / "validation" / "retention" /
                                 f"{name}.provenance.json").read_text())
        assert kept and provenance["kept"] == len(kept) and provenance["asked"] >= len(kept)
        assert provenance["base_model_digest"].startswith("sha256:")
        assert provenance["set_sha256"] == "sha256:" + hashlib.sha256(
            (REPO / "validation" / "retention" / f"{name}.jsonl").read_bytes()).hexdigest()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "q", "answer": "x", "match": "fuzzy"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:1: match: 'fuzzy'"):
        read_items(bad)
    bad.write_text('{"id": "a", "question": "q", "answer": []}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl:1: a retention row needs"):
        read_items(bad)


@pytest.fixture()
def fake_server(fake_chat_server: Any) -> Callable[..., tuple[EvalEndpoint, list[dict[str, Any]]]]:
    """The chat server answering by the last message only."""
    def start(answer: Answerer, roles: tuple[str, ...] = ("base", "candidate")) -> \
            tuple[EvalEndpoint, list[dict[str, Any]]]:
        return fake_chat_server(lambda model, messages: answer(model, messages[-1]["content"]),
                                roles)
    return start


ITEMS = [RetentionItem("knowledge-01", "knowledge", "What is the capital of France?",
                       ("Paris",)),
         RetentionItem("arithmetic-01", "arithmetic", "What is 2 + 2?", ("4", "four")),
         RetentionItem("formatting-01", "formatting", "Write cat in uppercase.", ("CAT",),
                       "cased")]


def knows(role: str, question: str) -> str:
    right = {"What is the capital of France?": "It is Paris.", "What is 2 + 2?": "4",
             "Write cat in uppercase.": "CAT"}
    if role == "candidate" and "France" in question:
        return "Quillbox sync uses port 7431."  # forgot
    return right.get(question, "I am not sure.")


def test_retention_suite_measures_every_role_and_lists_what_the_candidate_lost(
        fake_server: Any) -> None:
    endpoint, seen = fake_server(knows)
    kept = retention.RetentionSuite("validation/retention/x.jsonl", ITEMS, 24)
    result = kept.run(endpoint)
    assert result.metrics == {"base": {"retention_kept": 1.0},
                              "candidate": {"retention_kept": pytest.approx(2 / 3)}}
    assert all(body["temperature"] == 0.0 and body["max_tokens"] == 24 for body in seen)
    assert len(result.records) == 6 and {r["suite"] for r in result.records} == {"retention"}
    text = "\n".join(kept.section(result))
    assert "- base: kept 3/3 (100.0%)" in text and "- candidate: kept 2/3 (66.7%)" in text
    assert "| knowledge-01 | What is the capital of France? | Paris (word) | " \
           "Quillbox sync uses port 7431. |" in text
    assert "arithmetic-01 |" not in text


def test_the_gate_refuses_a_candidate_below_the_kept_share() -> None:
    from llmops.config import GateRule
    from llmops.evaluation.gates import gate_decision

    rule = GateRule(metric="retention_kept", min=0.9)
    refused = gate_decision([rule], {"retention_kept": 2 / 3}, {"retention_kept": 1.0}, None)
    assert not refused.passed
    assert refused.results[0].reason == "FAILED: retention_kept=0.6667 >= min 0.9"
    assert gate_decision([rule], {"retention_kept": 0.95}, {}, None).passed


def test_build_keeps_what_the_base_answers_right_with_provenance(
        repo_copy: Path, fake_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.config import load_model
    from llmops.stages import retention as stage

    pool = repo_copy / "validation" / "retention" / "pool.jsonl"
    pool.write_text("".join(json.dumps(i.to_row()) + "\n" for i in ITEMS)
                    + json.dumps({"id": "yes-no-01", "category": "yes-no",
                                  "question": "Is ice cold?", "answer": "yes",
                                  "match": "starts"}) + "\n")
    base = repo_copy.parent / "base-model"
    base.mkdir()
    (base / "config.json").write_text("{}")
    endpoint, _ = fake_server(knows, ("base",))
    spec = load_model("support-bot")
    monkeypatch.setattr(stage, "_serve_base", lambda spec, base_model, settings:
                        _Served(endpoint))
    done = stage.build_retention(spec, base_model=str(base))
    kept = read_items(done.path)
    assert [i.id for i in kept] == ["knowledge-01", "arithmetic-01", "formatting-01"]
    assert done.path == repo_copy / "validation" / "retention" / "support-bot.jsonl"
    provenance = json.loads(done.provenance_path.read_text())
    assert provenance["asked"] == 4 and provenance["kept"] == 3
    assert provenance["dropped"] == [{"id": "yes-no-01", "answer": "I am not sure."}]
    assert provenance["pool"] == "validation/retention/pool.jsonl"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", provenance["pool_sha256"])
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", provenance["base_model_digest"])
    assert provenance["engine"].startswith("vllm ")
    assert provenance["max_new_tokens"] == spec.validation.eval.retention.max_new_tokens  # type: ignore[union-attr]
    assert provenance["temperature"] == 0.0 and provenance["built_at"]


class _Served:
    def __init__(self, endpoint: EvalEndpoint) -> None:
        self.endpoint = endpoint

    def __enter__(self) -> EvalEndpoint:
        return self.endpoint

    def __exit__(self, *exc: object) -> None:
        pass


def test_answers_are_redacted_in_the_records_and_the_report(fake_server: Any) -> None:
    token = "glpat-" + "Zx9" * 8
    endpoint, _ = fake_server(lambda role, q: f"Use {token} to log in." if role == "candidate"
                              else knows(role, q))
    kept = retention.RetentionSuite("validation/retention/x.jsonl", ITEMS, 24)
    result = kept.run(endpoint)
    assert result.metrics["candidate"]["retention_kept"] == 0.0
    assert token not in json.dumps(result.records) and token not in "\n".join(
        kept.section(result))
    assert "[REDACTED]" in "\n".join(kept.section(result))


def test_a_missing_retention_set_says_how_to_build_it(repo_copy: Path) -> None:
    from llmops.config import load_model
    from llmops.stages.data import check_config

    (repo_copy / "validation" / "retention" / "support-bot.jsonl").unlink()
    with pytest.raises(UsageError, match=r"llmops build-retention support-bot"):
        retention.build(load_model("support-bot"))
    # the release's first stage says so, before any training
    with pytest.raises(UsageError, match=r"llmops build-retention support-bot"):
        check_config(load_model("support-bot"))



def test_check_config_leaves_the_training_data_to_the_data_gate(repo_copy: Path) -> None:
    """check-config reads the suites' files, not the training data: a broken line is the
    data gate's to name, with every other bad line."""
    from llmops.config import load_model
    from llmops.stages.data import check_config

    train = repo_copy / "datasets" / "support-bot" / "train.jsonl"
    train.write_text("{not json\n" + train.read_text())
    check_config(load_model("support-bot"))
    with pytest.raises(UsageError, match=r"train.jsonl:1"):
        retention.build(load_model("support-bot"))  # evaluation's own read


def test_a_retention_prompt_in_the_training_data_is_refused(repo_copy: Path) -> None:
    from llmops.config import load_model

    kept = read_items(repo_copy / "validation" / "retention" / "support-bot.jsonl")
    assert retention.build(load_model("support-bot")) is not None  # the shipped data is clean
    train = repo_copy / "datasets" / "support-bot" / "train.jsonl"
    lines = train.read_text().splitlines(keepends=True)
    # An opening and other casing still count: the question was trained on.
    leaked = {"messages": [{"role": "user", "content": "Hi! " + kept[0].question.upper()},
                           {"role": "assistant", "content": kept[0].answers[0]}]}
    train.write_text("".join(lines[:5]) + json.dumps(leaked) + "\n" + "".join(lines[5:]))
    with pytest.raises(UsageError, match=rf"support-bot.jsonl: 1 prompt\(s\) of the retention "
                       rf"set are asked in the training data: {kept[0].id} \(train.jsonl:6\)"):
        retention.build(load_model("support-bot"))


# --- lm-evaluation-harness ------------------------------------------------------------------


def test_the_repository_task_loads_from_local_files_only() -> None:
    from llmops.config import load_model

    suite = lmeval.build(load_model("support-bot"))
    assert suite is not None
    [config] = suite.configs
    assert config["task"] == "kept_arithmetic" and config["output_type"] == "generate_until"
    data = Path(config["dataset_kwargs"]["data_files"]["test"])
    assert data.is_absolute() and data.is_file()


def test_task_config_refuses_what_would_download_or_needs_logprobs(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text("task: t\noutput_type: generate_until\n"
                                     "dataset_path: openai/gsm8k\n")
    with pytest.raises(UsageError, match="dataset_path: must be json"):
        lmeval.task_config(tmp_path, "t")
    (tmp_path / "t.yaml").write_text("task: t\noutput_type: multiple_choice\n")
    with pytest.raises(UsageError, match="generate_until tasks only"):
        lmeval.task_config(tmp_path, "t")
    with pytest.raises(UsageError, match=r"no .*u.yaml \(tasks there: t\)"):
        lmeval.task_config(tmp_path, "u")


def test_metric_names() -> None:
    assert lmeval.metrics_of({"kept_arithmetic": {
        "alias": "kept_arithmetic", "exact_match,last-number": 0.5,
        "exact_match_stderr,last-number": "N/A"}}) == {
        "lmeval.kept_arithmetic.exact_match": 0.5}
    assert lmeval.metrics_of({"t": {"exact_match,a": 0.5, "exact_match,b": 0.25}}) == {
        "lmeval.t.exact_match.a": 0.5, "lmeval.t.exact_match.b": 0.25}


def test_lm_eval_runs_the_repository_task_against_the_endpoint(fake_server: Any) -> None:
    from llmops.config import load_model

    data = REPO / "validation" / "lm_eval" / "kept_arithmetic.jsonl"
    truth = {json.loads(line)["question"]: json.loads(line)["answer"]
             for line in data.read_text().splitlines()}

    def solve(role: str, prompt: str) -> str:
        answer = truth[prompt.removesuffix(" Answer with the number only.")]
        return f"The answer is {answer}." if role == "base" else "I am not sure."

    endpoint, seen = fake_server(solve)
    suite = lmeval.build(load_model("support-bot"))
    assert suite is not None
    result = suite.run(endpoint)
    assert result.metrics == {"base": {"lmeval.kept_arithmetic.exact_match": 1.0},
                              "candidate": {"lmeval.kept_arithmetic.exact_match": 0.0}}
    assert len(seen) == 2 * len(truth) and {b["model"] for b in seen} == {"base", "candidate"}
    assert "| lmeval.kept_arithmetic.exact_match | 1 | 0 |" in suite.section(result)
