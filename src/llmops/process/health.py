"""Waiting for a server this process started: poll its health URL, and when it dies or never
answers, say so with the end of its log."""

from __future__ import annotations

import subprocess
import textwrap
import time
from pathlib import Path

from llmops.errors import StageFailed


def log_tail(log_path: str | Path, lines: int = 20) -> str:
    """The last lines of a log ('' when it cannot be read)."""
    try:
        return "".join(Path(log_path).read_text(errors="replace").splitlines(True)[-lines:])
    except OSError:
        return ""


def wait_for_health(name: str, url: str, proc: subprocess.Popen[bytes], log_path: str | Path,
                    timeout_s: float, interval_s: float = 1.0, hint: str = "") -> None:
    """Poll `url` until it answers 200. Raise StageFailed naming `name`, the log and its tail
    (then `hint`) when `proc` exits first or `timeout_s` passes; the caller stops `proc`."""
    import httpx  # here: the CLI imports this module on paths that never poll

    deadline = time.monotonic() + timeout_s
    # One client for the whole wait: httpx builds a TLS context per client, whose CPU
    # every poll would take from a server that is still loading.
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                _fail(f"{name} exited with code {proc.returncode} before becoming healthy",
                      log_path, hint)
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(interval_s)
    _fail(f"{name} did not answer {url} within {timeout_s:.0f} s", log_path, hint)


def _fail(what: str, log_path: str | Path, hint: str) -> None:
    tail = textwrap.indent(log_tail(log_path), "  ").rstrip("\n")
    raise StageFailed(f"{what}; its log is {log_path}\n{tail}" + (f"\n{hint}" if hint else ""))
