"""The LoRA isolation harness: asks real servers and records what they answer; judged by
`llmops.serve.isolation`.

Three servers, one after the other: the base with A as a static LoRA module (A's answers
alone), the same with B, and one with room for two runtime adapters and none loaded. The
last answers the base alone first, then loads A and B through vLLM's runtime API and takes
base, A and B requests interleaved and at once, so that they share batches; while that wave
decodes, A is unloaded and its files loaded again under a new name (`<name>@2`: a version's
name never changes meaning), and a second wave asks base, B and the new name.

    .venv/bin/python benchmarks/lora_isolation.py   # the tiny model; prints the report
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from llmops.config import ServeSettings
from llmops.errors import StageFailed
from llmops.serve import process
from llmops.serve.isolation import (
    ADAPTER_A,
    ADAPTER_B,
    BASE,
    RELOADED,
    WAVE_AFTER,
    WAVE_BEFORE,
    Answer,
    ApiCall,
    IsolationReport,
    judge,
    now,
    save_verdict,
    verdict,
)
from llmops.serve.vllm import lora_args

BASE_NAME = "iso-base"
STATIC = {ADAPTER_A: "iso-a", ADAPTER_B: "iso-b"}
RUNTIME_A, RUNTIME_B, RUNTIME_A_AGAIN = "iso-a@1", "iso-b@1", "iso-a@2"
BEYOND = "iso-b@probe"  # a third name while two are loaded: recorded, not judged
RUNTIME_SLOTS = 2
RUNTIME_VARIABLE = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
PROMPTS = ("How do I reset my password?", "Can I export my invoices as CSV?",
           "What does the Pro plan include?", "How do I delete my account?")
MAX_TOKENS = 16
REQUEST_TIMEOUT_S = 300.0  # a loaded CPU with LoRA layers decodes slowly


@dataclass(frozen=True)
class Endpoint:
    url: str  # http://host:port, without /v1
    api_key: str


class Servers(Protocol):
    """Starts servers of one base model (served as BASE_NAME) for the harness."""

    def serving(self, static: Mapping[str, Path],
                runtime_slots: int) -> contextlib.AbstractContextManager[Endpoint]:
        """A server with the `static` adapters (name -> folder) and, when `runtime_slots`
        > 0, the runtime adapter API with that many adapters per batch; stopped on exit."""
        ...

    def describe(self) -> dict[str, str]:
        """What the report says of the servers: base model, dtype, limits."""
        ...


@dataclass(frozen=True)
class Adapters:
    a: Path
    b: Path


@dataclass(frozen=True)
class LocalVllm:
    """vLLM servers as `llmops deploy` starts them here: the serving environment, the key
    guard, the CPU engine's settings."""

    base_model: str
    settings: ServeSettings
    max_rank: int

    def describe(self) -> dict[str, str]:
        return {"base_model": self.base_model, "dtype": self.settings.dtype,
                "max-lora-rank": str(self.max_rank),
                "enforce-eager": str(self.settings.enforce_eager)}

    @contextlib.contextmanager
    def serving(self, static: Mapping[str, Path], runtime_slots: int) -> Iterator[Endpoint]:
        def args_for(port: int) -> list[str]:
            args = process.vllm_args(self.base_model, BASE_NAME, dict(static), port,
                                     self.settings)
            return args + (lora_args(runtime_slots, self.max_rank) if runtime_slots else [])

        env = {**os.environ, RUNTIME_VARIABLE: "True"} if runtime_slots else os.environ
        key = process.local_api_key()
        server = process.launch("lora-isolation", args_for, self.settings, key, env)
        try:
            server.wait_healthy(self.settings.startup_timeout_s)
            yield Endpoint(f"http://127.0.0.1:{server.port}", key)
        finally:
            server.kill()


