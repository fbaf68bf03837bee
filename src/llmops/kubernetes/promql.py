"""The PromQL label matchers of a Deployment's pods, as the scrape config of
deploy/monitoring/prometheus.yml labels their series (namespace, app_kubernetes_io_name from
the pod's `app.kubernetes.io/name`, llmops_model and llmops_version from its llmops/ labels):
one definition for the autoscaler's queries and the dashboard's."""

from __future__ import annotations

# The inference routes of http_requests_total (not /health or /metrics).
INFERENCE_ROUTES = 'handler=~"/v1/.+|/invocations"'


def selector(name: str, namespace: str | None, *more: str) -> str:
    """PromQL label matchers of deployment/`name`'s pods (and `more` matchers); without a
    namespace (the kubeconfig context's), the Deployment's name alone."""
    where = [f'namespace="{namespace}"'] if namespace else []
    return "{" + ",".join([*where, f'app_kubernetes_io_name="{name}"', *more]) + "}"
