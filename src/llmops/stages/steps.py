"""How the engine runs each step: directly (the CLI) or as a Prefect task (flows/).

The engine composes the stages once and calls each through a `Steps` runner; the runner adds
the orchestration policy (retries, caching, timeouts) and measures the time spent inside
each stage's own code, which the release summary sets against the total.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Steps:
    """Runs the named steps in this process, timing each (`seconds`: the step as called,
    `work_seconds`: inside the stage function)."""

    seconds: dict[str, float] = field(default_factory=dict)
    work_seconds: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        started = time.perf_counter()
        try:
            return self.call(name, self.measured(name, fn), *args, **kwargs)
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def call(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run the step; an orchestrator overrides this to run it as one of its tasks."""
        return fn(*args, **kwargs)

    def measured(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)  # keeps fn's signature: Prefect binds parameters by it
        def inner(*args: Any, **kwargs: Any) -> T:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.work_seconds[name] = (self.work_seconds.get(name, 0.0)
                                           + time.perf_counter() - started)
        return inner
