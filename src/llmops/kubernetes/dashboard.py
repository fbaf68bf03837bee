"""A Grafana dashboard of one model in one environment, in Grafana's dashboard JSON model.

Every query selects the Deployment's pods by the labels the scrape config of
deploy/monitoring/prometheus.yml gives them (namespace, app_kubernetes_io_name, and
llmops_version from the pod's `llmops/version` label), so that during a canary each version
is its own series. The panels read vLLM's metrics and the API server's HTTP metrics
(prometheus-fastapi-instrumentator's http_requests_total, statuses grouped as 5xx).
Its JSON is checked against the Dashboard type of Grafana's @grafana/schema
(tests/e2e/test_monitoring.py). Rendering is pure.
"""

from __future__ import annotations

import json
from typing import Any

from llmops.kubernetes.promql import INFERENCE_ROUTES as API
from llmops.kubernetes.promql import selector

SCHEMA_VERSION = 39  # Grafana 10.3+'s dashboard JSON model; newer Grafanas migrate it
RATE = "[$__rate_interval]"


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"refId": ref, "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "expr": expr, "legendFormat": legend}


def panel(number: int, title: str, unit: str, exprs: list[tuple[str, str]],
          description: str) -> dict[str, Any]:
    """A time series panel; two per row, in the order given."""
    return {"id": number, "type": "timeseries", "title": title, "description": description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * ((number - 1) % 2),
                        "y": 8 * ((number - 1) // 2)},
            "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom",
                                   "showLegend": True, "calcs": []},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [target(e, legend, chr(ord("A") + i))
                        for i, (e, legend) in enumerate(exprs)]}


def quantiles(histogram: str, m: str) -> list[tuple[str, str]]:
    return [(f"histogram_quantile({q}, sum by (le, llmops_version) "
             f"(rate({histogram}_bucket{m}{RATE})))", f"p{round(q * 100)} {{{{llmops_version}}}}")
            for q in (0.5, 0.99)]


def dashboard(model: str, name: str, namespace: str | None) -> dict[str, Any]:
    """The dashboard of deployment/`name`, which serves `model`."""
    m = selector(name, namespace)
    http = selector(name, namespace, API)
    errors = selector(name, namespace, API, 'status="5xx"')
    panels = [
        ("Requests per second, by version", "reqps", [
            (f"sum by (llmops_version) (rate(vllm:request_success_total{m}{RATE}))",
             "{{llmops_version}}")],
         "Requests vLLM finished; during a canary, one series per version."),
        ("Share of traffic, by version", "percentunit", [
            (f"sum by (llmops_version) (rate(http_requests_total{http}{RATE})) / ignoring "
             f"(llmops_version) group_left sum(rate(http_requests_total{http}{RATE}))",
             "{{llmops_version}}")],
         "Each version's share of the inference requests: a canary's traffic step."),
        ("Time to first token", "s", quantiles("vllm:time_to_first_token_seconds", m),
         "p50 and p99 of the time to the first generated token, per version."),
        ("Request latency", "s", quantiles("vllm:e2e_request_latency_seconds", m),
         "p50 and p99 of whole requests (queue, prefill and decode), per version."),
        ("Error rate, by version", "percentunit", [
            (f"sum by (llmops_version) (rate(http_requests_total{errors}{RATE})) / "
             f"sum by (llmops_version) (rate(http_requests_total{http}{RATE}))",
             "{{llmops_version}}")],
         "Share of inference requests answered 5xx."),
        ("Generated tokens per second", "short", [
            (f"sum(rate(vllm:generation_tokens_total{m}{RATE}))", "generated"),
            (f"sum(rate(vllm:prompt_tokens_total{m}{RATE}))", "prompt")],
         "Throughput in tokens, all pods together."),
        ("Requests waiting and running", "short", [
            (f"sum by (pod) (vllm:num_requests_waiting{m})", "waiting {{pod}}"),
            (f"sum by (pod) (vllm:num_requests_running{m})", "running {{pod}}")],
         "The queue the autoscaler follows: waiting requests found no batch slot."),
        ("KV-cache usage", "percentunit", [
            (f"max by (pod) (vllm:kv_cache_usage_perc{m})", "{{pod}}")],
         "Share of KV-cache blocks in use per pod; near 1, requests are preempted."),
        ("Pods answering, by version", "short", [
            (f"count by (llmops_version) (up{m} == 1)", "{{llmops_version}}")],
         "Pods whose /metrics the scraper reaches."),
    ]
    return {
        "uid": f"llmops-{name}"[:40], "title": f"llmops: {model} ({name})",
        "description": f"vLLM serving {model}: throughput, latency, queue, KV cache and "
                       "traffic per version (rendered by llmops).",
        "tags": ["llmops", "vllm"], "timezone": "browser", "editable": True,
        "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION, "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Prometheus",
                                 "type": "datasource", "query": "prometheus"}]},
        "annotations": {"list": []}, "links": [],
        "panels": [panel(i, title, unit, exprs, about)
                   for i, (title, unit, exprs, about) in enumerate(panels, start=1)],
    }


def dashboard_configmap(model: str, name: str, labels: dict[str, str],
                        namespace: str | None) -> dict[str, Any]:
    """The dashboard in a ConfigMap that Grafana's dashboard sidecar loads (label
    grafana_dashboard=1, as kube-prometheus-stack's Grafana looks for)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"{name}-dashboard",
                         "labels": {**labels, "grafana_dashboard": "1"}},
            "data": {f"{name}.json": json.dumps(dashboard(model, name, namespace), indent=1)}}
