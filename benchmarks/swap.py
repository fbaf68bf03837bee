"""A version swap as clients of the model's address see it: the router's swap (the new
worker started beside the old one, verified, added, the old one drained) against a full
restart at the same address (stop, then deploy), in the same script, on the tiny model.

A steady client keeps asking the address (one short chat after another) during each, and
reports its failed requests, the longest run of seconds without an answer, and its
latency; each swap is timed from the command's start to its end (the new version answering
at the address).

    .venv/bin/python benchmarks/swap.py              # release tiny in a scratch home first
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
LLMOPS = REPO / ".venv" / "bin" / "llmops"
DECLARATIVE = ("axolotl_configs", "validation", "deploy", "registry", "datasets", "flows",
               "requirements")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Steady:
    """One client asking `url` in a loop; what each request did, and when."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.results: list[tuple[float, float, bool]] = []  # (start, latency, ok)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    ok = client.post(f"{self.url}/chat/completions",
                                     headers={"Authorization": f"Bearer {self.key}"},
                                     json={"model": "tiny", "max_tokens": 4, "messages": [
                                         {"role": "user", "content": "hi"}]}
                                     ).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.results.append((started, time.monotonic() - started, ok))
                if not ok:
                    time.sleep(0.1)  # a refused connection returns at once

    def summary(self) -> dict[str, float]:
        latencies = sorted(lat for _, lat, ok in self.results if ok)
        gap, last_ok = 0.0, self.results[0][0] if self.results else 0.0
        for started, latency, ok in self.results:
            if ok:
                gap = max(gap, started + latency - last_ok)
                last_ok = started + latency
        return {"requests": len(self.results),
                "failed": sum(1 for *_, ok in self.results if not ok),
                "longest_gap_s": round(gap, 2),
                "p50_s": round(statistics.median(latencies), 3) if latencies else 0.0,
                "p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3)
                if latencies else 0.0}


def run(*args: str, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run([str(LLMOPS), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"llmops {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def measured(name: str, url: str, key: str, *commands: tuple[str, ...],
             env: dict[str, str]) -> dict[str, float]:
    steady = Steady(url, key)
    steady.thread.start()
    time.sleep(2)  # answering before the swap
    took = sum(run(*c, env=env) for c in commands)
    time.sleep(2)
    steady.stop.set()
    steady.thread.join(120)
    return {"variant": name, "command_s": round(took, 1), **steady.summary()}  # type: ignore[dict-item]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="llmops-swap-"))
    root, home = work / "repo", work / "home"
    for folder in DECLARATIVE:
        shutil.copytree(REPO / folder, root / folder)
    address = f"127.0.0.1:{free_port()}"  # fixed: the restart comes back at the same one
    local = root / "deploy" / "local.yml"
    config = yaml.safe_load(local.read_text())
    config["models"]["tiny"]["address"] = address
    local.write_text(yaml.safe_dump(config))
    env = {**os.environ, "LLMOPS_ROOT": str(root), "LLMOPS_HOME": str(home)}
    print(f"releasing tiny in {work} (address {address}) ...", flush=True)
    run("release", "tiny", env=env)
    key = (home / "api-key").read_text().strip()
    url = f"http://{address}/v1"
    version = json.loads((home / "deployments" / "tiny-local.json").read_text())["version"]
    try:
        rows = [measured("router swap", url, key,
                         ("deploy", "tiny", "--version", version), env=env),
                measured("full restart", url, key, ("stop", "tiny"),
                         ("deploy", "tiny", "--version", version), env=env)]
    finally:
        subprocess.run([str(LLMOPS), "stop", "tiny"], env=env, capture_output=True)
    for row in rows:
        print(json.dumps(row))
    swap, restart = rows
    print(f"failed requests: {swap['failed']} (swap) vs {restart['failed']} (restart); "
          f"longest gap {swap['longest_gap_s']} s vs {restart['longest_gap_s']} s; "
          f"command {swap['command_s']} s vs {restart['command_s']} s "
          f"({restart['command_s'] / max(swap['command_s'], 0.1):.2f}x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
