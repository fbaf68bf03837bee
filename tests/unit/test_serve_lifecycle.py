"""Interrupted and repeated local deployments leave a consistent state: no orphan server,
no stranger's process killed, a torn history line survived.

The servers here are a test double of vLLM's OpenAI server (tests/fakes), started exactly
as the real one is: this is about processes, records and signals, not about a model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

RESOLVED = {"dtype": "bfloat16", "quantization": "none", "kvcache_space_gib": 1}

FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state folder, and the fake server as the serving environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("LLMOPS_HOME", str(home))
    monkeypatch.setenv("LLMOPS_SERVE_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", str(FAKES))
    yield home
    for proc in servers_under(home):  # whatever a failed test left behind
        proc.kill()


def servers_under(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        try:
            if proc.info["cwd"] and proc.info["cwd"].startswith(str(home)) and \
                    "vllm.entrypoints.openai.api_server" in " ".join(proc.info["cmdline"]):
                found.append(proc)
        except (psutil.Error, TypeError):
            continue
    return found


def wait_for(condition: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# A deploy's start, in a process of its own that the test interrupts: the CLI's own
# SIGTERM handling, then a server that takes long to become healthy.
STARTER = textwrap.dedent("""
    import signal
    from llmops.cli.main import _exit_on_sigterm
    from llmops.config import ServeSettings
    from llmops.serve import process
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    template = process.Deployment("m", "local", "1.0.0", "m", "b", "a", 0, 0, [], "")
    process._start(template, lambda port: ["--port", str(port), "--fake-health-after", "600"],
                   ServeSettings(dtype="float32", quantization="none", kvcache_space_gib=1,
                                 startup_timeout_s=600))
""")


def start_in_child(home: Path) -> tuple[subprocess.Popen[bytes], psutil.Process]:
    child = subprocess.Popen([sys.executable, "-c", STARTER], env=dict(os.environ))
    wait_for(lambda: servers_under(home))
    return child, servers_under(home)[0]


def test_sigkill_during_start_leaves_an_orphan_that_the_next_command_stops(
        home: Path) -> None:
    from llmops.serve import process

    child, server = start_in_child(home)
    child.kill()
    child.wait()
    assert server.is_running()  # its own session: it outlives the killed command
    assert process.reap_orphans() == [server.pid]
    assert not servers_under(home)
    assert not list((home / "deployments").glob("*/starting.json"))
    assert process.load_record("m", "local") is None


def test_sigterm_during_start_stops_the_new_server(home: Path) -> None:
    child, server = start_in_child(home)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) != 0
    wait_for(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE)
    assert not servers_under(home)
    assert not list((home / "deployments").glob("*/starting.json"))


def test_a_running_command_s_server_is_not_reaped(home: Path) -> None:
    from llmops.serve import process

    child, server = start_in_child(home)
    try:
        assert process.reap_orphans() == []
        assert server.is_running()
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)


def test_a_recorded_pid_that_is_no_longer_our_server_is_never_signalled(home: Path) -> None:
    """After a reboot or a long time, the recorded pid may be anyone's process."""
    from llmops.serve import process

    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        dep = process.Deployment("m", "local", "1.0.0", "m", "b", "a", 8000, stranger.pid, [],
                                 str(home / "x" / "server.log"))
        assert not dep.alive()
        dep.kill()
        assert stranger.poll() is None  # still running
        # Our server's pid, but recorded with another start time: not the same process.
        settings = process.ServeSettings(**RESOLVED, startup_timeout_s=60)
        server = process.launch("m", lambda p: ["--port", str(p)], settings, "k")
        server.wait_healthy(60)
        created = process.process_created(server.proc.pid)
        moved = process.Deployment("m", "local", "1", "m", "b", "a", server.port,
                                   server.proc.pid, [], str(server.log_path),
                                   created=created - 3600)
        assert not moved.alive()
        same = process.Deployment("m", "local", "1", "m", "b", "a", server.port,
                                  server.proc.pid, [], str(server.log_path), created=created)
        assert same.alive()
        same.kill()
        assert not same.alive()
    finally:
        stranger.kill()
        stranger.wait()


def test_a_local_server_refuses_requests_without_its_key(home: Path) -> None:
    """The key reaches the server through its environment, from a 0600 file."""
    import httpx

    from llmops.serve import process

    key = process.local_api_key()
    assert process.api_key_path().stat().st_mode & 0o777 == 0o600
    server = process.launch("m", lambda p: ["--port", str(p)],
                            process.ServeSettings(**RESOLVED, startup_timeout_s=60), key)
    try:
        server.wait_healthy(60)
        assert key not in " ".join(psutil.Process(server.proc.pid).cmdline())
        url = f"http://127.0.0.1:{server.port}/v1/models"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    finally:
        server.kill()


def test_a_torn_history_line_is_reported_and_does_not_break_the_history(
        home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmops.serve.history import History

    History("m", "local").record("1.0.0", "deploy", "serving")
    path = History("m", "local").path
    with open(path, "a") as fh:
        fh.write('{"at": "2026-11-30T10:00:00", "action": "depl')  # a crash mid-write
    History("m", "local").record("1.0.1", "deploy", "serving")
    events = History("m", "local").read()
    assert [e["version"] for e in events] == ["1.0.0", "1.0.1"]
    assert f"{path}:2 is not a history event" in capsys.readouterr().err
    assert json.loads(path.read_text().splitlines()[-1])["version"] == "1.0.1"


def test_the_switch_holds_sigterm_until_the_new_record_is_written(home: Path) -> None:
    from llmops.serve import process

    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: received.append(s))
    try:
        with process.deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert received == []  # held during the switch
        assert received == [signal.SIGTERM]  # delivered once it is done
    finally:
        signal.signal(signal.SIGTERM, previous)
