"""What happened to a model in an environment: one append-only JSONL file per (model, env).

Every target records its outcomes here (deploy, rollback, stop; serving, failed, restored,
stopped) with fields of its own (a local server's arguments, a cluster's Deployment and
revision); `llmops history`, lineage and rollback read it back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.config.paths import state_subdir
from llmops.process.activity import warn
from llmops.redact import redact, redact_mapping


@dataclass(frozen=True)
class History:
    model: str
    env: str

    @property
    def path(self) -> Path:
        return state_subdir("deployments") / f"{self.model}-{self.env}.history.jsonl"

    def record(self, version: str, action: str, result: str, reason: str = "",
               fields: Mapping[str, object] | None = None) -> None:
        """Append one outcome; `fields` are the target's own (arguments, revision...).
        Redacted as it is written: the file is a CI artifact, and a failure's reason
        quotes the errors it met."""
        event: dict[str, object] = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action, "result": result,
            "model": self.model, "env": self.env, "version": version,
            # redacted before the cut: a secret cut in two no longer matches
            "reason": redact(reason)[:2000]}
        event.update(redact_mapping(fields or {}))
        path = self.path
        line = json.dumps(event) + "\n"
        with open(path, "ab") as fh:
            # A line torn by a crash has no newline: start on a line of our own.
            if fh.tell() and not _ends_with_newline(path):
                line = "\n" + line
            fh.write(line.encode())

    def read(self) -> list[dict[str, Any]]:
        """Every event; a line that is not a JSON object (torn by a crash or edited by hand)
        is skipped and reported, not fatal to rollback or history."""
        path = self.path
        if not path.is_file():
            return []
        events: list[dict[str, Any]] = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict):
                events.append(event)
            else:
                warn(f"{path}:{number} is not a history event (torn or edited): skipped")
        return events

    def previous_good(self, current: str | None, need_args: bool) -> dict[str, Any] | None:
        return previous_good(self.read(), current, need_args)

    def digest_served(self, version: str) -> str:
        """The digest recorded when `version` last served ('' when none was)."""
        for event in reversed(self.read()):
            if event.get("version") == version and event.get("digest"):
                return str(event["digest"])
        return ""


def previous_good(events: list[dict[str, Any]], current: str | None,
                  need_args: bool = True) -> dict[str, Any] | None:
    """The latest event that served (and was verified) a version other than `current`;
    with `need_args`, one that recorded the arguments its server ran with."""
    for event in reversed(events):
        if event.get("result") == "serving" and event.get("version") != current \
                and (event.get("args") or not need_args):
            return event
    return None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"
