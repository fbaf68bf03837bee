"""A version's provenance: an in-toto Statement with a SLSA v1 provenance predicate,
`provenance.json` among the version's files (listed in its manifest, so covered by the
digest and by `model.sig`: signing the version signs its provenance).

It holds only what every try of one `register` job computes alike (a retry must reach the
same digest): the commit, the pipeline and the job's name, the images by digest, the locks'
sha256, the datasets' sha256, the training run, the gate report's sha256, the engine
version, the base model's identity. The job's id and URL are the version's tags.

`check` compares a statement with what this machine can reach, and says which digests it
could not check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.digests import sha256_file

PROVENANCE = "provenance.json"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://gitlab.com/llmops/release-pipeline/register/v1"
# The files of a version that are the build's products (in-toto subjects).
WEIGHTS = ("adapter_model.safetensors", "adapter_config.json")


@dataclass(frozen=True)
class BuildFacts:
    """What a registration knows about how the version was made."""

    model: str
    run_id: str
    commit: str
    base_model: str
    base_identity: dict[str, str]  # base_model.digest or base_model.revision
    datasets: list[dict[str, Any]]  # data_report's entries: path, split, sha256
    locks: dict[str, str]  # repository path → sha256
    images: dict[str, str]  # name → image@sha256:… (CI's pinned images)
    engine: str  # the vLLM release that evaluated and serves
    ci: dict[str, str]  # pipeline id/URL, job name, project, ref: alike on every retry
    builder: str  # the CI pipeline URL, or `local`


def statement(facts: BuildFacts, folder: Path) -> dict[str, Any]:
    """The in-toto Statement (v1) of the version's folder, SLSA provenance v1 predicate."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2 as slsa
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    subjects = [ResourceDescriptor(name=rel, digest={"sha256": sha256_file(folder / rel)}).pb
                for rel in _products(folder)]
    deps = [ResourceDescriptor(name=f"dataset:{d['path']}", digest={"sha256": d["sha256"]},
                               annotations={"split": d.get("split", "")}).pb
            for d in facts.datasets if d.get("sha256")]
    deps += [ResourceDescriptor(name=f"lock:{path}", digest={"sha256": sha}).pb
             for path, sha in sorted(facts.locks.items())]
    deps += [ResourceDescriptor(name=f"image:{name}", uri=ref,
                                digest={"sha256": ref.rsplit("@sha256:", 1)[1]}).pb
             for name, ref in sorted(facts.images.items()) if "@sha256:" in ref]
    base = {"sha256": facts.base_identity["base_model.digest"].removeprefix("sha256:")} \
        if "base_model.digest" in facts.base_identity else {}
    deps.append(ResourceDescriptor(
        name=f"base_model:{facts.base_model}", digest=base or None,
        annotations={k: v for k, v in facts.base_identity.items()
                     if k == "base_model.revision"} or None).pb)
    if facts.commit:
        deps.append(ResourceDescriptor(name="source", digest={"gitCommit": facts.commit}).pb)
    gate = folder / "gate_report.json"
    byproducts = [ResourceDescriptor(name="gate_report.json",
                                     digest={"sha256": sha256_file(gate)}).pb] \
        if gate.is_file() else []
    byproducts.append(ResourceDescriptor(name=f"mlflow_run:{facts.run_id}").pb)
    predicate = slsa.Provenance(
        build_definition=slsa.BuildDefinition(build_type=BUILD_TYPE,
                                              resolved_dependencies=deps),
        run_details=slsa.RunDetails(
            builder=slsa.Builder(id=facts.builder, version={"vllm": facts.engine}),
            metadata=slsa.BuildMetadata(invocation_id=facts.ci.get("CI_PIPELINE_ID", "")),
            byproducts=byproducts))
    predicate.build_definition.external_parameters.update(
        {"model": facts.model, "commit": facts.commit, **facts.ci})
    predicate.build_definition.internal_parameters.update({"run_id": facts.run_id})
    made = Statement(subjects, SLSA_PROVENANCE, json_format.MessageToDict(predicate))
    made.validate()
    return json_format.MessageToDict(made.pb)


def write(facts: BuildFacts, folder: Path) -> Path:
    """`folder/provenance.json`, deterministic for the same facts and files."""
    path = folder / PROVENANCE
    path.write_text(json.dumps(statement(facts, folder), indent=1, sort_keys=True) + "\n")
    return path


def _products(folder: Path) -> list[str]:
    found = [rel for rel in WEIGHTS if (folder / rel).is_file()]
    merged = folder / "merged"
    if merged.is_dir():
        found += sorted(str(p.relative_to(folder)) for p in merged.rglob("*") if p.is_file())
    return found


def signed_base(folder: Path) -> tuple[str | None, str | None]:
    """The base model a verified version's own files name (its resolved `axolotl.yml`) and
    the digest its provenance records for it: the version's tags are not signed, so these
    are what a deploy trusts."""
    import yaml

    name = digest = None
    config = folder / "axolotl.yml"
    if config.is_file():
        loaded = yaml.safe_load(config.read_text()) or {}
        name = str(loaded["base_model"]) if isinstance(loaded, dict) and \
            loaded.get("base_model") else None
    statement = folder / PROVENANCE
    if statement.is_file():
        deps = ((json.loads(statement.read_text()).get("predicate") or {})
                .get("buildDefinition") or {}).get("resolvedDependencies") or []
        for dep in deps:
            if str(dep.get("name", "")).startswith("base_model:") and \
                    (dep.get("digest") or {}).get("sha256"):
                digest = "sha256:" + str(dep["digest"]["sha256"])
    return name, digest


