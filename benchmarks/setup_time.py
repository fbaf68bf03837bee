"""`make setup`'s environments with uv (scripts/setup.sh) against pip, the way it was built
before (`python -m venv`, pip, `pip install --no-deps -r LOCK`), from the same hashed locks
and the same package sources, each from an empty cache and then from its warm cache.

Both build .venv (requirements/pipeline.lock) and .venv-serve (serve.lock) into a scratch
folder with their own cache folders, so the checkout's environments and caches are left as
they are. The order alternates (uv first, then pip first) when --rounds > 1.

    .venv/bin/python benchmarks/setup_time.py            # one round: cold then warm, each tool
    .venv/bin/python benchmarks/setup_time.py --rounds 2 --locks pipeline
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIP_VERSION = "26.3"  # the pip the set-up used before uv


def uv_binary() -> str:
    """uv at requirements/uv.lock's version, as scripts/setup.sh installs it."""
    subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, check=True, capture_output=True)
    version = next(line.split("==")[1].split()[0] for line in
                   (REPO / "requirements/uv.lock").read_text().splitlines()
                   if line.startswith("uv=="))
    return str(Path.home() / ".cache" / "llmops" / f"uv-{version}" / "bin" / "uv")


def pip_sources() -> list[str]:
    """This machine's pip wheel folders, handed to uv as setup.sh does."""
    done = subprocess.run([python(), "-m", "pip", "config", "get", "global.find-links"],
                          capture_output=True, text=True)
    out = [x for url in done.stdout.split() for x in ("--find-links", url)]
    return out + (["--index-strategy", "unsafe-best-match"] if out else [])


def python() -> str:
    """The interpreter the set-up builds from (the checkout's venvs have no pip)."""
    return shutil.which("python3.11") or sys.base_prefix + "/bin/python3"


def build_uv(uv: str, venv: Path, lock: Path, cache: Path) -> None:
    import os

    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_SYSTEM_CERTS": "1"}
    subprocess.run([uv, "venv", "-q", "--python", python(), str(venv)], check=True, env=env)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin/python"),
                    "--no-deps", "--require-hashes", *pip_sources(), "-r", str(lock)],
                   check=True, env=env)


def build_pip(venv: Path, lock: Path, cache: Path) -> None:
    import os

    env = {**os.environ, "PIP_CACHE_DIR": str(cache)}
    subprocess.run([python(), "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"pip=={PIP_VERSION}"], check=True, env=env)
    subprocess.run([*pip, "--no-deps", "--require-hashes", "-r", str(lock)], check=True,
                   env=env)


def timed(label: str, build: object, *args: object) -> float:
    started = time.perf_counter()
    build(*args)  # type: ignore[operator]
    seconds = time.perf_counter() - started
    print(f"  {label:<28} {seconds:7.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--locks", nargs="+", default=["pipeline", "serve"])
    args = parser.parse_args()
    import torch

    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}; locks: {', '.join(args.locks)}")
    uv = uv_binary()
    (REPO / ".llmops").mkdir(exist_ok=True)
    results: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        order = ["uv", "pip"] if round_ % 2 == 0 else ["pip", "uv"]
        for tool in order:
            with tempfile.TemporaryDirectory(dir=REPO / ".llmops") as scratch:
                cache = Path(scratch) / "cache"
                for phase in ("cold", "warm"):
                    total = 0.0
                    for name in args.locks:
                        venv = Path(scratch) / f"{name}-{phase}"
                        lock = REPO / "requirements" / f"{name}.lock"
                        if tool == "uv":
                            total += timed(f"{tool} {phase} {name}", build_uv, uv, venv, lock,
                                           cache)
                        else:
                            total += timed(f"{tool} {phase} {name}", build_pip, venv, lock,
                                           cache)
                        shutil.rmtree(venv)
                    results.setdefault(f"{tool} {phase}", []).append(total)
    print("\nsetup of all locks (seconds, best of rounds):")
    for phase in ("cold", "warm"):
        u, p = min(results[f"uv {phase}"]), min(results[f"pip {phase}"])
        print(f"  {phase}: uv {u:6.1f}  pip {p:6.1f}  pip/uv {p / u:5.1f}x")


if __name__ == "__main__":
    main()
