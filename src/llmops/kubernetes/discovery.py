"""Which API version of an object to render: the first the cluster serves (`kubectl
api-versions`, discovery), as Helm charts do; the newest when no cluster was asked."""

from __future__ import annotations

from llmops.errors import UsageError

# Newest first. Kubernetes 1.20 serves policy/v1beta1 and autoscaling/v2beta2 only; 1.25
# removed both betas, 1.26 autoscaling/v2beta2.
PDB_API_VERSIONS = ("policy/v1", "policy/v1beta1")
HPA_API_VERSIONS = ("autoscaling/v2", "autoscaling/v2beta2")
# Served by the Prometheus adapter's APIService, not by Kubernetes itself.
CUSTOM_METRICS_APIS = ("custom.metrics.k8s.io/v1beta2", "custom.metrics.k8s.io/v1beta1")
KEDA_API_VERSIONS = ("keda.sh/v1alpha1",)  # served once KEDA's CRDs are installed


def served(candidates: tuple[str, ...], apis: set[str] | None, missing: str = "") -> str:
    """The first of `candidates` the cluster serves (None: no cluster asked, the newest);
    `missing` says what to install when it serves none."""
    if apis is None:
        return candidates[0]
    for version in candidates:
        if version in apis:
            return version
    raise UsageError(f"the cluster serves none of {', '.join(candidates)}"
                     + (f": {missing}" if missing else ""))
