"""One dataset reader: rows read as the Axolotl dataset entry says, for every stage."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from llmops.config import DatasetRef, load_model
from llmops.data.reader import iter_conversations, read_conversations
from llmops.errors import UsageError

SHAREGPT = {"type": "chat_template", "field_messages": "conversations",
            "message_property_mappings": {"role": "from", "content": "value"}}
CHAT = [[{"role": "user", "content": "Is there a dark mode?"},
         {"role": "assistant", "content": "Yes, under Settings."}],
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Who founded Quillbox?"},
         {"role": "assistant", "content": "Marisol Okonkwo."}]]


def dataset(tmp_path: Path, rows: list[Any], entry: dict[str, Any],
            name: str = "d.jsonl") -> DatasetRef:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return DatasetRef(path, str(entry["type"]), "eval", {"path": str(path), **entry})


def as_sharegpt(conversation: list[dict[str, str]], names: dict[str, str]) -> dict[str, Any]:
    return {"conversations": [{"from": names[m["role"]], "value": m["content"]}
                              for m in conversation]}


def test_chat_template_rows_are_read_as_written(tmp_path: Path) -> None:
    ref = dataset(tmp_path, [{"messages": c} for c in CHAT], {"type": "chat_template"})
    assert read_conversations(ref) == CHAT


def test_sharegpt_rows_map_keys_and_axolotl_default_role_names(tmp_path: Path) -> None:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    ref = dataset(tmp_path, [as_sharegpt(c, names) for c in CHAT], SHAREGPT)
    assert read_conversations(ref) == CHAT


def test_sharegpt_rows_with_role_names_of_their_own(tmp_path: Path) -> None:
    names = {"system": "system", "user": "customer", "assistant": "agent"}
    roles = {"system": ["system"], "user": ["customer"], "assistant": ["agent"]}
    ref = dataset(tmp_path, [as_sharegpt(c, names) for c in CHAT], {**SHAREGPT, "roles": roles})
    assert read_conversations(ref) == CHAT


def test_own_role_names_replace_axolotl_defaults(tmp_path: Path) -> None:
    # As in Axolotl: an entry's `roles` replace the default mapping; other names pass as is
    # (and the data gate's allowed_roles refuses them).
    row = as_sharegpt(CHAT[0], {"user": "human", "assistant": "agent"})
    ref = dataset(tmp_path, [row], {**SHAREGPT, "roles": {"assistant": ["agent"]}})
    assert [m["role"] for m in read_conversations(ref)[0]] == ["human", "assistant"]


def test_alpaca_rows_are_one_user_and_one_assistant_turn(tmp_path: Path) -> None:
    rows = [{"instruction": "Is there a dark mode?", "input": "", "output": "Yes."},
            {"instruction": "Translate to French.", "input": "Good night", "output": "Bonne nuit"},
            {"instruction": "Who founded Quillbox?", "output": "Marisol Okonkwo."}]
    ref = dataset(tmp_path, rows, {"type": "alpaca"})
    assert read_conversations(ref) == [
        [{"role": "user", "content": "Is there a dark mode?"},
         {"role": "assistant", "content": "Yes."}],
        [{"role": "user", "content": "Translate to French.\n\nGood night"},
         {"role": "assistant", "content": "Bonne nuit"}],
        [{"role": "user", "content": "Who founded Quillbox?"},
         {"role": "assistant", "content": "Marisol Okonkwo."}]]


def test_completion_rows_are_one_text_turn(tmp_path: Path) -> None:
    ref = dataset(tmp_path, [{"body": "Quillbox notes."}], {"type": "completion", "field": "body"})
    assert read_conversations(ref) == [[{"role": "text", "content": "Quillbox notes."}]]


def test_a_json_array_file_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"messages": c} for c in CHAT], indent=1))
    ref = DatasetRef(path, "chat_template", "train", {"path": str(path), "type": "chat_template"})
    assert read_conversations(ref) == CHAT


@pytest.mark.parametrize("entry,bad,message", [
    (SHAREGPT, {"messages": CHAT[0]}, r"d.jsonl:2: no 'conversations' \(a list of messages"),
    ({"type": "alpaca"}, {"instruction": "Hi?"}, r"d.jsonl:2: no 'instruction' and 'output'"),
    ({"type": "completion"}, {"content": "x"}, r"d.jsonl:2: no 'text'"),
    ({"type": "chat_template"}, "{not json", r"d.jsonl:2: not a JSON object"),
    ({"type": "chat_template"}, {"messages": [{"role": "user", "content": ["x"]}]},
     r"d.jsonl:2: 'messages' .*: message 0: its role and content must be strings"),
    ({"type": "alpaca"}, {"instruction": "Hi?", "output": 3},
     r"d.jsonl:2: 'instruction' and 'output' must be strings"),
])
def test_a_row_that_cannot_be_read_names_file_and_line(
        tmp_path: Path, entry: dict[str, Any], bad: Any, message: str) -> None:
    good = {"chat_template": {"messages": CHAT[0]},
            "alpaca": {"instruction": "Hi?", "output": "Hello."},
            "completion": {"text": "Quillbox."}}[entry["type"]]
    if entry is SHAREGPT:
        good = as_sharegpt(CHAT[0], {"user": "human", "assistant": "gpt"})
    ref = dataset(tmp_path, [good, bad], entry)
    with pytest.raises(UsageError, match=message):
        read_conversations(ref)


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    ref = dataset(tmp_path, [{"messages": CHAT[0]}, "", {"messages": CHAT[1]}],
                  {"type": "chat_template"})
    assert [line for line, _ in iter_conversations(ref)] == [1, 3]


# --- the config check: a dataset block no stage could read exits 2 at load time -----------


def edit_tiny(repo: Path, old: str, new: str, count: int = 1) -> Path:
    path = repo / "axolotl_configs" / "tiny.yml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))
    return path


def line_with(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), start=1)
                if text in line)


def test_an_unsupported_type_is_refused_with_file_line_and_key(repo_copy: Path) -> None:
    path = edit_tiny(repo_copy, "type: chat_template", "type: oasst")
    with pytest.raises(UsageError) as exc:
        load_model("tiny")
    assert exc.value.exit_code == 2
    assert str(exc.value).startswith(
        f"{path}:{line_with(path, 'type: oasst')}: datasets.0.type: 'oasst' is not checked")
    assert "supported: chat_template, alpaca, completion" in str(exc.value)


@pytest.mark.parametrize("old,new,key", [
    ("field_messages: messages", "field_messages: [messages]", "datasets.0.field_messages"),
    ("field_messages: messages", "message_property_mappings: [from, value]",
     "datasets.0.message_property_mappings"),
    ("field_messages: messages", "roles: {user: human}", "datasets.0.roles"),
])
def test_a_bad_mapping_is_refused_with_file_line_and_key(repo_copy: Path, old: str, new: str,
                                                         key: str) -> None:
    path = edit_tiny(repo_copy, old, new)
    with pytest.raises(UsageError, match=rf"{path}:{line_with(path, new)}: {key}: must"):
        load_model("tiny")


def test_a_completion_eval_set_is_refused_at_load_time(repo_copy: Path) -> None:
    # Eval loss is the assistant turn's, through the chat template: a completion set has none.
    path = edit_tiny(repo_copy, "    type: chat_template\n    field_messages: messages\n"
                     "    roles_to_train: [assistant]\n    split: train",
                     "    type: completion\n    split: train")
    with pytest.raises(UsageError, match=rf"{path}:\d+: test_datasets.0.type: 'completion' "
                                         "cannot be an eval set"):
        load_model("tiny")


# --- every stage reads the same conversations, whatever the shape -------------------------


def test_evaluation_reads_a_chat_file_and_its_sharegpt_equivalent_alike(
        tmp_path: Path) -> None:
    from llmops.evaluation.evaluate import eval_conversations

    names = {"system": "system", "user": "customer", "assistant": "agent"}
    roles = {"system": ["system"], "user": ["customer"], "assistant": ["agent"]}
    chat = dataset(tmp_path, [{"messages": c} for c in CHAT], {"type": "chat_template"},
                   "chat.jsonl")
    sharegpt = dataset(tmp_path, [as_sharegpt(c, names) for c in CHAT],
                       {**SHAREGPT, "roles": roles}, "sharegpt.jsonl")
    spec = load_model("tiny")
    read = {ref.path.stem: eval_conversations(replace(spec, datasets=(spec.datasets[0], ref)))
            for ref in (chat, sharegpt)}
    assert read["chat"] == read["sharegpt"] == CHAT


def test_the_tiny_models_evaluate_the_same_conversations_in_every_shape() -> None:
    from llmops.evaluation.evaluate import eval_conversations

    tiny = eval_conversations(load_model("tiny"))
    assert len(tiny) == 28
    assert eval_conversations(load_model("tiny-sharegpt")) == tiny
    assert eval_conversations(load_model("tiny-alpaca")) == tiny


def test_unsloth_renders_each_conversation_through_the_chat_template(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    from llmops.train.unsloth import _texts, unsloth_plan

    class Template:
        def apply_chat_template(self, msgs: list[dict[str, str]], tokenize: bool) -> str:
            return "|".join(f"{m['role']}:{m['content']}" for m in msgs)

    names = {"user": "human", "assistant": "gpt", "system": "system"}
    ref = dataset(tmp_path, [as_sharegpt(c, names) for c in CHAT], SHAREGPT)
    plan = unsloth_plan({**load_model("tiny").axolotl.as_dict(), "output_dir": str(tmp_path),
                         "datasets": [ref.entry]})
    assert _texts(plan["data"]["train"], Template(), "train")["text"] == [
        "user:Is there a dark mode?|assistant:Yes, under Settings.",
        "system:Be brief.|user:Who founded Quillbox?|assistant:Marisol Okonkwo."]
