"""Evaluation re-asks nothing: the answer cache's key, its entries on disk, and evaluation
servers started only for the answers the cache lacks."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_base_and_adapter

from llmops.config import GoldenSet, ServeSettings
from llmops.config.golden import GoldenItem
from llmops.evaluation import evalserve
from llmops.evaluation.answercache import (
    AnswerCache,
    CachedChat,
    Reply,
    Served,
    artefact_id,
    request_key,
)
from llmops.evaluation.served import ADAPTER_ROLE, EvalServer, plan_servers, served_roles
from llmops.evaluation.suite import EvalEndpoint, SuiteResult, ask_every_role

SERVED = Served(artefact_id("merged", "sha256:base", "sha256:adapter"), "0.32.0", "bfloat16",
                "none")
REQUEST = {"messages": [{"role": "user", "content": "How long is the trial?"}],
           "max_tokens": 48, "temperature": 0.0}


# --- the key -------------------------------------------------------------------------------


def test_the_same_request_to_the_same_artefact_has_the_same_key() -> None:
    again = Served(artefact_id("merged", "sha256:base", "sha256:adapter"), "0.32.0",
                   "bfloat16", "none")
    assert request_key(SERVED, REQUEST) == request_key(again, json.loads(json.dumps(REQUEST)))
    # the role's name on the server is not what answers
    assert request_key(SERVED, {**REQUEST, "model": "candidate"}) == \
        request_key(SERVED, {**REQUEST, "model": "production"})


@pytest.mark.parametrize("changed", [
    replace(SERVED, artefact=artefact_id("int8", "sha256:base", "sha256:adapter")),
    replace(SERVED, artefact=artefact_id("adapter", "sha256:base", "sha256:adapter")),
    replace(SERVED, artefact=artefact_id("merged", "sha256:base2", "sha256:adapter")),
    replace(SERVED, artefact=artefact_id("merged", "sha256:base", "sha256:adapter2")),
    replace(SERVED, artefact=artefact_id("base", "sha256:base")),
    replace(SERVED, engine="0.33.0"),
    replace(SERVED, dtype="float32"),
    replace(SERVED, quantization="w8a8-int8"),
])
def test_every_part_of_what_serves_changes_the_key(changed: Served) -> None:
    assert request_key(changed, REQUEST) != request_key(SERVED, REQUEST)


@pytest.mark.parametrize("changed", [
    {**REQUEST, "messages": [{"role": "user", "content": "How long is the trial? "}]},
    {**REQUEST, "messages": [{"role": "system", "content": "Be brief."},
                             *REQUEST["messages"]]},  # type: ignore[misc]
    {**REQUEST, "max_tokens": 49},
    {**REQUEST, "temperature": 0.7},
    {**REQUEST, "stop": ["\n"]},
])
def test_every_part_of_the_request_changes_the_key(changed: dict[str, Any]) -> None:
    assert request_key(SERVED, changed) != request_key(SERVED, REQUEST)


def _folder(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def test_each_role_is_keyed_by_its_files_and_how_it_is_served(tmp_path: Path) -> None:
    base = _folder(tmp_path / "base", {"config.json": b"{}", "model.safetensors": b"w"})
    run = _folder(tmp_path / "run", {"adapter_config.json": b"{}",
                                     "adapter_model.safetensors": b"a", "train.log": b"1"})
    prod = _folder(tmp_path / "prod", {"adapter_config.json": b"{}",
                                       "adapter_model.safetensors": b"p"})
    settings = ServeSettings(dtype="bfloat16", quantization="none", kvcache_space_gib=1)
    roles = served_roles(str(base), {"candidate": run, "production": prod},
                         {"candidate": "merged", "production": "merged"}, settings)
    assert set(roles) == {"base", "candidate", "production", ADAPTER_ROLE}
    assert len({r.artefact for r in roles.values()}) == 4
    assert roles["candidate"].artefact.startswith("merged ")
    assert roles[ADAPTER_ROLE].artefact.startswith("adapter ")
    # The adapter's own files only: a log beside it is not what serves.
    (run / "train.log").write_bytes(b"2")
    assert served_roles(str(base), {"candidate": run, "production": prod},
                        {"candidate": "merged", "production": "merged"}, settings) == roles
    # A version's copy of the same adapter (production, promoted) answers as the run did.
    copy = _folder(tmp_path / "version", {"adapter_config.json": b"{}",
                                          "adapter_model.safetensors": b"a",
                                          "manifest.json": b"{}"})
    assert served_roles(str(base), {"production": copy}, {"production": "merged"},
                        settings)["production"] == roles["candidate"]
    # Another base model changes every role.
    (base / "model.safetensors").write_bytes(b"w2")
    other = served_roles(str(base), {"candidate": run, "production": prod},
                         {"candidate": "merged", "production": "merged"}, settings)
    assert all(other[r] != roles[r] for r in roles)


# --- entries on disk --------------------------------------------------------------------------


def test_an_entry_reads_back_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path, {"candidate": SERVED})
    assert cache.get("candidate", REQUEST) is None
    cache.put("candidate", REQUEST, {"text": "23 days", "finish_reason": "stop",
                                     "latency_s": 0.5})
    assert cache.get("candidate", REQUEST) == {"text": "23 days", "finish_reason": "stop",
                                               "latency_s": 0.5}
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == \
        [f"{cache.key('candidate', REQUEST)}.json"]


def test_an_interrupted_write_leaves_no_entry_and_no_temporary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = AnswerCache(tmp_path, {"candidate": SERVED})

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.put("candidate", REQUEST, {"text": "x", "finish_reason": "stop",
                                         "latency_s": 1.0})
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert cache.get("candidate", REQUEST) is None


@pytest.mark.parametrize("content", [
    b"",  # torn before anything was written
    b'{"key": "',  # torn half way
    b"\xff\xfe not text",
    b"[]",
    b'{"key": "another", "value": {"text": "x", "finish_reason": "stop", "latency_s": 1}}',
    b'{"key": "%s", "value": "not an object"}',
    b'{"key": "%s", "value": {"text": 1, "finish_reason": "stop", "latency_s": 1}}',
    b'{"key": "%s", "value": {"text": "x", "finish_reason": "stop", "latency_s": true}}',
])
def test_a_corrupt_entry_is_a_miss_that_is_asked_again_and_rewritten(
        tmp_path: Path, content: bytes) -> None:
    cache = AnswerCache(tmp_path, {"candidate": SERVED})
    key = cache.key("candidate", REQUEST)
    path = cache.path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(content.replace(b"%s", key.encode()))
    asked: list[str] = []

    def server(role: str, messages: list[dict[str, str]], **params: Any) -> Reply:
        asked.append(role)
        return Reply("23 days", "stop", 0.25)

    chat = CachedChat(cache, lambda: server)
    assert chat("candidate", REQUEST["messages"], max_tokens=48, temperature=0.0) == \
        Reply("23 days", "stop", 0.25)
    assert asked == ["candidate"]
    assert chat("candidate", REQUEST["messages"], max_tokens=48, temperature=0.0) == \
        Reply("23 days", "stop", 0.25, cached=True)
    assert asked == ["candidate"]


def test_a_fully_cached_chat_never_connects_and_one_miss_connects_once(
        tmp_path: Path) -> None:
    cache = AnswerCache(tmp_path, {"base": SERVED})
    questions = [f"question {i}" for i in range(16)]
    for q in questions:
        cache.put("base", {"messages": [{"role": "user", "content": q}], "max_tokens": 8},
                  {"text": q.upper(), "finish_reason": "stop", "latency_s": 0.1})
    connects: list[int] = []
    barrier = threading.Barrier(4)

    def connect() -> Any:
        connects.append(1)
        return lambda role, messages, **params: Reply("new", "length", 1.0)

    chat = CachedChat(cache, connect)
    endpoint = EvalEndpoint("", "k", ("base",), 8, 4)

    def ask(_: Any, role: str, q: str) -> Reply:
        if q == "new question":
            barrier.wait(timeout=10)  # the misses arrive together
        return chat(role, [{"role": "user", "content": q}], max_tokens=8)

    replies = ask_every_role(endpoint, questions, ask, "q")
    assert [r.text for r in replies] == [q.upper() for q in questions] and not connects
    assert all(r.cached for r in replies)
    replies = ask_every_role(endpoint, ["new question"] * 4, ask, "q")
    assert [r.text for r in replies] == ["new"] * 4 and connects == [1]


# --- servers started on demand ----------------------------------------------------------------


class _Suite:
    """A suite that asks every role one question through the endpoint's chat."""

    name = "one question"

    def run(self, endpoint: EvalEndpoint) -> SuiteResult:
        replies = ask_every_role(
            endpoint, ["Say hi."],
            lambda chat, role, q: (role, chat(role, [{"role": "user", "content": q}],
                                              max_tokens=4, temperature=0.0).text), "it")
        return SuiteResult(self.name, {role: {"said_hi": float(text == "hi")}
                                       for role, text in replies},
                           [{"role": role, "answer": text} for role, text in replies])

    def section(self, result: SuiteResult) -> list[str]:
        return []


