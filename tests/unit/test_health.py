"""Servers we start: waiting for their health, stopping them without leaving their temp folder,
keeping their logs bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.errors import StageFailed
from llmops.process.health import wait_for_health
from llmops.serve.process import free_port, kill


def test_returns_once_the_server_answers(tmp_path: Path) -> None:
    (tmp_path / "health").write_text("ok")
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                                 "127.0.0.1", "--directory", str(tmp_path)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_health("web", f"http://127.0.0.1:{port}/health", proc, log, 60, 0.1)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_a_server_that_exits_is_reported_with_its_code_and_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "print('no such model: m'); exit(3)"],
                                stdout=out, stderr=subprocess.STDOUT)
    proc.wait()
    with pytest.raises(StageFailed, match=r"^vLLM exited with code 3 before becoming healthy; "
                       rf"its log is {log}\n  no such model: m$"):
        wait_for_health("vLLM", f"http://127.0.0.1:{free_port()}/health", proc, log, 60)


def test_a_server_that_never_answers_times_out_with_the_hint(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("loading weights\n")
    proc = subprocess.Popen(["sleep", "30"])
    url = f"http://127.0.0.1:{free_port()}/health"
    try:
        with pytest.raises(StageFailed) as failed:
            wait_for_health("Prefect", url, proc, log, 1.0, 0.1, hint="set PREFECT_API_URL")
    finally:
        proc.kill()
        proc.wait()
    assert str(failed.value) == (f"Prefect did not answer {url} within 1 s; its log is {log}\n"
                                 "  loading weights\nset PREFECT_API_URL")


def test_kill_stops_the_process_group_and_removes_its_temp_folder(tmp_path: Path) -> None:
    sockets = tmp_path / "llmops-1234-x"
    (sockets / "torchinductor_root").mkdir(parents=True)
    (sockets / "torchinductor_root" / "header.h.gch").write_bytes(b"\0" * 1024)
    # A server and its child (vLLM's engine core) in their own session, as `launch` starts it.
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    kill(proc.pid, sockets, grace_s=10)
    with pytest.raises(ProcessLookupError):  # both gone, the child reaped by init
        os.killpg(proc.pid, 0)
    assert not sockets.exists()

def test_prefect_api_log_keeps_one_earlier_file_once_it_grows(tmp_path: Path) -> None:
    from llmops.orchestration.prefect_api import rotate

    log = tmp_path / "api.log"
    log.write_text("small\n")
    rotate(log, max_bytes=100)
    assert log.read_text() == "small\n"  # under the limit: appended to
    log.write_text("x" * 101)
    (tmp_path / "api.log.1").write_text("older")
    rotate(log, max_bytes=100)
    assert not log.exists() and (tmp_path / "api.log.1").read_text() == "x" * 101
