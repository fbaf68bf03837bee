"""CLI start-up: light commands (`--help`, `history`, `status`) of this tree against a
baseline commit's, alternating, medians of 7 runs each, reported as ratios.

    git worktree add /tmp/base <commit>
    .venv/bin/python benchmarks/cli_startup.py /tmp/base

The baseline runs with PYTHONPATH at its own src/ (this checkout's venv, the same packages).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def entry(src: Path) -> str:
    """`llmops.cli` was one module before the restructure, a package with `main` after."""
    return "llmops.cli.main" if (src / "llmops" / "cli" / "main.py").is_file() else "llmops.cli"


def timed(src: Path, args: list[str], home: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "LLMOPS_ROOT": str(ROOT),
           "LLMOPS_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", entry(src), *args], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - started


def main() -> None:
    base = Path(sys.argv[1]).resolve() / "src"
    home = Path(os.environ.get("TMPDIR", "/tmp")) / "llmops-cli-startup"
    for args in (["--help"], ["history", "tiny"], ["status"]):
        before, after = [], []
        for _ in range(7):
            before.append(timed(base, args, home))
            after.append(timed(ROOT / "src", args, home))
        b, a = statistics.median(before), statistics.median(after)
        print(f"llmops {' '.join(args):<14} baseline {b:.2f} s  this tree {a:.2f} s  "
              f"ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