@pytest.fixture()
def launches(monkeypatch: pytest.MonkeyPatch, fake_chat_server: Any) -> list[str]:
    """Every evaluation server launch (its served model), each a fake chat server that
    answers "hi" to the base and the base's name to every other role."""
    from llmops.serve import process

    started: list[str] = []

    class Server:
        def __init__(self, port: int) -> None:
            self.port = port
            self.proc = type("P", (), {"pid": os.getpid()})()

        def wait_healthy(self, timeout_s: float) -> None:
            time.sleep(1.0)  # a start: not part of the golden answers' time

        def kill(self) -> None:
            pass

    def launch(name: str, args_for: Any, settings: Any, api_key: str, **_: Any) -> Server:
        args = args_for(0)
        started.append(args[args.index("--served-model-name") + 1])
        endpoint, _ = fake_chat_server(
            lambda model, messages: "hi" if model == "base" else f"{model} says hello")
        return Server(int(endpoint.base_url.rsplit(":", 1)[1].split("/")[0]))

    monkeypatch.setattr(process, "launch", launch)
    monkeypatch.setattr(process, "lora_rank", lambda folder: 4)
    monkeypatch.setattr(evalserve.secrets, "token_urlsafe", lambda n: "k")  # the fake's key
    return started


GOLDEN = [(GoldenSet(path="golden.jsonl"), [GoldenItem("How long is the trial?", "23 days"),
                                            GoldenItem("Which port?", "7431")])]
