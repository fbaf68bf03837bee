"""Promotion by merge request: `registry/<env>.yml` says which version runs where.

`promote` refuses a version that failed its gates or whose digest does not match, then
either edits the pin file (`--local`) or opens a merge request that changes it, carrying
the gate report as evidence. Once merged, CI runs `apply-promotion`, which checks every pin
against the registry and (for the MLflow backend) points the `<env>` alias at it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmops.config import Pin, RegistryPins, load_pins
from llmops.config.paths import repo_root
from llmops.config.settings import Settings
from llmops.errors import CheckFailed, UsageError
from llmops.registry.base import MlflowRegistry, ModelVersion, Registry

GITLAB_TIMEOUT_S = 60.0
PIN_HEADER = "# Which version of each model runs in {env}: changed by merge request only " \
             "(llmops promote).\n"


def registry_backend(settings: Settings) -> Registry:
    """GitLab's registry when the registry URI points at GitLab's /ml/mlflow, else MLflow's.

    The registry URI is `LLMOPS_REGISTRY_URI`, defaulting to `MLFLOW_TRACKING_URI`: runs can
    be tracked on one MLflow server while versions live in GitLab's registry.
    """
    uri, token = settings.registry_uri, settings.registry_token
    if "/api/v4/projects/" in uri and uri.rstrip("/").endswith("/ml/mlflow"):
        from llmops.registry.gitlab import GitlabRegistry

        if not token:
            raise UsageError("the registry is GitLab's: set MLFLOW_TRACKING_TOKEN (or "
                             "LLMOPS_REGISTRY_TOKEN) to a project access token with api scope")
        return GitlabRegistry.from_tracking_uri(uri, token, settings.signing)
    return MlflowRegistry(settings.signing)


def pins_yaml(env: str, pins: RegistryPins) -> str:
    """The pin file's text: a header comment, then models sorted by name."""
    body = {"models": {k: v.model_dump() for k, v in sorted(pins.models.items())}}
    return PIN_HEADER.format(env=env) + yaml.safe_dump(body, sort_keys=False)


def checked_version(registry: Registry, model: str, version: str) -> ModelVersion:
    """The version, refused if its gate did not pass or its files were never sealed."""
    mv = registry.get(model, version)
    if mv.tags.get("gate.passed") != "true":
        raise CheckFailed(f"{model} {version} did not pass its release gate "
                          f"(gate.passed={mv.tags.get('gate.passed', 'missing')}); "
                          "it cannot be promoted")
    if not mv.digest.startswith("sha256:"):
        raise CheckFailed(f"{model} {version} has no manifest digest; it cannot be promoted")
    return mv


def new_pins(env: str, model: str, mv: ModelVersion) -> RegistryPins:
    pins = load_pins(env)
    return RegistryPins(models={**pins.models, model: Pin(version=mv.version, digest=mv.digest)})


def promote_local(model: str, version: str, env: str, registry: Registry) -> Path:
    """Edit registry/<env>.yml in place (atomically), for laptop use."""
    mv = checked_version(registry, model, version)
    path = repo_root() / "registry" / f"{env}.yml"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{env}.", suffix=".yml")
    with os.fdopen(fd, "w") as fh:
        fh.write(pins_yaml(env, new_pins(env, model, mv)))
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class MergeRequest:
    iid: int
    web_url: str
    branch: str


def gitlab_project(settings: Settings) -> Any:
    """The CI project through python-gitlab (CI_SERVER_URL / GITLAB_URL, GITLAB_TOKEN)."""
    import gitlab

    url, token, project = settings.gitlab_url, settings.gitlab_token, settings.gitlab_project
    if not (url and token and project):
        raise UsageError("promotion by merge request needs GITLAB_URL (or CI_SERVER_URL), "
                         "GITLAB_TOKEN and GITLAB_PROJECT (or CI_PROJECT_ID); "
                         "use --local to edit the pin file instead")
    from llmops.registry.gitlab import TokenSafeSession

    # A timeout on every call: a stalled GitLab fails the promotion instead of hanging it.
    # The token-safe session: the token never follows a redirect to another origin.
    return gitlab.Gitlab(url, private_token=token, timeout=GITLAB_TIMEOUT_S,
                         session=TokenSafeSession()).projects.get(project)