# --- checking -------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One claim of the statement: `ok` True (matches), False (differs) or None (could not
    be checked here), with what was compared."""

    what: str
    ok: bool | None
    detail: str


def summary(doc: Mapping[str, Any]) -> dict[str, str]:
    """The few lines a model card or release notes show."""
    pred = doc.get("predicate") or {}
    params = (pred.get("buildDefinition") or {}).get("externalParameters") or {}
    deps = (pred.get("buildDefinition") or {}).get("resolvedDependencies") or []
    builder = ((pred.get("runDetails") or {}).get("builder") or {})
    return {"commit": str(params.get("commit") or "unknown"),
            "pipeline": str(params.get("CI_PIPELINE_URL") or "not built in CI"),
            "builder": str(builder.get("id") or ""),
            "engine": str((builder.get("version") or {}).get("vllm") or ""),
            "datasets": str(sum(1 for d in deps if str(d.get("name")).startswith("dataset:"))),
            "images": ", ".join(str(d.get("uri")) for d in deps
                                if str(d.get("name")).startswith("image:")) or "none",
            "locks": str(sum(1 for d in deps if str(d.get("name")).startswith("lock:")))}


def check(doc: Mapping[str, Any], folder: Path, repo: Path,
          file_at_commit: Callable[[str, str], bytes | None],
          run_exists: Callable[[str], bool | None],
          base_digest: Callable[[str], str | None]) -> list[Check]:
    """Every digest of the statement against what can be reached: the version's own files,
    the datasets and locks in this checkout (the build's commit when git has it), the
    training run in the tracking store, the base model; images cannot be checked here."""
    out: list[Check] = []
    for subject in doc.get("subject") or []:
        rel, want = str(subject.get("name")), (subject.get("digest") or {}).get("sha256")
        path = folder / rel
        have = sha256_file(path) if path.is_file() else None
        out.append(Check(f"file {rel}", have == want, "matches" if have == want else
                         f"sha256 {have or 'missing'} != {want}"))
    pred = doc.get("predicate") or {}
    build = pred.get("buildDefinition") or {}
    commit = str((build.get("externalParameters") or {}).get("commit") or "")
    for dep in build.get("resolvedDependencies") or []:
        name, digest = str(dep.get("name", "")), dep.get("digest") or {}
        kind, _, ref = name.partition(":")
        if kind == "dataset":
            inside = (repo / ref).resolve().is_relative_to(repo.resolve())
            out.append(_file_check(name, repo / ref, digest.get("sha256")) if inside else
                       Check(name, None, "outside this checkout: not read"))
        elif kind == "lock":
            out.append(_lock_check(name, ref, digest.get("sha256"), commit, repo,
                                   file_at_commit))
        elif kind == "image":
            out.append(Check(name, None, f"{dep.get('uri')}: no registry access from here; "
                                         "compare with `skopeo inspect` or the pipeline's "
                                         "images.env"))
        elif kind == "base_model" and digest.get("sha256"):
            have = base_digest(ref)
            want = "sha256:" + str(digest["sha256"])
            out.append(Check(name, None if have is None else have == want,
                             "not on this machine" if have is None else
                             ("matches" if have == want else f"{have} != {want}")))
        elif kind == "source":
            known = file_at_commit(digest.get("gitCommit", ""), "") is not None
            out.append(Check(f"commit {digest.get('gitCommit')}", True if known else None,
                             "in this repository's history" if known else
                             "not in this clone's history (fetch it to check the locks)"))
    for product in (pred.get("runDetails") or {}).get("byproducts") or []:
        name = str(product.get("name", ""))
        if name == "gate_report.json":
            out.append(_file_check(name, folder / name,
                                   (product.get("digest") or {}).get("sha256")))
        elif name.startswith("mlflow_run:"):
            found = run_exists(name.partition(":")[2])
            out.append(Check(name, found, {True: "in the tracking store", False: "not in the "
                                           "tracking store", None: "tracking store not "
                                           "reachable"}[found]))
    return out


def _file_check(what: str, path: Path, want: str | None) -> Check:
    if not path.is_file():
        return Check(what, None, f"{path} is not here")
    have = sha256_file(path)
    return Check(what, have == want, "matches" if have == want else f"sha256 {have} != {want}")


def _lock_check(what: str, rel: str, want: str | None, commit: str, repo: Path,
                file_at_commit: Callable[[str, str], bytes | None]) -> Check:
    body = file_at_commit(commit, rel) if commit else None
    if body is not None:
        have = hashlib.sha256(body).hexdigest()
        return Check(what, have == want, f"at {commit[:12]}: " + (
            "matches" if have == want else f"sha256 {have} != {want}"))
    check = _file_check(what, repo / rel, want)
    return Check(what, check.ok if check.ok else None,
                 f"the build's commit is not here; this checkout's file: {check.detail}")
