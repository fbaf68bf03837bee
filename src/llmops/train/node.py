"""`python -m llmops.train.node CONFIG`: one node's share of a multi-node training.

Node 0 runs `llmops train`, which writes the resolved YAML into the run folder and owns the
MLflow run; every other node runs this with the same YAML (on shared storage), that run's
MLFLOW_RUN_ID, the same NNODES, MASTER_ADDR and MASTER_PORT, and its own NODE_RANK. It
renders the same launch (`llmops.train.launch`) with this node's rank, prints it, runs it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from llmops.errors import UsageError
from llmops.redact import redact
from llmops.train.launch import argv, plan
from llmops.train.run import _cuda_count, training_env


def main(args: Sequence[str] | None = None) -> int:
    """Run this node's share; its exit status."""
    args = list(sys.argv[1:] if args is None else args)
    if len(args) != 1:
        print("usage: python -m llmops.train.node RESOLVED_AXOLOTL_YML", file=sys.stderr)
        return 2
    config = Path(args[0]).resolve()
    gpus = _cuda_count()
    env = training_env(gpus)
    try:
        cmd = argv(plan(yaml.safe_load(config.read_text()) or {}, gpus, env), config)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(redact("training: " + " ".join(cmd)), flush=True)
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
