"""The Prefect runner of the engine's steps: each step becomes a task with its policy.

- Retries only where repeating is safe (registry uploads resume, HTTP calls to GitLab), and
  only on transient failures: a refused check or bad input is never retried.
- The data gate is cached on the content of its inputs (`llmops.stages.cachekeys`): an
  unchanged dataset, suite, tokenizer and code is not validated twice.
- Timeouts bound every step; training's is the longest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from llmops.errors import LlmopsError
from llmops.redact import redacting
from llmops.stages.cachekeys import data_gate_key
from llmops.stages.steps import Steps

T = TypeVar("T")
HOUR = 3600.0


def _transient(task_: Any, task_run: Any, state: Any) -> bool:
    """Retry network trouble and server errors, never a refusal or a usage error."""
    try:
        state.result()
    except LlmopsError:
        return False
    except Exception:
        return True
    return False


def _data_key(context: Any, parameters: dict[str, Any]) -> str | None:
    if parameters.get("only"):
        return None  # an ad-hoc file (validate-data --dataset) is not cached
    return data_gate_key(parameters["spec"])


RETRIED = {"retries": 3, "retry_delay_seconds": [5, 20, 60], "retry_condition_fn": _transient}
# Cached results live under PREFECT_RESULTS_LOCAL_STORAGE_PATH, which `llmops` and
# scripts/orchestrator.sh point into LLMOPS_HOME (Prefect's default, ~/.prefect/storage,
# would share them between checkouts and homes).
POLICY: dict[str, dict[str, Any]] = {
    "check-config": {"timeout_seconds": 0.1 * HOUR},
    "check-data": {"timeout_seconds": 2 * HOUR, "cache_key_fn": _data_key,
                   "cache_expiration": timedelta(days=30), "persist_result": True},
    "record-data": {"timeout_seconds": 0.25 * HOUR, **RETRIED},
    "train": {"timeout_seconds": 24 * HOUR},
    "evaluate": {"timeout_seconds": 3 * HOUR},
    "gate": {"timeout_seconds": 0.1 * HOUR},
    "register": {"timeout_seconds": 2 * HOUR, "retries": 3,
                 "retry_delay_seconds": [10, 60, 180], "retry_condition_fn": _transient},
    "deploy": {"timeout_seconds": 1 * HOUR},
    "verify": {"timeout_seconds": 1 * HOUR},
    "rollback": {"timeout_seconds": 1 * HOUR},
    # Not retried: a half-done merge request (branch pushed) is for a human to look at.
    "promote": {"timeout_seconds": 0.25 * HOUR},
    "apply-promotion": {"timeout_seconds": 0.5 * HOUR, **RETRIED},
    "release-notes": {"timeout_seconds": 0.25 * HOUR, **RETRIED},
}


class PrefectSteps(Steps):
    """Each named step runs as a Prefect task with the policy above."""

    def call(self, name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        policy = dict(POLICY.get(name, {"timeout_seconds": 1 * HOUR}))
        if "cache_key_fn" not in policy:
            policy["cache_policy"] = NO_CACHE
        # Its exception becomes the task's failed state, sent to the API: redacted first.
        redacted: Callable[..., T] = redacting(fn, os.environ)
        made = task(redacted, name=name, **policy)  # type: ignore[call-overload]
        return made(*args, **kwargs)  # type: ignore[no-any-return]
