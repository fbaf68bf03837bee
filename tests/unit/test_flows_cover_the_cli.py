"""Everything a person can do by hand can be run with `prefect deployment run`: every CLI
verb that changes something has a flow, and every flow has a deployment in prefect.yaml."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from llmops.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
# Verbs that only read (tables, a plan, this machine): nothing to orchestrate.
READ_ONLY = {"status", "history", "plan", "lineage", "doctor"}
# Verbs that write files into the developer's checkout, to review and commit (a flow run
# would write them into the worker's checkout, where nobody commits them).
CHECKOUT_ONLY = {"init", "config-reference", "build-retention"}
# CLI verb -> flow name where they differ.
FLOW_OF = {"validate-data": "validate", "apply-promotion": "apply-promotion"}


def flow_names() -> dict[str, str]:
    """flow name -> 'flows/<file>.py:<function>' for every @flow in flows/."""
    found = {}
    for path in sorted((REPO / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for dec in node.decorator_list:
                    if isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "flow":
                        name = next(k.value.value for k in dec.keywords if k.arg == "name")
                        found[name] = f"flows/{path.name}:{node.name}"
    return found


def test_every_verb_that_does_work_has_a_flow() -> None:
    parser = build_parser()
    verbs = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    flows = flow_names()
    missing = [v for v in sorted(verbs - READ_ONLY - CHECKOUT_ONLY)
               if FLOW_OF.get(v, v) not in flows]
    assert missing == []


def test_every_flow_has_a_deployment() -> None:
    declared = {d["entrypoint"] for d in yaml.safe_load(
        (REPO / "prefect.yaml").read_text())["deployments"]}
    assert set(flow_names().values()) == declared