def chat(client: httpx.Client, ep: Endpoint, name: str, prompt: str, max_tokens: int,
         decoding: threading.Event | None = None) -> tuple[int, str]:
    """(HTTP status, the greedy answer or the error body). Streamed, so that `decoding` is
    set as soon as the server sends the first chunk: the request is then in a batch."""
    body = {"model": name, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.0, "stream": True}
    parts = []
    try:
        with client.stream("POST", f"{ep.url}/v1/chat/completions", headers=_auth(ep),
                           json=body) as response:
            if response.status_code != 200:
                return response.status_code, response.read().decode(errors="replace")
            for line in response.iter_lines():
                data = line.removeprefix("data: ").strip()
                if not line.startswith("data: ") or data == "[DONE]":
                    continue
                if decoding is not None:
                    decoding.set()
                chunk = json.loads(data)
                if "error" in chunk:  # an engine error after the stream began
                    return 500, json.dumps(chunk["error"])
                parts += [c.get("delta", {}).get("content") or "" for c in chunk["choices"]]
    except httpx.HTTPError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        if decoding is not None:
            decoding.set()  # answered or failed: nothing more to wait for
    return 200, "".join(parts)


def _auth(ep: Endpoint) -> dict[str, str]:
    return {"Authorization": f"Bearer {ep.api_key}"}


def alone(client: httpx.Client, ep: Endpoint, name: str, prompts: Sequence[str],
          max_tokens: int) -> list[str]:
    """`name`'s answers, one request at a time (no batch shared with another model)."""
    answers = []
    for prompt in prompts:
        status, text = chat(client, ep, name, prompt, max_tokens)
        if status != 200:
            raise StageFailed(f"{name} served alone did not answer {prompt!r}: HTTP {status} "
                              f"{text[:200]}")
        answers.append(text)
    return answers


def run_isolation(servers: Servers, adapters: Adapters, prompts: Sequence[str] = PROMPTS,
                  max_tokens: int = MAX_TOKENS) -> IsolationReport:
    """Ask base, A and B alone and then at run time on `servers`; the judged report."""
    refs: dict[str, list[str]] = {}
    answers: list[Answer] = []
    with httpx.Client(timeout=REQUEST_TIMEOUT_S,
                      limits=httpx.Limits(max_connections=64)) as client:
        for role, path in ((ADAPTER_A, adapters.a), (ADAPTER_B, adapters.b)):
            with servers.serving({STATIC[role]: path}, 0) as ep:
                refs[role] = alone(client, ep, STATIC[role], prompts, max_tokens)
                # The base beside a loaded adapter, one request at a time: judged too.
                answers += [Answer(phase=f"base beside static {STATIC[role]}", asked=BASE_NAME,
                                   role=BASE, prompt=p, status=200, text=text)
                            for p, text in enumerate(alone(client, ep, BASE_NAME, prompts,
                                                           max_tokens))]
        with servers.serving({}, RUNTIME_SLOTS) as ep:
            version = client.get(f"{ep.url}/version", headers=_auth(ep)).json()["version"]
            refs[BASE] = alone(client, ep, BASE_NAME, prompts, max_tokens)
            runtime, calls = runtime_scenario(client, ep, adapters, prompts, max_tokens)
    answers += runtime
    checks = judge(refs, answers, calls, RUNTIME_SLOTS)
    engine = f"vllm {version}"
    ok, reason = verdict(checks, engine)
    return IsolationReport(
        engine=engine, vllm_version=str(version),
        server={**servers.describe(), "max-loras": str(RUNTIME_SLOTS)}, prompts=list(prompts),
        max_tokens=max_tokens, references=refs, answers=answers, calls=calls, checks=checks,
        runtime_lora_ok=ok, reason=reason, created=now())


