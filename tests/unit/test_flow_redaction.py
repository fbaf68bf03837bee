"""A Prefect flow run by a worker redacts as the CLI does: what it logs, prints and fails
with reaches Prefect's API with [REDACTED] in place of a secret.

Without a server: Prefect's engine calls `flow.fn` (and a task's `fn`) and builds the
failed state from what it raises with `exception_to_failed_state`; its API log handler
builds the payload it ships with `prepare`. Those are called here as the engine calls them.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.flows import Flow
from prefect.logging.handlers import APILogHandler
from prefect.states import exception_to_failed_state

from flows.redaction import flow
from llmops import redact as r
from llmops.errors import StageFailed

REPO = Path(__file__).resolve().parents[2]
TOKEN = "plain-looking-token-0042"  # as GITLAB_TOKEN gives it: no credential shape
SHAPED = "glpat-aBcDeFgHiJkLmNoPqRsT"  # as a file or a tool's output gives it
LOGGER = "llmops.test-flow-redaction"


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def worker_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[Kept]:
    """A process as a Prefect worker starts a flow run: a secret in its environment, no CLI
    (no filter installed); what the flow logs is kept (under a logger of its own: Prefect's
    flow-run logger would try to reach an API)."""
    r.forget_all()
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored after the flow wraps them
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    kept = Kept()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(kept)
    monkeypatch.setattr(logger, "propagate", False)
    previous = logging.getLogRecordFactory()
    try:
        yield kept
    finally:
        logging.setLogRecordFactory(previous)
        logger.removeHandler(kept)
        r.forget_all()


def shipped(record: logging.LogRecord) -> str:
    """The message Prefect's API log handler would send for this record."""
    record.flow_run_id = str(uuid.uuid4())
    return str(APILogHandler().prepare(record)["message"])


def test_a_flow_s_logs_and_failed_state_carry_no_secret(worker_process: Kept) -> None:
    @flow(name="leaky")
    def leaky(target: str) -> None:
        token = os.environ["GITLAB_TOKEN"]
        logging.getLogger(LOGGER).warning("pushing to %s with %s", target, token)
        raise StageFailed(f"push to https://ci:{token}@gitlab.example.com failed ({SHAPED})")

    with pytest.raises(StageFailed) as raised:
        leaky.fn("registry")  # what the engine runs
    state = asyncio.run(exception_to_failed_state(
        raised.value, message="Flow run encountered an exception:"))
    assert state.message == "Flow run encountered an exception: StageFailed: push to " \
        "https://[REDACTED]@gitlab.example.com failed ([REDACTED])"

    logging.getLogger(LOGGER).exception(
        "Encountered exception during execution: %r", raised.value, exc_info=raised.value)
    messages = [shipped(rec) for rec in worker_process.records]
    assert messages[0] == "pushing to registry with [REDACTED]"
    assert all(TOKEN not in m and SHAPED not in m for m in messages)
    assert "StageFailed: push to https://[REDACTED]@gitlab.example.com" in messages[1]


def test_a_task_s_failure_is_redacted_before_prefect_sees_it(
        worker_process: Kept, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's task fails with the secret in a message its library computed: the task's
    failed state (sent to the API as an event) holds the redacted text."""
    import pydantic

    import flows.tasks

    class Answer(pydantic.BaseModel):
        port: int

    def step() -> None:
        Answer(port=os.environ["GITLAB_TOKEN"])  # type: ignore[arg-type]

    monkeypatch.setattr(flows.tasks, "task", lambda fn, **_: fn)  # the engine runs `fn`
    with pytest.raises(r.RedactedError) as raised:
        flows.tasks.PrefectSteps()("register", step)
    state = asyncio.run(exception_to_failed_state(raised.value))
    assert TOKEN not in str(state.message) and "input_value='[REDACTED]'" in str(state.message)


def flow_objects() -> dict[str, Flow[Any, Any]]:
    """Every flow defined in flows/, by module and name."""
    found = {}
    for path in sorted((REPO / "flows").glob("*.py")):
        module = importlib.import_module(f"flows.{path.stem}")
        found.update({f"{path.stem}:{name}": value for name, value in vars(module).items()
                      if isinstance(value, Flow) and value.fn.__module__ == module.__name__})
    return found


def test_every_flow_redacts_and_keeps_its_own_version() -> None:
    """No gap: a flow declared with Prefect's own decorator would run unredacted."""
    from prefect.utilities.hashing import file_hash

    flows = flow_objects()
    assert len(flows) >= 10
    assert [name for name, f in flows.items() if not getattr(f.fn, "redacts", False)] == []
    release = flows["release:release"]
    assert release.version == file_hash(str(REPO / "flows" / "release.py"))
    assert list(release.parameters.properties) == ["model", "env", "version", "config_checked"]
