"""deploy/monitoring/ and the dashboards llmops renders, checked by the tools that read them.

promtool (Debian's prometheus package) checks the alerting rules and runs their unit tests
(alerts.test.yml), and parses every PromQL expression llmops renders elsewhere (the
dashboard's panels, KEDA's triggers, the Prometheus adapter's queries, a canary's). Each
rendered dashboard is validated against the JSON schema of Grafana's own Dashboard type
and its time series panel options (@grafana/schema on npm, made a schema by
ts-json-schema-generator). The tools come from scripts/setup-ci-tools.sh. A few seconds.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from llmops.config.schema import KubernetesSettings
from llmops.kubernetes.canary import queries as canary_queries
from llmops.kubernetes.dashboard import dashboard
from llmops.kubernetes.manifests import Release, render
from llmops.kubernetes.plan import GpuBudget, ModelShape, plan

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
TOOLS = REPO / ".tools" / "node_modules"
GRAFANA_TYPES = TOOLS / "@grafana" / "schema" / "dist" / "types" / "raw"
SETUP = "run `bash scripts/setup-ci-tools.sh`"


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(f"promtool is not installed (Debian's prometheus package): {SETUP}")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_the_alerting_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", MONITORING / "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout
    tested = promtool("test", "rules", MONITORING / "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def rendered_queries() -> list[str]:
    """Every PromQL expression llmops renders outside alerts.yml, as Prometheus gets it."""
    g = {"gpu_type": "nvidia-a100-80gb", "gpu_memory_gib": 80, "gpus_per_node": 1}
    from llmops.config import GpuTarget

    gpu = GpuTarget.model_validate(g)
    shape = ModelShape(params=135_000_000, layers=30, hidden=576, heads=9, kv_heads=3,
                       head_dim=64)
    k8s = KubernetesSettings.model_validate({
        "vllm_image": "vllm/vllm-openai:v0.32.0@sha256:" + "0" * 64, "namespace": "serving",
        "autoscaling": {"kind": "keda", "min_replicas": 1, "max_replicas": 3,
                        "prometheus_url": "http://prometheus.monitoring.svc:9090"}})
    docs = render(Release("bot", "1.0.0", "sha256:x", "/base", "https://gl/api/v4/projects/1"),
                  "production", gpu, plan(shape, GpuBudget(80, 1, 1)), k8s)
    [scaled] = [d for d in docs if d["kind"] == "ScaledObject"]
    queries = [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]
    board = dashboard("bot", "bot-production", "serving")
    # Grafana replaces $__rate_interval before Prometheus sees the query.
    queries += [t["expr"].replace("$__rate_interval", "1m")
                for p in board["panels"] for t in p["targets"]]
    adapter = yaml.safe_load((MONITORING / "prometheus-adapter.yml").read_text())["rules"]
    queries += [r["metricsQuery"].replace("<<.Series>>", r["name"]["as"])
                .replace("<<.LabelMatchers>>", 'namespace="serving",pod=~"bot-.*"')
                .replace("<<.GroupBy>>", "pod") for r in adapter]
    queries += list(canary_queries("bot-production", "serving", "1.1.0", 300).values())
    return queries


def check_queries(queries: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    rules = {"groups": [{"name": "rendered", "rules": [
        {"record": f"llmops:rendered_{i}", "expr": q} for i, q in enumerate(queries)]}]}
    path = folder / "rendered.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return promtool("check", "rules", path)


def test_every_query_llmops_renders_is_promql_prometheus_parses(tmp_path: Path) -> None:
    queries = rendered_queries()
    assert len(queries) >= 12
    done = check_queries(queries, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check reads the queries: one broken query fails it.
    broken = check_queries([*queries, "sum by (pod (vllm:num_requests_waiting)"], tmp_path)
    assert broken.returncode != 0 and "llmops:rendered_" in broken.stdout + broken.stderr


def grafana_schema(types_file: Path, type_name: str) -> dict[str, Any]:
    """The JSON schema of one of Grafana's TypeScript types."""
    generator = TOOLS / ".bin" / "ts-json-schema-generator"
    if not generator.exists() or not types_file.exists():
        pytest.fail(f"@grafana/schema or ts-json-schema-generator is not installed: {SETUP}")
    done = subprocess.run([str(generator), "--path", str(types_file), "--type", type_name,
                           "--no-type-check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    schema: dict[str, Any] = json.loads(done.stdout)
    return schema


def messages(error: jsonschema.ValidationError) -> str:
    """An error with those of the alternatives it failed (a panel is a Panel or a row)."""
    return "; ".join([error.message, *(f"{list(c.path)}: {c.message}" for c in error.context)])


def schema_errors(board: dict[str, Any], validators: dict[str, Any]) -> list[str]:
    """What Grafana's Dashboard type, and its time series panel options, refuse."""
    errors = [f"dashboard {list(e.path)}: {messages(e)}"
              for e in validators["dashboard"].iter_errors(board)]
    for panel in board["panels"]:
        if panel["type"] == "timeseries":
            errors += [f"panel {panel['title']!r} options {list(e.path)}: {messages(e)}"
                       for e in validators["timeseries"].iter_errors(panel["options"])]
    return errors


def test_the_dashboard_is_valid_for_grafana_s_dashboard_schema() -> None:
    validators = {
        "dashboard": jsonschema.Draft7Validator(grafana_schema(
            GRAFANA_TYPES / "dashboard" / "x" / "types.gen.d.ts", "Dashboard")),
        "timeseries": jsonschema.Draft7Validator(grafana_schema(
            GRAFANA_TYPES / "composable" / "timeseries" / "panelcfg" / "x" / "types.gen.d.ts",
            "Options"))}
    for namespace in ("serving", None):
        board = dashboard("support-bot", "support-bot-production", namespace)
        assert schema_errors(board, validators) == []
    # Not vacuous: an unknown key, a wrong type, a missing required option are refused.
    breaches = [
        (lambda b: b.__setitem__("refersh", "30s"), "'refersh' was unexpected"),
        (lambda b: b["panels"][0]["gridPos"].__setitem__("w", "12"), "'12' is not of type"),
        (lambda b: b["panels"][0]["options"]["legend"].pop("calcs"), "'calcs' is a required"),
    ]
    for breach, expected in breaches:
        board = copy.deepcopy(dashboard("support-bot", "support-bot-production", None))
        breach(board)
        assert any(expected in e for e in schema_errors(board, validators)), expected
