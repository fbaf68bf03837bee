"""How the engine runs each step: directly (the CLI) or as a Prefect task (flows/).

The engine composes the stages once and calls each through a `Steps` runner; the runner adds
the orchestration policy (retries, caching, timeouts) and measures the time spent inside
each stage's own code, which the release summary sets against the total.

A runner tells an optional `StepReporter` when each step starts, ends (with its result) and
fails: the CLI prints one line per step from it, so the engine holds no terminal code. A
runner built without one (the flows build theirs) uses the reporter installed for the
process (`reporting`), none by default.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class StepReporter(Protocol):
    """Hears each step of a runner: its name, its time, its result or its failure."""

    def on_start(self, name: str) -> None: ...

    def on_end(self, name: str, seconds: float, result: Any) -> None: ...

    def on_fail(self, name: str, seconds: float, exc: BaseException) -> None: ...


_installed: StepReporter | None = None


@contextlib.contextmanager
def reporting(reporter: StepReporter | None) -> Iterator[None]:
    """Within this block, a runner built without a reporter reports to `reporter` (the
    release flow builds its own runner inside the flow, out of the CLI's reach)."""
    global _installed
    previous, _installed = _installed, reporter
    try:
        yield
    finally:
        _installed = previous


@dataclass
class Steps:
    """Runs the named steps in this process, timing each (`seconds`: the step as called,
    `work_seconds`: inside the stage function)."""

    seconds: dict[str, float] = field(default_factory=dict)
    work_seconds: dict[str, float] = field(default_factory=dict)
    reporter: StepReporter | None = None  # None: the one installed by `reporting`, if any

    def __call__(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        reporter = self.reporter or _installed
        started = time.perf_counter()
        if reporter is not None:
            reporter.on_start(name)
        try:
            result = self.call(name, self.measured(name, fn), *args, **kwargs)
        except BaseException as exc:
            if reporter is not None:
                reporter.on_fail(name, time.perf_counter() - started, exc)
            raise
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        if reporter is not None:
            reporter.on_end(name, time.perf_counter() - started, result)
        return result

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
