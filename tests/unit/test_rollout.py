"""Which deployment a rollback returns to, and what `deploy` says without a cluster."""

from __future__ import annotations

from typing import Any

from llmops.rollout import previous_good


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
