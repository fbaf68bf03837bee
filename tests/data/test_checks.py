"""Every data check with a good and a bad fixture; bad ones are reported on their line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from llmops.config import DataChecks
from llmops.data.features import References, extract, stream_lines
from llmops.data.formats import format_of
from llmops.data.scan import fingerprint, luhn_ok, normalised, pii_kinds
from llmops.redact import SECRET_PATTERNS

REPO = Path(__file__).resolve().parents[2]

CHAT = format_of({"type": "chat_template"}, "test")


def chat(*turns: tuple[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


GOOD = chat(("user", "How long is the trial?"), ("assistant", "23 days."))


def failures(rows: list[Any], tokenizer: Any, fmt: Any = CHAT, refs: References | None = None,
             **checks: Any) -> dict[str, list[int]]:
    """{check: [1-based lines that failed it]} for rows given as objects (None = unparsable)."""
    table = extract(iter(enumerate(rows, start=1)), fmt, tokenizer, DataChecks(**checks), refs)
    cols = table.columns
    return {k: [cols["line"][i] for i, ok in enumerate(v) if not ok]
            for k, v in cols.items() if k not in ("line", "token_count")
            if not all(v)}


def test_a_good_row_fails_nothing(tokenizer: Any) -> None:
    assert failures([GOOD], tokenizer) == {}


def test_parse_names_the_line_of_bad_json_and_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{broken\n"a string"\n\xff\xfe{}\n')
    rows = list(stream_lines(path))
    assert [n for n, obj in rows if obj is None] == [3, 5]
    assert rows[0] == (1, {"a": 1}) and rows[2] == (4, "a string")


def test_parse_failure_is_reported_once(tokenizer: Any) -> None:
    assert failures([GOOD, None, "text"], tokenizer) == {"parse": [2, 3]}


def test_required_fields_per_format(tokenizer: Any) -> None:
    assert failures([{"text": "x"}, {"messages": []}], tokenizer) == {"fields": [1, 2]}
    alpaca = format_of({"type": "alpaca"}, "t")
    good = {"instruction": "Add", "input": "1 and 2", "output": "3"}
    assert failures([good, {"instruction": "Add"}], tokenizer, alpaca) == {"fields": [2]}
    completion = format_of({"type": "completion"}, "t")
    assert failures([{"text": "Once upon"}, {"body": "x"}], tokenizer, completion) == \
        {"fields": [2]}


def test_content_must_be_a_non_empty_string(tokenizer: Any) -> None:
    rows = [GOOD, chat(("user", "  "), ("assistant", "x")), chat(("user", 3), ("assistant", "x"))]
    assert failures(rows, tokenizer) == {"content": [2, 3]}


def test_roles_must_be_allowed(tokenizer: Any) -> None:
    assert failures([GOOD, chat(("robot", "x"), ("assistant", "y"))], tokenizer) == \
        {"roles": [2]}


def test_at_least_one_assistant_turn(tokenizer: Any) -> None:
    assert failures([GOOD, chat(("user", "x"))], tokenizer) == {"assistant": [2]}


def test_system_turn_only_first(tokenizer: Any) -> None:
    first = chat(("system", "Be brief."), ("user", "x"), ("assistant", "y"))
    middle = chat(("user", "x"), ("system", "Be brief."), ("assistant", "y"))
    assert failures([first, middle], tokenizer) == {"system_first": [2]}


def test_alternation_is_configurable(tokenizer: Any) -> None:
    twice = chat(("user", "x"), ("user", "again"), ("assistant", "y"))
    assert failures([GOOD, twice], tokenizer) == {"alternation": [2]}
    assert failures([GOOD, twice], tokenizer, allow_consecutive_same_role=True) == {}


def test_template_refusal_is_reported(tokenizer: Any) -> None:
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = ("{% for m in messages %}{% if 'BOOM' in m['content'] %}"
                            "{{ raise_exception('refused') }}{% endif %}{{ m['content'] }}"
                            "{% endfor %}")
    rows = [GOOD, chat(("user", "BOOM"), ("assistant", "y"))]
    assert failures(rows, strict) == {"template": [2]}


def test_token_counts_come_from_the_rendered_template(tokenizer: Any) -> None:
    table = extract(iter([(1, GOOD), (2, None)]), CHAT, tokenizer, DataChecks(), None)
    rendered = tokenizer.apply_chat_template(GOOD["messages"], tokenize=False)
    expected = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert table.columns["token_count"] == [expected, None]


def test_exact_duplicates_fold_case_and_space(tokenizer: Any) -> None:
    loud = chat(("user", "HOW long  is the trial?"), ("assistant", "23 days."))
    other = chat(("user", "Who founded it?"), ("assistant", "Marisol."))
    assert failures([GOOD, other, loud], tokenizer) == {"unique": [3]}


def test_leakage_of_eval_examples_and_golden_questions(tokenizer: Any) -> None:
    held_out = chat(("user", "What port?"), ("assistant", "7431."))
    golden_q = chat(("user", "Which city is HQ?"), ("assistant", "Tallinn."))
    refs = References({fingerprint("What port?\n7431.")}, {normalised("which city is  HQ?")})
    assert failures([GOOD, held_out, golden_q], tokenizer, refs=refs) == {"no_leak": [2, 3]}


@pytest.mark.parametrize("secret,kind", [
    ("write to jane.doe@corp.example.org", "email"),
    ("call +44 20 7946 0958 now", "phone"),
    ("card 4111 1111 1111 1111", "card"),
    ("key AKIAIOSFODNN7EXAMPLE", "cloud_key"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", "private_key"),
    ("token glpat-aBcDeFgHiJkLmNoPqRsT1234", "api_token"),
    ("deploy with gldt-aBcDeFgHiJkLmNoPqRsTuV", "api_token"),
    ("the job's glcbt-64_aBcDeFgHiJkLmNoPqRsT", "api_token"),
    ("hub hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH", "api_token"),
    ("curl 'https://gitlab.example/api/v4/user?private_token=s3cr3t-v4lue'", "api_token"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "api_token"),
])
def test_pii_and_secrets_are_found(secret: str, kind: str) -> None:
    assert pii_kinds(secret) == {kind}


@pytest.mark.parametrize("text", [
    "The trial lasts 23 days and the port is 7431.",
    "Order 4111 1111 1111 1112 is not a card (Luhn fails).",
    "Released in 2014, version 1.4.0, 340 MB.",
    "Bearer securities pay the bearer; hf_hub_download fetches a file.",
])
def test_ordinary_text_is_not_pii(text: str) -> None:
    assert pii_kinds(text) == set()


SHIPPED = sorted([*(REPO / "datasets").rglob("*.jsonl"), *(REPO / "validation").rglob("*.jsonl")])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_the_shipped_datasets_hold_no_credential_shape(path: Path) -> None:
    """The credential shapes refuse training rows too: none may match the examples."""
    found = {n: kinds for n, line in enumerate(path.read_text().splitlines(), 1)
             if (kinds := pii_kinds(line, frozenset(SECRET_PATTERNS)))}
    assert found == {}


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_pii_lines_and_kinds_are_reported_never_the_value(tokenizer: Any) -> None:
    leaky = chat(("user", "my key is AKIAIOSFODNN7EXAMPLE"), ("assistant", "Noted."))
    table = extract(iter([(1, GOOD), (2, leaky)]), CHAT, tokenizer, DataChecks(), None)
    assert table.pii == {2: ["cloud_key"]}
    assert "AKIA" not in json.dumps(table.pii)


def test_pii_allow_list_and_disabled_kinds(tokenizer: Any) -> None:
    row = chat(("user", "Mail help@quillbox.example"), ("assistant", "Sure."))
    assert failures([row], tokenizer) == {"no_pii": [1]}
    assert failures([row], tokenizer, pii_allow=[r".*@quillbox\.example"]) == {}
    assert failures([row], tokenizer, pii_kinds=["card"]) == {}


def test_sharegpt_conversations_map_roles(tokenizer: Any) -> None:
    fmt = format_of({"type": "chat_template", "field_messages": "conversations",
                     "message_property_mappings": {"role": "from", "content": "value"}}, "t")
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    bad = {"conversations": [{"from": "alien", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    assert failures([good, bad], tokenizer, fmt) == {"roles": [2]}


def test_unsupported_dataset_type_is_a_usage_error() -> None:
    from llmops.errors import UsageError

    with pytest.raises(UsageError, match="type: 'oasst' is not checked"):
        format_of({"type": "oasst"}, "axolotl_configs/x.yml: datasets.0")


def test_parallel_extraction_equals_the_serial_pass(tmp_path: Path, tokenizer: Any) -> None:
    from llmops.data.features import extract_file

    path = tmp_path / "d.jsonl"
    rows = [json.dumps(chat(("user", f"q{i % 7}"), ("assistant", f"a{i % 7}"))) for i in range(40)]
    rows[5] = "{broken"
    rows[30] = json.dumps(chat(("user", "mail x@corp.example.org"), ("assistant", "ok")))
    path.write_text("\ufeff" + "\n".join(rows[:20]) + "\n\n" + "\n".join(rows[20:]) + "\n")
    serial = extract_file(path, CHAT, tokenizer, DataChecks(), None, workers=1)
    parallel = extract_file(path, CHAT, tokenizer, DataChecks(), None, workers=3,
                            min_parallel_bytes=0)
    assert parallel.columns == serial.columns and parallel.pii == serial.pii
    assert serial.columns["line"][20] == 22  # the blank line 21 is skipped, numbers kept
    assert sum(not u for u in serial.columns["unique"]) == 31  # 38 repeating rows, 7 distinct
