"""The CLI's standard-error console and how the terminal stays quiet (a module of its own:
importing it loads no engine).

By default (`-v/--verbose` off) the engine's announcements become rich spinners and a
training progress bar (`Terminal`, the handler of `llmops.process.activity`), and Python
warnings and every third-party logger go to one log file per command under
`.llmops/logs/` instead of the terminal (`quiet_logging`). With `-v`, output is as it always
was: announcements printed, child processes streamed, libraries logging to the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.errors import LiveError
from rich.markup import escape

from llmops.process.activity import Progress

console = Console(stderr=True, soft_wrap=True)

_OURS = "llmops"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Terminal:
    """`llmops.process.activity`'s handler for the CLI: one spinner naming the innermost
    activity, a progress bar for training, lines on standard output and warnings on the
    console (both also in the command's log), notes to the command's log (printed with -v)."""

    def __init__(self, verbose: bool, out: Console | None = None) -> None:
        self.verbose = verbose
        self.out = out or console
        self._texts: list[str] = []
        self._status: Any = None
        self._paused = False

    def _show(self) -> None:
        if self._paused or not self.out.is_terminal:
            return
        if not self._texts:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        from rich.live import Live
        from rich.spinner import Spinner

        text = escape(self._texts[-1]) + "…"
        if self._status is None:
            # Standard output goes through the live display only when it shares the
            # terminal; piped (`llmops release | tee`), it stays standard output.
            self._status = Live(Spinner("dots", text), console=self.out, transient=True,
                                refresh_per_second=12.5, redirect_stdout=_stdout_is_tty())
            try:
                self._status.start()
            except LiveError:  # another live display holds the terminal
                self._status = None
        else:
            self._status.update(Spinner("dots", text))

    @contextlib.contextmanager
    def activity(self, text: str) -> Iterator[None]:
        if self.verbose:
            self.out.print(escape(text), highlight=False)
            yield
            return
        logging.getLogger(_OURS).info(text)
        if not self.out.is_terminal:  # a CI log: a line instead of a spinner
            self.out.print(f"  {escape(text)}", highlight=False, style="dim")
        self._texts.append(text)
        self._show()
        try:
            yield
        finally:
            self._texts.remove(text)
            self._show()

    def tell(self, text: str) -> None:
        # Standard output: through the live display where it shares the terminal (it
        # redirects standard output), unchanged where it is piped. Written, not printed:
        # inside a Prefect flow (log_prints) `print` becomes a log record below the level
        # the terminal shows.
        if not self.verbose:  # with -v nothing goes to the log file, as for notes
            logging.getLogger(_OURS).info(text)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def warn(self, text: str) -> None:
        if not self.verbose:
            logging.getLogger(_OURS).warning(text)
        self.out.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)

    def note(self, text: str) -> None:
        if self.verbose:
            self.out.print(escape(text), highlight=False)
        else:
            logging.getLogger(_OURS).info(text)

    @contextlib.contextmanager
    def progress(self, label: str) -> Iterator[Callable[[Progress], None]]:
        if self.verbose:
            yield lambda update: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
        )
        from rich.progress import (
            Progress as Bar,
        )

        if self._status is not None:  # one live display at a time: the bar replaces it
            self._status.stop()
            self._status = None
        self._paused = True
        bar = Bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                  TextColumn("{task.fields[eta]}"), console=self.out, transient=True,
                  redirect_stdout=_stdout_is_tty())
        task = bar.add_task(label, total=None, detail="", eta="")

        def update(p: Progress) -> None:
            eta = f"ETA {format_seconds(p.eta_s)}" if p.eta_s is not None else ""
            bar.update(task, completed=p.completed, total=p.total, detail=p.detail, eta=eta)

        try:
            bar.start()
            started = True
        except LiveError:  # another live display holds the terminal: no bar
            started = False
        try:
            yield update
        finally:
            if started:
                bar.stop()
            self._paused = False
            self._show()

    def streaming(self) -> bool:
        return self.verbose


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def command_log(command: str, folder: Path | None = None) -> Path:
    """`.llmops/logs/<command>-<UTC timestamp>.log`: one per command run."""
    if folder is None:
        from llmops.config.paths import state_subdir

        folder = state_subdir("logs")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return folder / f"{command}-{stamp}-{os.getpid()}.log"


def _to_terminal(handler: logging.Handler) -> bool:
    if isinstance(handler, logging.FileHandler):
        return False
    if isinstance(handler, logging.StreamHandler):
        return handler.stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__) \
            or getattr(handler.stream, "isatty", lambda: False)() \
            or type(handler.stream).__name__ in ("Redacting", "RedactingStream")
    return hasattr(handler, "console")  # rich's RichHandler, Prefect's console handler


class _RedactingFormatter(logging.Formatter):
    """The whole formatted record redacted, tracebacks included (the record factory of
    `llmops.redact` cleans the message only; the terminal's stream redacted the rest)."""

    def format(self, record: logging.LogRecord) -> str:
        from llmops.redact import redact

        return redact(super().format(record))


class _OnceFileHandler(logging.FileHandler):
    """Writes each record once, however many handlers it reaches."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "_llmops_logged", False):
            return
        record._llmops_logged = True
        super().emit(record)


class QuietLogging:
    """Python warnings and the third-party loggers into one file, not the terminal.

    Libraries add their own terminal handlers while they are imported, at any time during a
    command (torch, transformers, Prefect, MLflow), and some log from inside the import. So
    besides moving the handlers present (`reroute`, again at each step's start), this
    process's `logging.StreamHandler.emit` sends a record that is not llmops' own, bound for
    the terminal, to the file instead (`install`; `uninstall` undoes it). Only the CLI
    installs it, for its own process; the children's output goes to their own logs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handler = _OnceFileHandler(path, encoding="utf-8", delay=True)
        self.handler.setFormatter(_RedactingFormatter(_FORMAT))
        self.handler.setLevel(logging.DEBUG)
        self._emit: Any = None

    def install(self) -> None:
        logging.captureWarnings(True)
        root = logging.getLogger()
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        root.addHandler(self.handler)
        for chatty in ("httpx", "httpcore"):  # a line per request: health polls, load tests
            if logging.getLogger(chatty).level == logging.NOTSET:
                logging.getLogger(chatty).setLevel(logging.WARNING)
        original = self._emit = logging.StreamHandler.emit
        to_file = self.handler

        def emit(handler: logging.StreamHandler[Any], record: logging.LogRecord) -> None:
            if handler is not to_file and not isinstance(handler, logging.FileHandler) \
                    and record.name != _OURS and not record.name.startswith(_OURS + ".") \
                    and _to_terminal(handler):
                to_file.handle(record)
                return
            original(handler, record)

        logging.StreamHandler.emit = emit  # type: ignore[method-assign,assignment]
        self.reroute()

    def uninstall(self) -> None:
        if self._emit is not None:
            logging.StreamHandler.emit = self._emit  # type: ignore[method-assign]
            self._emit = None
        logging.captureWarnings(False)
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()

    def reroute(self) -> None:
        root = logging.getLogger()
        for h in list(root.handlers):
            if _to_terminal(h):
                root.removeHandler(h)
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if not isinstance(logger, logging.Logger) or name == _OURS \
                    or name.startswith(_OURS + "."):
                continue
            moved = False
            for h in list(logger.handlers):
                if _to_terminal(h):
                    logger.removeHandler(h)
                    moved = True
            if moved and self.handler not in logger.handlers:
                logger.addHandler(self.handler)
                logger.propagate = False

    def tail(self, lines: int = 20) -> str:
        self.handler.flush()
        try:
            return "".join(self.path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""
