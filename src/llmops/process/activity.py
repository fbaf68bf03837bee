"""What a long piece of work tells the person watching: an activity (a spinner), a line, a
warning, a note, a progress bar, and whether child processes' output is streamed to the
terminal.

The engine announces; the shell decides how it looks. Without a shell's handler (a Prefect
worker running a flow, a test, a script), the defaults are today's plain behaviour: notes
and activities are printed (lines to standard output, warnings to standard error), child
output is streamed. `llmops` installs a handler
(`llmops.cli.console`) that shows rich spinners and a progress bar and sends the rest to its
log file, unless `-v/--verbose`.

Why a module-level hook rather than a parameter: the announcing code sits in the low layers
(models, serve, train, evaluation) several calls below any shell, behind functions that
Prefect tasks and other engineers' modules call (`stages/training.py` calls `train`, the
registry and targets call the model conversions); threading a reporter through each
signature would change a dozen interfaces for what is presentation only. The hook is
process-wide and set once, by the process's shell.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Progress:
    """One update of a measured piece of work (a training's steps)."""

    completed: int
    total: int | None = None
    eta_s: float | None = None
    detail: str = ""  # e.g. "loss 1.234 · 5,120 tok/s"


class Handler(Protocol):
    def activity(self, text: str) -> contextlib.AbstractContextManager[None]: ...

    def tell(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def note(self, text: str) -> None: ...

    def progress(self, label: str) -> contextlib.AbstractContextManager[
        Callable[[Progress], None]]: ...

    def streaming(self) -> bool: ...


class Plain:
    """Today's behaviour: print what is announced, stream child output, no bars."""

    @contextlib.contextmanager
    def activity(self, text: str) -> Iterator[None]:
        print(text, flush=True)
        yield

    def tell(self, text: str) -> None:
        print(text, flush=True)

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        print(text, flush=True)

    @contextlib.contextmanager
    def progress(self, label: str) -> Iterator[Callable[[Progress], None]]:
        yield lambda update: None

    def streaming(self) -> bool:
        return True


_handler: Handler = Plain()


def install(handler: Handler | None) -> Handler:
    """Make `handler` this process's (None: the plain default); returns the previous one."""
    global _handler
    previous, _handler = _handler, handler or Plain()
    return previous


def activity(text: str) -> contextlib.AbstractContextManager[None]:
    """`with activity("merging the adapter"):` a spinner (or a printed line) while it runs."""
    return _handler.activity(text)


def tell(text: str) -> None:
    """A line the person always sees (the run being trained, a rollback, a rebuild)."""
    _handler.tell(text)


def warn(text: str) -> None:
    """Something is wrong but the work goes on (a torn history line, skipped)."""
    _handler.warn(text)


def note(text: str) -> None:
    """Something worth knowing but not worth a terminal line by default (the command run)."""
    _handler.note(text)


def progress(label: str) -> contextlib.AbstractContextManager[Callable[[Progress], None]]:
    """`with progress("training") as update: update(Progress(5, 60, ...))`."""
    return _handler.progress(label)


def streaming() -> bool:
    """Whether a child process's output should be echoed to the terminal too."""
    return _handler.streaming()