def pins_at(project: Any, path: str, ref: str) -> RegistryPins | None:
    """The pin file as it is at `ref` in GitLab (raw-file API); None when it is not there."""
    import gitlab

    try:
        text = project.files.raw(file_path=path, ref=ref)
    except gitlab.exceptions.GitlabGetError as exc:
        if exc.response_code == 404:  # never promoted to this environment: a new file
            return None
        raise
    try:
        return RegistryPins.model_validate(yaml.safe_load(text) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise UsageError(f"{path} at {ref} in GitLab is not a valid pin file ({exc}); fix it "
                         "on the default branch, then promote again") from exc


def promote_mr(model: str, version: str, env: str, registry: Registry, project: Any,
               evidence: str, reason: str | None = None) -> MergeRequest:
    """Commit the pin change on a branch and open (or update) its merge request, carrying
    the gate evidence.

    The pin file is read as it is at the head of the target branch and only `model`'s entry
    changes, committed on top of that very head: a stale local checkout never reverts
    another model's pin (and should the target move before the merge, GitLab merges or
    reports a conflict; it does not overwrite). A re-run resets the same branch onto the
    target's new head and updates the open merge request instead of failing on them.
    """
    mv = checked_version(registry, model, version)
    path = f"registry/{env}.yml"
    target = project.default_branch
    # A re-pin after a rollback has its own branch and title: it says why, and it never
    # reuses a promotion's branch.
    branch = f"{'repin' if reason else 'promote'}/{model}-{version}-to-{env}"
    head = project.branches.get(target).commit["id"]
    pins = pins_at(project, path, head)
    pin = Pin(version=mv.version, digest=mv.digest)
    if pins is not None and pins.models.get(model) == pin:
        raise UsageError(f"{path} on {target} already pins {model} {version} (digest "
                         f"{mv.digest}): nothing to promote")
    models = {**(pins.models if pins is not None else {}), model: pin}
    title = (f"Pin {model} {version} in {env} again (rolled back)" if reason
             else f"Promote {model} {version} to {env}")
    project.commits.create({
        "branch": branch, "start_sha": head, "force": True,  # the branch: head + this commit
        "commit_message": title,
        "actions": [{"action": "create" if pins is None else "update", "file_path": path,
                     "content": pins_yaml(env, RegistryPins(models=models))}],
    })
    description = promotion_description(model, mv, env, evidence)
    if reason:
        description = (f"**{env} was rolled back**: {reason}\n\nThis pins the version that "
                       f"serves now, so that the next `apply-promotion` does not deploy the "
                       f"one that failed.\n\n{description}")
    found = project.mergerequests.list(source_branch=branch, target_branch=target,
                                       state="opened", get_all=False)
    if found:  # a re-run: bring the open merge request up to date
        mr = found[0]
        mr.title, mr.description = title, description
        mr.save()
    else:
        mr = project.mergerequests.create({
            "source_branch": branch, "target_branch": target, "title": title,
            "description": description, "remove_source_branch": True,
        })
    return MergeRequest(int(mr.iid), str(mr.web_url), branch)


def promotion_description(model: str, mv: ModelVersion, env: str, evidence: str) -> str:
    return (f"Promotes **{model} {mv.version}** to `{env}`.\n\n"
            f"- registry version: {mv.version} (id {mv.registry_id}), digest `{mv.digest}`\n"
            f"- MLflow run: `{mv.run_id}`\n"
            f"- base model: `{mv.base_model}`\n\n{evidence}\n\n"
            "Merging this deploys it (CI: `llmops apply-promotion`).\n")


def gate_evidence(registry: Registry, mv: ModelVersion) -> str:
    """The version's own gate_report.md (base / production / candidate per rule)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.download(mv, Path(tmp) / "v")
        report = folder / "gate_report.md"
        return report.read_text() if report.is_file() else "(no gate report in this version)"


def apply_promotion(env: str, registry: Registry) -> list[ModelVersion]:
    """Check every pin of registry/<env>.yml against the registry; set `<env>` aliases."""
    applied = []
    for model, pin in load_pins(env).models.items():
        # The same checks as `promote`: a pin file edited by hand, not by `promote`, must
        # not deploy a version that failed its gate (or was never sealed).
        mv = checked_version(registry, model, pin.version)
        if mv.digest != pin.digest:
            raise CheckFailed(f"registry/{env}.yml pins {model} {pin.version} at {pin.digest}, "
                              f"but the registry holds {mv.digest}; refusing to apply")
        registry.set_alias(model, env, mv)
        applied.append(mv)
    return applied
