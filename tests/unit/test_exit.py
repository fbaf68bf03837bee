"""`end_process` ends the process whatever threads a library leaves behind: the idle
workers of a thread pool (what MLflow's artifact download leaves) stop as at a normal
exit, and a stuck thread is named on stderr after a bounded wait. Each ending runs in a
subprocess, with a timeout as the hang guard."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

POOL_LEFT_BEHIND = """
import atexit, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from llmops.cli.main import end_process
out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
pool = ThreadPoolExecutor(2)  # kept, as a library keeps its pool: its workers stay idle
print(pool.submit(lambda: "downloaded").result(), end="")
end_process(0)
"""

STUCK_THREAD = """
import atexit, sys, threading
from pathlib import Path
from llmops.cli.main import end_process
out = Path(sys.argv[1])
atexit.register(lambda: (out / "atexit").write_text("ran"))
threading.Thread(target=threading.Event().wait, name="stuck-worker").start()
print("done", end="")
end_process(4, wait_s=1)
"""


def ending(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("end_process hung: the process did not exit within 60 s")


def test_the_idle_workers_of_a_pool_left_behind_do_not_hold_the_exit(tmp_path: Path) -> None:
    done = ending(POOL_LEFT_BEHIND, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "downloaded"
    assert done.stderr == ""
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_stuck_thread_is_named_and_left_behind_after_the_wait(tmp_path: Path) -> None:
    started = time.monotonic()
    done = ending(STUCK_THREAD, tmp_path)
    assert done.returncode == 4, done.stderr
    assert done.stdout == "done"
    assert "1 thread(s) still running 1 s after the command ended, exiting without them: " \
           "stuck-worker" in done.stderr
    assert (tmp_path / "atexit").read_text() == "ran"  # the exit went on after the wait
    assert time.monotonic() - started < 30
