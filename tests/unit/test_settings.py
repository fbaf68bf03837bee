"""The environment is read once, into Settings; the engine reads Settings, not os.environ."""

from __future__ import annotations

from llmops.config.settings import Settings


def test_settings_map_gitlab_ci_variables() -> None:
    s = Settings.from_env({
        "MLFLOW_TRACKING_URI": "https://gl.example/api/v4/projects/7/ml/mlflow",
        "MLFLOW_TRACKING_TOKEN": "t", "CI_SERVER_URL": "https://gl.example",
        "CI_PROJECT_ID": "7", "CI_API_V4_URL": "https://gl.example/api/v4",
        "CI_COMMIT_TAG": "v1.4.0", "CI_JOB_ID": "42", "GITLAB_TOKEN": "g"})
    assert s.registry_uri.endswith("/projects/7/ml/mlflow") and s.registry_token == "t"
    assert (s.gitlab_url, s.gitlab_project) == ("https://gl.example", "7")
    assert s.project_api == "https://gl.example/api/v4/projects/7"
    assert s.tag_version == "1.4.0"
    assert s.ci_tags == {"gitlab.CI_JOB_ID": "42", "gitlab.CI_COMMIT_TAG": "v1.4.0"}


def test_the_registry_may_live_apart_from_tracking() -> None:
    s = Settings.from_env({"MLFLOW_TRACKING_URI": "http://mlflow:5000",
                           "LLMOPS_REGISTRY_URI": "https://gl/api/v4/projects/9/ml/mlflow",
                           "LLMOPS_REGISTRY_TOKEN": "r", "MLFLOW_TRACKING_TOKEN": "t"})
    assert s.registry_uri.endswith("/9/ml/mlflow") and s.registry_token == "r"
    assert Settings.from_env({}).tag_version is None and Settings.from_env({}).project_api is None


def test_quiet_training_is_read_with_the_settings() -> None:
    """LLMOPS_QUIET_TRAIN=1 keeps the trainer's lines in train.log (CI logs, e2e tests)."""
    assert Settings.from_env({"LLMOPS_QUIET_TRAIN": "1"}).quiet_train is True
    assert Settings.from_env({"LLMOPS_QUIET_TRAIN": "0"}).quiet_train is False
    assert Settings.from_env({}).quiet_train is False
