"""What the Kubernetes target counts as served: a version is settled only once the
Deployment's controller has seen its newest spec and every replica runs it and is
available, as `kubectl rollout status` judges it. Only then may a pin be set to it (a
failed undo leaves the template naming a version that does not serve)."""

from __future__ import annotations

from typing import Any

import pytest

from llmops.kubernetes.kubectl import digest_of, rolled_out


def deployment(generation: int = 2, replicas: int = 2, **status: Any) -> dict[str, Any]:
    settled = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
               "availableReplicas": 2, "conditions": [
                   {"type": "Progressing", "status": "True",
                    "reason": "NewReplicaSetAvailable"}]}
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {**settled, **status}}


def test_every_replica_updated_and_available_is_settled() -> None:
    assert rolled_out(deployment())


@pytest.mark.parametrize(("why", "status"), [
    ("the controller has not seen the newest spec", {"observedGeneration": 1}),
    ("one replica still runs the old template", {"replicas": 3}),
    ("one updated replica is not available", {"availableReplicas": 1}),
    ("one replica is not updated yet", {"updatedReplicas": 1, "replicas": 2}),
    ("the rollout exceeded its progress deadline", {"conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
])
def test_an_unfinished_or_stuck_rollout_is_not_settled(why: str,
                                                       status: dict[str, Any]) -> None:
    assert not rolled_out(deployment(**status)), why


def test_the_digest_is_the_init_containers_expected_digest() -> None:
    template = {"spec": {"initContainers": [{"name": "fetch-model", "env": [
        {"name": "MODEL", "value": "tiny"},
        {"name": "EXPECTED_DIGEST", "value": "sha256:abc"}]}]}}
    assert digest_of(template) == "sha256:abc"
    assert digest_of({"spec": {}}) == ""
