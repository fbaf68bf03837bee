"""The Prefect tasks every flow shares: `llmops.stages` functions with orchestration policy.

- Retries only where repeating is safe (registry uploads resume, HTTP calls to GitLab), and
  only on transient failures: a refused check or bad input is never retried.
- The data gate is cached on the content of its inputs (`llmops.cachekeys`): an unchanged
  dataset, suite, tokenizer and code is not validated twice.
- Timeouts bound every stage; training's is the longest.
"""

from __future__ import annotations

import functools
import time
from datetime import timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NONE as NO_CACHE

from llmops import promote, rollout, stages
from llmops.cachekeys import data_gate_key
from llmops.errors import LlmopsError

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


# Seconds spent inside each stage function in this process (not in Prefect around it): the
# release summary reports them beside the task times, to show orchestration overhead.
WORK_SECONDS: dict[str, float] = {}


def _measured(fn: Any, name: str) -> Any:
    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            WORK_SECONDS[name] = WORK_SECONDS.get(name, 0.0) + time.perf_counter() - started
    return inner


def _task(fn: Any, name: str, timeout_s: float, **policy: Any) -> Any:
    if "cache_key_fn" not in policy:
        policy["cache_policy"] = NO_CACHE
    return task(_measured(fn, name), name=name, timeout_seconds=timeout_s, **policy)


check_config = _task(stages.check_config, "check-config", 0.1 * HOUR)
# Cached results live under PREFECT_RESULTS_LOCAL_STORAGE_PATH, which `llmops` and
# scripts/orchestrator.sh point into LLMOPS_HOME (Prefect's default, ~/.prefect/storage,
# would share them between checkouts and homes).
check_data = _task(stages.check_data, "check-data", 2 * HOUR, cache_key_fn=_data_key,
                   cache_expiration=timedelta(days=30), persist_result=True)
record_data = _task(stages.record_data, "record-data", 0.25 * HOUR, retries=3,
                    retry_delay_seconds=[5, 20, 60], retry_condition_fn=_transient)
train = _task(stages.train_stage, "train", 24 * HOUR)
evaluate = _task(stages.evaluate_stage, "evaluate", 3 * HOUR)
gate = _task(stages.gate_stage, "gate", 0.1 * HOUR)
register = _task(stages.register_stage, "register", 2 * HOUR, retries=3,
                 retry_delay_seconds=[10, 60, 180], retry_condition_fn=_transient)
deploy = _task(stages.deploy_stage, "deploy", 1 * HOUR)
verify = _task(stages.verify_stage, "verify", 1 * HOUR)
rollback = _task(rollout.rollback, "rollback", 1 * HOUR)
# Not retried here: a half-done merge request (branch pushed) is for a human to look at.
open_promotion = _task(promote.promote_mr, "open-promotion-mr", 0.25 * HOUR)
apply_promotion = _task(promote.apply_promotion, "apply-promotion", 0.5 * HOUR, retries=3,
                        retry_delay_seconds=[5, 20, 60], retry_condition_fn=_transient)


def validate_data(spec: Any, run_id: str | None = None, only: list[Any] | None = None) -> Any:
    """The data gate as flows run it: cached check, evidence logged to the run, verdict."""
    report = check_data(spec, only)
    if run_id:
        record_data(spec, run_id, report)
    return stages.require_data(report)
