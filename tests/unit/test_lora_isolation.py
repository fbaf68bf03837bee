"""The LoRA isolation harness's judgement, on a fake engine: an HTTP server with vLLM's
routes that the harness uses, answering `<files>:<prompt>` (the adapter folder's name, or
`base`), into which each test puts one of the bugs vLLM has shipped. The harness runs as it
does on vLLM (`run_isolation`); only the servers differ."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmops.serve.isolation import IsolationReport, load_verdict, save_verdict
from llmops.serve.isolation_run import BASE_NAME, Adapters, Endpoint, run_isolation

KEY = "fake-key"
VERSION = "0.0.0-fake"


class FakeEngine:
    """Servers of a fake engine with one of these faults:
    - silent-base: every adapter answers as the base (#34186);
    - silent-base-runtime: adapters loaded at run time answer as the base (#55193);
    - swap: runtime requests for A's files decode with B's and back (#47724);
    - slot-leak: an unload forgets the name and keeps the slot (#54839)."""

    def __init__(self, fault: str = "") -> None:
        self.fault = fault

    def describe(self) -> dict[str, str]:
        return {"base_model": "fake", "fault": self.fault}

    @contextlib.contextmanager
    def serving(self, static: Mapping[str, Path], runtime_slots: int) -> Iterator[Endpoint]:
        state = _State(self.fault, dict(static), runtime_slots)
        server = ThreadingHTTPServer(("127.0.0.1", 0), state.handler())
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield Endpoint(f"http://127.0.0.1:{server.server_address[1]}", KEY)
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


class _State:
    def __init__(self, fault: str, static: dict[str, Path], slots: int) -> None:
        self.fault, self.static, self.slots = fault, static, slots
        self.runtime: dict[str, Path] = {}
        self.held: set[str] = set()  # names holding a slot
        self.lock = threading.Lock()

    def files(self, name: str) -> str | None:
        """Whose weights answer `name`, after the fault."""
        if name == BASE_NAME:
            return "base"
        if name in self.static:
            return "base" if self.fault == "silent-base" else self.static[name].name
        if name not in self.runtime:
            return None
        files = self.runtime[name].name
        if self.fault in ("silent-base", "silent-base-runtime"):
            return "base"
        return {"a": "b", "b": "a"}[files] if self.fault == "swap" else files

    def load(self, name: str, path: str) -> tuple[int, str]:
        if not self.slots:
            return 404, "Not Found"  # the runtime API is off
        if name in self.runtime:
            return 400, f"The lora adapter '{name}' has already been loaded."
        if self.fault == "slot-leak" and len(self.held) >= self.slots:
            return 500, "no free LoRA slot"
        self.runtime[name] = Path(path)
        self.held.add(name)
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, name: str) -> tuple[int, str]:
        if name not in self.runtime:
            return 404, f"The lora adapter '{name}' cannot be found."
        del self.runtime[name]
        if self.fault != "slot-leak":
            self.held.discard(name)
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def handler(self) -> type[BaseHTTPRequestHandler]:
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: object) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with state.lock:
                    names = [BASE_NAME, *state.static, *state.runtime]
                if self.path == "/version":
                    self.reply(200, {"version": VERSION})
                elif self.path == "/v1/models":
                    self.reply(200, {"data": [{"id": n} for n in names]})
                else:
                    self.reply(404, "Not Found")

            def do_POST(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    self.reply(401, "Unauthorized")
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with state.lock:
                    if self.path == "/v1/chat/completions":
                        files = state.files(body["model"])
                        prompt = body["messages"][-1]["content"]
                        chunk = {"choices": [{"delta": {"content": f"{files}:{prompt}"}}]}
                        self.reply(*((404, "model not found") if files is None else (
                            200, f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n")))
                    elif self.path == "/v1/load_lora_adapter":
                        self.reply(*state.load(body["lora_name"], body["lora_path"]))
                    elif self.path == "/v1/unload_lora_adapter":
                        self.reply(*state.unload(body["lora_name"]))
                    else:
                        self.reply(404, "Not Found")

        return Handler


def harness_on(fault: str, tmp_path: Path) -> IsolationReport:
    return run_isolation(FakeEngine(fault), Adapters(tmp_path / "a", tmp_path / "b"))


def outcome(report: IsolationReport) -> dict[str, bool]:
    return {check.name: check.passed for check in report.checks}


def test_a_correct_engine_passes_every_check_and_the_verdict_is_kept(tmp_path: Path) -> None:
    report = harness_on("", tmp_path)
    assert outcome(report) == {"adapters_applied": True, "no_cross_talk": True,
                               "matches_alone": True, "unload_frees_capacity": True}
    assert report.runtime_lora_ok, report.reason
    assert report.reason == f"vllm {VERSION}: all 4 checks passed"
    assert all(check.evidence for check in report.checks)
    assert report.references["a"][0] == f"a:{report.prompts[0]}"
    assert {a.phase for a in report.answers} >= {"wave 1", "wave 2"}
    assert {a.asked for a in report.answers if a.phase == "wave 2"} == \
        {BASE_NAME, "iso-b@1", "iso-a@2"}
    unloaded = next(c for c in report.calls if c.action == "ask-unloaded")
    assert unloaded.status == 404
    path = save_verdict(report, tmp_path / "cache")
    assert path == tmp_path / "cache" / "lora-isolation" / f"vllm-{VERSION}.json"
    assert load_verdict(VERSION, tmp_path / "cache") == report
    assert load_verdict("9.9.9", tmp_path / "cache") is None


@pytest.mark.parametrize("fault", ["silent-base", "silent-base-runtime"])
def test_an_adapter_that_answers_as_the_base_fails_check_a(fault: str, tmp_path: Path) -> None:
    report = harness_on(fault, tmp_path)
    assert not outcome(report)["adapters_applied"]
    assert not report.runtime_lora_ok
    assert "adapters_applied:" in report.reason
    failed = next(c for c in report.checks if c.name == "adapters_applied")
    assert any("answered as the base" in line or "0/4 prompts" in line
               for line in failed.evidence)


def test_adapters_that_swap_their_answers_fail_check_b(tmp_path: Path) -> None:
    report = harness_on("swap", tmp_path)
    assert outcome(report) == {"adapters_applied": True, "no_cross_talk": False,
                               "matches_alone": False, "unload_frees_capacity": False}
    assert not report.runtime_lora_ok
    crossed = next(c for c in report.checks if c.name == "no_cross_talk")
    assert any("iso-a@1 · prompt 0: answered as b instead of a" in line
               for line in crossed.evidence)
    assert "no_cross_talk: 16 answers came from another model (iso-a@1 as b ×4, " \
        "iso-b@1 as a ×8, iso-a@2 as b ×4)" in report.reason


def test_an_unload_that_keeps_the_slot_fails_check_c(tmp_path: Path) -> None:
    report = harness_on("slot-leak", tmp_path)
    assert not outcome(report)["unload_frees_capacity"]
    assert outcome(report)["no_cross_talk"] and outcome(report)["adapters_applied"]
    assert "reloaded iso-a@2: HTTP 500 'no free LoRA slot'" in report.reason
    assert not report.runtime_lora_ok
