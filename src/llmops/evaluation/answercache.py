"""Answers already given: evaluation asks a server only what it has not answered before.

At temperature 0 an answer is a function of what served it and what was asked: the served
artefact (the base model's files; the adapter's files, `derived.source_digest`; and how it
is served: a LoRA module, merged or int8 weights), the engine (the vLLM release the serve
lock pins), the serving dtype and quantization, the request's messages and its generation
settings (max_tokens, temperature, stop, ...). `request_key` hashes exactly those; the
served model's name is left out (it is only the name the server gives a role).
`AnswerCache` keeps one JSON file per key under `.llmops/cache/answers/` (a folder CI can
cache), written atomically; a file that does not read back as an entry of its key is a
miss, never an error. The entries hold the answers as the model gave them (scoring them
needs the raw text): the cache is as private as the weights in the same state folder.

`CachedChat` answers from the cache and asks the server only what it lacks, connecting on
the first miss, so an evaluation server that every role's requests were cached for is
never started (`llmops.evaluation.evalserve`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

# Part of every key: a change of what an entry holds (or of how keys are made) starts a
# new cache instead of misreading the old one.
FORMAT = 1


def artefact_id(kind: str, base_digest: str, adapter_digest: str | None = None) -> str:
    """What serves a role, by content: `kind` (base, adapter: a LoRA module on the base,
    merged, int8), the base model's files and the adapter's files (`source_digest`)."""
    return f"{kind} base={base_digest}" + (f" adapter={adapter_digest}" if adapter_digest
                                           else "")


@dataclass(frozen=True)
class Served:
    """What answers one role's requests: its artefact (`artefact_id`), the engine release
    and the serving settings that change the numbers."""

    artefact: str
    engine: str
    dtype: str
    quantization: str


def _digest(body: object) -> str:
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def request_key(served: Served, request: Mapping[str, Any]) -> str:
    """The cache key of `request` (a chat request's body: messages and generation settings,
    or any other JSON description of what is asked) sent to what `served` names. The
    request's `model`, the name the server gives the role, is not part of it."""
    asked = {k: v for k, v in request.items() if k != "model"}
    return _digest({"format": FORMAT, "served": asdict(served), "request": asked})


class AnswerCache:
    """Entries by key in `folder` (`<key[:2]>/<key>.json`), each role's requests keyed with
    its `Served` (`served`: role → what serves it)."""

    def __init__(self, folder: Path, served: Mapping[str, Served]) -> None:
        self.folder, self.served = folder, dict(served)

    def key(self, role: str, request: Mapping[str, Any]) -> str:
        return request_key(self.served[role], request)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, role: str, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """The value stored for `request` to `role`, or None: never stored, or an entry that
        does not read back (torn, edited, another key's): a miss."""
        key = self.key(role, request)
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, unreadable, not JSON (or not UTF-8)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        value = entry.get("value")
        return value if isinstance(value, dict) else None

    def put(self, role: str, request: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        """Store `value` (JSON) for `request` to `role`: written to a temporary file beside
        it and renamed, so a reader (or an interrupted run) never sees half an entry. A
        value that is not JSON, or a disk that refuses the write, leaves it uncached."""
        key = self.key(role, request)
        try:
            body = json.dumps({"key": key, "stored_at": time.time(), "value": value},
                              ensure_ascii=False)
        except (TypeError, ValueError):
            return
        path = self.path(key)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}-", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError:
            pass
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


@dataclass(frozen=True)
class Reply:
    """One chat answer: its text, why it stopped, how long it took when it was asked, and
    whether it came from the cache."""

    text: str
    finish_reason: str
    latency_s: float
    cached: bool = False


class Chat(Protocol):
    """Ask `role` a chat request (`messages`, and generation settings as keywords)."""

    def __call__(self, role: str, messages: list[dict[str, str]], **params: Any) -> Reply: ...


class DirectChat:
    """Every request to the server at `base_url` (an OpenAI-compatible …/v1)."""

    def __init__(self, base_url: str, api_key: str,
                 names: Mapping[str, str] | None = None) -> None:
        from openai import OpenAI

        self.names = dict(names or {})  # role → the name the server serves it under

        # Any: messages are plain dicts here, which the client's typed params do not name
        self.client: Any = OpenAI(base_url=base_url, api_key=api_key, timeout=600,
                                  max_retries=0)

    def __call__(self, role: str, messages: list[dict[str, str]], **params: Any) -> Reply:
        started = time.perf_counter()
        reply = self.client.chat.completions.create(model=self.names.get(role, role),
                                                     messages=messages, **params)
        latency = time.perf_counter() - started
        choice = reply.choices[0]
        return Reply(choice.message.content or "", choice.finish_reason or "", latency)


def _reply(value: Mapping[str, Any] | None) -> Reply | None:
    if value is None:
        return None
    text, finish, latency = value.get("text"), value.get("finish_reason"), \
        value.get("latency_s")
    if not isinstance(text, str) or not isinstance(finish, str) or \
            not isinstance(latency, int | float) or isinstance(latency, bool):
        return None
    return Reply(text, finish, float(latency), cached=True)


class CachedChat:
    """Answers from `cache` (None: none), and asks what it lacks through the chat that
    `connect` returns, called once, on the first miss (from any thread: the others wait).
    What the server answers is stored, with the latency it took."""

    def __init__(self, cache: AnswerCache | None, connect: Callable[[], Chat]) -> None:
        self.cache, self._connect = cache, connect
        self._chat: Chat | None = None
        self._lock = threading.Lock()

    def __call__(self, role: str, messages: list[dict[str, str]], **params: Any) -> Reply:
        request = {"messages": messages, **params}
        if self.cache is not None and \
                (hit := _reply(self.cache.get(role, request))) is not None:
            return hit
        reply = self._server()(role, messages, **params)
        if self.cache is not None:
            self.cache.put(role, request, {"text": reply.text,
                                           "finish_reason": reply.finish_reason,
                                           "latency_s": reply.latency_s})
        return reply

    def _server(self) -> Chat:
        with self._lock:
            if self._chat is None:
                self._chat = self._connect()
            return self._chat
