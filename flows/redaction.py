"""Prefect's `flow` decorator for every flow here: a worker runs a flow without the CLI, so
the flow itself installs what the CLI does (`llmops.redact.redact_process`), and what it
raises is redacted before Prefect makes its failed state (a message sent to the API)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Flow
from prefect import flow as prefect_flow
from prefect.utilities.hashing import file_hash

from llmops.redact import redacting

P = ParamSpec("P")
R = TypeVar("R")


def flow(**options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]:
    """`prefect.flow(**options)` over `fn` run through `redacting`, with this process's
    environment as the secrets to remember."""

    def decorate(fn: Callable[P, R]) -> Flow[P, R]:
        # Prefect versions a flow by the hash of its function's file; the wrapper's file
        # would give every flow the same version.
        source = inspect.getsourcefile(fn)
        versioned = {"version": file_hash(source)} if source else {}
        made: Flow[P, R] = prefect_flow(redacting(fn, os.environ), **{**versioned, **options})
        return made

    return decorate
