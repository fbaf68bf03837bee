"""The CLI's exit: `end_process` (threading's exit hooks, a bounded join, the atexit
handlers, then `os._exit`) against a plain `sys.exit` (the interpreter's teardown), in
processes that import what the CLI imports (torch, transformers' Llama, MLflow, Prefect),
start MLflow's client and leave a thread pool behind, as a command does. The two endings
alternate; medians of `--runs` each, reported as a ratio.

    .venv/bin/python benchmarks/exit_time.py [--runs 5]

The exit time is from the child's last line (the command done, its timestamp printed) to
the parent seeing the process end; the total is the whole process, imports included.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
import torch, transformers, mlflow, prefect
from transformers.models.llama import modeling_llama
from llmops.cli.main import end_process
mlflow.MlflowClient(f"sqlite:///{sys.argv[2]}/mlflow.db").search_experiments()
pool = ThreadPoolExecutor(2)  # kept, as MLflow's artifact download keeps its pool
pool.submit(int).result()
print(time.time(), flush=True)
end_process(0) if sys.argv[1] == "end_process" else sys.exit(0)
"""


def one_run(ending: str, folder: str) -> tuple[float, float]:
    """(exit seconds, total seconds) of one child that ends with `ending`."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, ending, folder], capture_output=True,
                          text=True, timeout=600)
    ended_wall, total = time.time(), time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{ending}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return ended_wall - float(done.stdout.split()[-1]), total


def cpu() -> str:
    """The CPU's model name and its AMX flags, from /proc/cpuinfo (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    amx = sorted(f for f in flags if f.startswith("amx"))
    return f"{name}, {', '.join(amx) if amx else 'no AMX'}"


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    times: dict[str, list[tuple[float, float]]] = {"end_process": [], "sys.exit": []}
    with tempfile.TemporaryDirectory() as folder:
        one_run("end_process", folder)  # warm the page cache and create the store
        for _ in range(runs):
            for ending in times:
                times[ending].append(one_run(ending, folder))
    print(f"{cpu()}; torch's CPU ISA: {torch.backends.cpu.get_cpu_capability()}; {runs} "
          "runs of each, alternating; medians")
    exits = {e: statistics.median(t[0] for t in ts) for e, ts in times.items()}
    totals = {e: statistics.median(t[1] for t in ts) for e, ts in times.items()}
    for ending in times:
        print(f"{ending:<12} exit {exits[ending]:6.2f} s   whole process {totals[ending]:6.2f} s"
              f"   (exits: {', '.join(f'{t[0]:.2f}' for t in times[ending])})")
    print(f"ratio sys.exit / end_process: exit {exits['sys.exit'] / exits['end_process']:.1f}x,"
          f" whole process {totals['sys.exit'] / totals['end_process']:.2f}x")


if __name__ == "__main__":
    main()