SETTINGS = ServeSettings(dtype="bfloat16", quantization="none", kvcache_space_gib=1,
                         max_num_seqs=4)


def _evaluate(cache: AnswerCache, adapter_suites: bool = False) -> Any:
    servers = plan_servers("/base", {"candidate": Path("/run")},
                           {"candidate": Path("/c/merged")})
    return evalserve.evaluate_with_vllm("bot", servers, GOLDEN, 8, SETTINGS, [_Suite()],
                                        cache, adapter_suites)


def test_servers_start_only_for_the_roles_the_cache_lacks(tmp_path: Path,
                                                          launches: list[str]) -> None:
    import openai  # noqa: F401 (imported once per process: not the answers' time)
    import rouge_score.rouge_scorer  # noqa: F401

    served = {"base": SERVED, ADAPTER_ROLE: replace(SERVED, artefact="adapter a1"),
              "candidate": replace(SERVED, artefact="merged a1")}
    cache = AnswerCache(tmp_path, served)
    metrics, answers, results = _evaluate(cache)
    assert launches == ["base", "candidate"]
    assert not any(a["cached"] for a in answers)
    # Measured without the server's start (1 s here): 2 answers took less than that.
    assert metrics["base"]["golden_answers_per_s"] > 2.0
    assert metrics["candidate"]["golden_answers_per_s"] > 2.0
    # The adapter beside the served candidate answers the golden set only.
    assert set(results[0].metrics) == {"base", "candidate"}
    assert {a["role"] for a in answers} == {"base", ADAPTER_ROLE, "candidate"}

    # The same artefacts again: nothing asked, no server started, the same figures.
    launches.clear()
    again, answers_again, results_again = _evaluate(cache)
    assert launches == [] and all(a["cached"] for a in answers_again)
    assert again == metrics
    assert [(a["role"], a["answer"], a["latency_s"]) for a in answers_again] == \
        [(a["role"], a["answer"], a["latency_s"]) for a in answers]
    assert results_again[0].metrics == results[0].metrics
    assert again["candidate"]["server_rss_mb"] == metrics["candidate"]["server_rss_mb"]
    assert again["base"]["golden_answers_per_s"] == metrics["base"]["golden_answers_per_s"]

    # A new candidate: only its own server; the base server stays down because its roles
    # (base, and the same adapter) are all answered.
    launches.clear()
    cache.served["candidate"] = replace(SERVED, artefact="merged a2")
    _evaluate(cache)
    assert launches == ["candidate"]

    # A new adapter too: the base server hosts it, so it starts, but the base is asked
    # nothing (its answers are cached).
    launches.clear()
    cache.served[ADAPTER_ROLE] = replace(SERVED, artefact="adapter a3")
    cache.served["candidate"] = replace(SERVED, artefact="merged a3")
    _, answers, _ = _evaluate(cache)
    assert launches == ["base", "candidate"]
    assert all(a["cached"] for a in answers if a["role"] == "base")
    assert not any(a["cached"] for a in answers if a["role"] != "base")


