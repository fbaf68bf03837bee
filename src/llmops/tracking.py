"""MLflow set-up: the embedded store by default, any tracking server by environment.

`MLFLOW_TRACKING_URI` wins when set; otherwise a SQLite store under `.llmops/` with its
artifacts beside it. One experiment per model, so that the compare view lines up runs of
the same metrics.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from llmops.config.paths import repo_root, state_dir, state_subdir
from llmops.errors import UsageError
from llmops.redact import redact

# MLflow 3's UI opens an experiment on the view its kind names (the `mlflow.experimentKind`
# tag, values of the UI's ExperimentKind: `custom_model_development` is "Machine learning",
# whose default tab is the runs table; untagged, it may open on the GenAI traces overview).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# The run tag naming the run's candidate as an MLflow 3 logged model (metrics and the
# registered version link to it).
MODEL_ID_TAG = "llmops.model_id"


def tracking_uri() -> str:
    """The MLflow tracking URI in force (exported so that subprocesses share it), without
    credentials: user and password in the URI move to MLflow's own variables.

    These are MLflow's own variables, which MLflow reads from this process's environment
    (its client's credentials, transformers' MLflow callback) and children inherit: here,
    and in `_move_credentials`, the pipeline settles them, not a setting of its own."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri and "@" in uri:
        uri = _move_credentials(uri)
    if not uri:
        uri = f"sqlite:///{state_dir() / 'mlflow.db'}"
        state_dir().mkdir(parents=True, exist_ok=True)
        os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def _move_credentials(uri: str) -> str:
    """`http://user:pw@host` → `http://host`, with MLFLOW_TRACKING_USERNAME/PASSWORD set
    (unless already set): MLflow authenticates the same, and never prints the credentials in
    the links it writes to stdout ("View run at …"), here or in the training process."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(user))
    if password:
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(password))
    clean = urlunsplit(parts._replace(netloc=host))
    os.environ["MLFLOW_TRACKING_URI"] = clean
    return clean


def artifact_root() -> str | None:
    """Where a new experiment keeps artifacts: beside the embedded store, else the server's."""
    if tracking_uri().startswith(("http://", "https://")):
        return None
    return (state_subdir("mlartifacts")).as_uri()


def experiment_id(model: str) -> str:
    """The model's experiment, created on first use; exit 2 if MLflow cannot be reached."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    try:
        found = mlflow.get_experiment_by_name(model)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made before the kind was set
                mlflow.MlflowClient().set_experiment_tag(found.experiment_id,
                                                         EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return str(found.experiment_id)
        return str(mlflow.create_experiment(model, artifact_location=artifact_root(),
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}))
    except Exception as exc:  # any transport or store failure means: cannot track
        # MLflow's own message may quote the URI: the whole message is redacted.
        raise UsageError(redact(
            f"MLflow at {tracking_uri()} is unreachable or refused the request: "
            f"{type(exc).__name__}: {str(exc)[:200]}")) from exc


def git_tags(ci_tags: Mapping[str, str]) -> dict[str, str]:
    """Commit, dirty flag and the CI identifiers (`Settings.ci_tags`), as MLflow run tags."""
    tags: dict[str, str] = {}
    root = repo_root()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    if commit := git("rev-parse", "HEAD"):
        tags["mlflow.source.git.commit"] = commit
        tags["git.dirty"] = str(bool(git("status", "--porcelain"))).lower()
    return {**tags, **ci_tags}


def ui_hint() -> str:
    """How to open the MLflow UI on the store in force."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return f".venv/bin/mlflow ui --backend-store-uri {uri} --port 5000"
    return redact(uri)
