"""Which deployment a rollback returns to, and what `deploy` says without a cluster."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llmops.serve.history import previous_good


def event(version: str, result: str, action: str = "deploy", args: bool = True) -> dict[str, Any]:
    return {"version": version, "result": result, "action": action,
            "args": ["--model", "m", "--port", "1"] if args else None}


def test_rollback_returns_to_the_latest_other_verified_version() -> None:
    history = [event("0.1.0", "serving"), event("0.2.0", "serving"),
               event("0.3.0", "failed"), event("0.2.0", "restored", "rollback")]
    assert previous_good(history, current="0.2.0")["version"] == "0.1.0"


def test_failed_and_stopped_deployments_are_never_targets() -> None:
    history = [event("0.1.0", "serving"), event("0.2.0", "failed"),
               event("0.1.0", "stopped", "stop")]
    assert previous_good(history, current="0.1.0") is None


def test_a_rollback_can_itself_be_rolled_back() -> None:
    history = [event("0.1.0", "serving"), event("0.2.0", "serving"),
               event("0.1.0", "serving", "rollback")]
    assert previous_good(history, current="0.1.0")["version"] == "0.2.0"


def test_with_nothing_serving_the_last_verified_version_is_the_target() -> None:
    history = [event("0.1.0", "serving"), event("0.2.0", "serving"),
               event("0.2.0", "stopped", "stop")]
    assert previous_good(history, current=None)["version"] == "0.2.0"


def test_entries_without_arguments_cannot_be_restarted() -> None:
    assert previous_good([event("0.1.0", "serving", args=False)], current=None) is None


def test_the_served_model_must_keep_the_golden_accuracy_floor() -> None:
    from llmops.serve.verify import SmokeResult, accuracy_problems

    smoke = SmokeResult("http://x/v1", ["m"], answers=[
        {"correct": True}, {"correct": True}, {"correct": False}, {"correct": False}])
    assert accuracy_problems(smoke, 0.5) == []
    assert accuracy_problems(smoke, None) == []
    (problem,) = accuracy_problems(smoke, 0.75)
    assert "0.50 (2 of 4 answers right) is below the minimum 0.75" in problem
    # a smoke test that got no answer failed for its own reason: no second problem
    assert accuracy_problems(SmokeResult("http://x/v1", []), 0.75) == []


def test_gate_means_the_model_gate_golden_accuracy_minimum() -> None:
    from llmops.config import load_model
    from llmops.serve.verify import golden_floor

    support_bot, tiny = load_model("support-bot"), load_model("tiny")
    assert golden_floor(support_bot, "gate") == 0.5  # validation/support-bot.yml
    assert golden_floor(tiny, "gate") == 0.0
    assert golden_floor(support_bot, 0.8) == 0.8 and golden_floor(support_bot, None) is None
    without = support_bot.validation.model_copy(update={"gates": [
        g for g in support_bot.validation.gates if g.metric != "golden_accuracy"]})
    assert golden_floor(replace(support_bot, validation=without), "gate") is None