def test_the_next_server_starts_while_the_current_one_answers(
        tmp_path: Path, launches: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidate's server is launched right after the base's, not after the base has
    started (1 s here) and answered: its start overlaps the base's work. The baseline
    (PRESTART_NEXT off) launches it only once the base server is done."""
    from llmops.serve import process

    launched_at: list[float] = []
    launch = process.launch
    monkeypatch.setattr(process, "launch", lambda *a, **kw: (
        launched_at.append(time.monotonic()), launch(*a, **kw))[1])
    served = {"base": SERVED, ADAPTER_ROLE: replace(SERVED, artefact="adapter a1"),
              "candidate": replace(SERVED, artefact="merged a1")}
    _evaluate(AnswerCache(tmp_path / "on", served))
    assert launches == ["base", "candidate"]
    assert launched_at[1] - launched_at[0] < 0.5  # before the base server was even healthy
    monkeypatch.setattr(evalserve, "PRESTART_NEXT", False)
    launches.clear()
    launched_at.clear()
    _evaluate(AnswerCache(tmp_path / "off", served))
    assert launches == ["base", "candidate"] and launched_at[1] - launched_at[0] >= 1.0


def test_the_adapter_answers_every_suite_when_the_config_asks(tmp_path: Path,
                                                             launches: list[str]) -> None:
    cache = AnswerCache(tmp_path, {"base": SERVED,
                                   ADAPTER_ROLE: replace(SERVED, artefact="adapter a1"),
                                   "candidate": replace(SERVED, artefact="merged a1")})
    _, _, results = _evaluate(cache, adapter_suites=True)
    assert set(results[0].metrics) == {"base", ADAPTER_ROLE, "candidate"}


def test_a_server_that_cannot_start_fails_once_for_every_waiting_request(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.errors import CheckFailed
    from llmops.serve import process

    started: list[int] = []
    killed: list[int] = []

    class Broken:
        port = 1

        def wait_healthy(self, timeout_s: float) -> None:
            raise RuntimeError("no such model")

        def kill(self) -> None:
            killed.append(1)

    def launch(*args: Any) -> Broken:
        started.append(1)
        return Broken()

    monkeypatch.setattr(process, "launch", launch)
    server = evalserve.OnDemandServer("bot", EvalServer("base model", "/base", "base"),
                                      SETTINGS)
    for _ in range(3):
        with pytest.raises(CheckFailed, match="vLLM could not load bot .*no such model"):
            server.url()
    assert started == [1] and killed == [1]
    assert server.rss_mb() is None


# --- the evaluation, twice ----------------------------------------------------------------------

FAKES = Path(__file__).resolve().parents[1] / "fakes"


def test_evaluating_the_same_candidate_twice_asks_no_server_the_second_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`evaluate` as the evaluate stage calls it (tiny's golden set and probes, its eval
    loss, the candidate merged), against the test double of vLLM's server (tests/fakes):
    the first evaluation starts the base server and the candidate's and asks them; the
    second, of the same candidate, starts none and asks nothing, with the same figures."""
    from llmops.config import load_model
    from llmops.evaluation.evaluate import evaluate

    home = tmp_path / "home"
    monkeypatch.setenv("LLMOPS_HOME", str(home))
    monkeypatch.setenv("LLMOPS_SERVE_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(FAKES))
    base, adapter = tiny_base_and_adapter(tmp_path)
    spec = load_model("tiny")
    settings = ServeSettings(dtype="bfloat16", quantization="none", kvcache_space_gib=1,
                             max_num_seqs=8,
                             startup_timeout_s=60, preload_iomp=False,
                             preload_tcmalloc=False)

    def servers_and_requests() -> tuple[list[str], int]:
        folders = sorted((home / "deployments").glob("tiny-eval-*"))
        asked = sum(len((f / "requests.jsonl").read_text().splitlines())
                    for f in folders if (f / "requests.jsonl").is_file())
        return [f.name for f in folders], asked

    first = evaluate(spec, str(base), {"candidate": adapter}, settings, {"candidate": "merged"})
    folders, asked = servers_and_requests()
    assert len(folders) == 2 and asked > 0
    second = evaluate(spec, str(base), {"candidate": adapter}, settings,
                      {"candidate": "merged"})
    assert servers_and_requests() == (folders, asked)  # no server, no request
    assert second.metrics == first.metrics
    assert [a["answer"] for a in second.answers] == [a["answer"] for a in first.answers]
    assert second.suites == first.suites


# --- lm-evaluation-harness: a role's whole result --------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def test_an_lm_eval_result_is_cached_whole_and_keyed_by_the_task_files(
        tmp_path: Path, fake_chat_server: Any) -> None:
    import shutil

    from llmops.config import load_model
    from llmops.evaluation import lmeval

    suite = lmeval.build(load_model("support-bot"))
    assert suite is not None
    endpoint, seen = fake_chat_server(lambda model, messages: "The answer is 4.")
    cache = AnswerCache(tmp_path / "cache", {"base": SERVED,
                                             "candidate": replace(SERVED, artefact="m")})
    first = suite.run(replace(endpoint, cache=cache))
    assert seen and {b["model"] for b in seen} == {"base", "candidate"}

    def no_server() -> str:
        raise AssertionError("a cached result needs no server")

    asked = len(seen)
    again = suite.run(replace(endpoint, base_url="", cache=cache, start=no_server))
    assert len(seen) == asked
    assert again.metrics == first.metrics and again.records == first.records
    # One new role: only it is run.
    cache.served["candidate"] = replace(SERVED, artefact="m2")
    suite.run(replace(endpoint, cache=cache))
    assert {b["model"] for b in seen[asked:]} == {"candidate"}
    # The task's data by content, not by path; the answer length is part of the key.
    tasks = REPO / "validation" / "lm_eval"
    copies = [shutil.copytree(tasks, tmp_path / name) for name in ("a", "b")]
    a, b = (lmeval.LmEvalSuite([lmeval.task_config(Path(c), "kept_arithmetic")], None, 32)
            for c in copies)
    assert a.asked() == b.asked()
    assert lmeval.LmEvalSuite(a.configs, None, 33).asked() != a.asked()
    data = Path(copies[1]) / "kept_arithmetic.jsonl"
    data.write_text(data.read_text() + data.read_text().splitlines()[0] + "\n")
    b = lmeval.LmEvalSuite([lmeval.task_config(Path(copies[1]), "kept_arithmetic")], None, 32)
    assert a.asked() != b.asked()