def runtime_scenario(client: httpx.Client, ep: Endpoint, adapters: Adapters,
                     prompts: Sequence[str], max_tokens: int
                     ) -> tuple[list[Answer], list[ApiCall]]:
    """Load A and B, send a wave of base/A/B at once; while it decodes unload A and load
    its files under a new name; send a second wave; then probe the unloaded name."""
    started = time.monotonic()

    def call(action: str, path: str, name: str, body: dict[str, str]) -> ApiCall:
        try:
            response = client.post(f"{ep.url}{path}", headers=_auth(ep), json=body)
            status, text = response.status_code, response.text
        except httpx.HTTPError as exc:
            status, text = 0, f"{type(exc).__name__}: {exc}"
        return ApiCall(action=action, name=name, status=status, body=text,
                       ended_s=round(time.monotonic() - started, 3))

    def load(action: str, name: str, path: Path) -> ApiCall:
        return call(action, "/v1/load_lora_adapter", name,
                    {"lora_name": name, "lora_path": str(path)})

    def ask(phase: str, name: str, role: str, p: int,
            decoding: threading.Event | None = None) -> Answer:
        status, text = chat(client, ep, name, prompts[p], max_tokens, decoding)
        return Answer(phase=phase, asked=name, role=role, prompt=p, status=status, text=text,
                      ended_s=round(time.monotonic() - started, 3))

    def wave(pool: ThreadPoolExecutor, phase: str, models: Sequence[tuple[str, str]]
             ) -> list[tuple[Future[Answer], threading.Event]]:
        sent = []
        for p in range(len(prompts)):
            for name, role in models:  # interleaved: base, A, B, base, ...
                decoding = threading.Event()
                sent.append((pool.submit(ask, phase, name, role, p, decoding), decoding))
        return sent

    calls = [load("load", RUNTIME_A, adapters.a), load("load", RUNTIME_B, adapters.b)]
    with ThreadPoolExecutor(max_workers=6 * len(prompts)) as pool:
        first = wave(pool, WAVE_BEFORE, [(BASE_NAME, BASE), (RUNTIME_A, ADAPTER_A),
                                         (RUNTIME_B, ADAPTER_B)])
        # Every request of the first wave is in the engine before A's name goes: a request
        # that arrived after its unload would be refused, rightly, and test nothing.
        for _, decoding in first:
            decoding.wait(REQUEST_TIMEOUT_S)
        calls.append(call("unload", "/v1/unload_lora_adapter", RUNTIME_A,
                          {"lora_name": RUNTIME_A}))
        calls.append(load(RELOADED, RUNTIME_A_AGAIN, adapters.a))
        second = wave(pool, WAVE_AFTER, [(BASE_NAME, BASE), (RUNTIME_B, ADAPTER_B),
                                         (RUNTIME_A_AGAIN, ADAPTER_A)])
        answers = [future.result() for future, _ in first + second]
    gone = ask("after unload", RUNTIME_A, ADAPTER_A, 0)
    calls.append(ApiCall(action="ask-unloaded", name=RUNTIME_A, status=gone.status,
                         body=gone.text, ended_s=gone.ended_s))
    calls.append(load("load-beyond-max-loras", BEYOND, adapters.b))
    listed = client.get(f"{ep.url}/v1/models", headers=_auth(ep))
    names = [m["id"] for m in listed.json().get("data", [])] if listed.is_success else []
    calls.append(ApiCall(action="models", name=",".join(names), status=listed.status_code,
                         body="", ended_s=round(time.monotonic() - started, 3)))
    return answers, calls


def check_engine(settings: ServeSettings, model: str = "tiny",
                 cache_dir: Path | None = None) -> tuple[IsolationReport, Path]:
    """Run the harness on the serving environment's vLLM with `model`'s base and two random
    adapters shaped by its training config; save the verdict (machine cache unless
    `cache_dir`); (the report, where it was saved)."""
    from llmops.config import load_model
    from llmops.models.base import ensure_base_model
    from llmops.models.probe_lora import random_lora

    spec = load_model(model)
    base = ensure_base_model(spec.base_model)
    with tempfile.TemporaryDirectory(prefix="lora-isolation-") as folder:
        adapters = Adapters(*(random_lora(Path(base), Path(folder) / role, seed, spec.axolotl)
                              for role, seed in ((ADAPTER_A, 1), (ADAPTER_B, 2))))
        rank = max(process.lora_rank(adapters.a), process.lora_rank(adapters.b))
        report = run_isolation(LocalVllm(base, settings, rank), adapters)
    return report, save_verdict(report, cache_dir)
