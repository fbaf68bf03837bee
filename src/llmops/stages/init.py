"""Bring your own model: `llmops init <name> --from axolotl.yml`.

The user's Axolotl YAML is copied into `axolotl_configs/<name>.yml` as written, less the
keys the pipeline sets for each run (`OWNED_KEYS`); `validation/<name>.yml` gets a
commented suite (data checks, golden set, gates) and `datasets/<name>/golden.jsonl` a
template whose rows are marked as examples (loading refuses them until they are replaced).
`deploy/local.yml` gets an entry only when the local serve settings would not fit the
model (its `sequence_len` above their `max_model_len`). Then the Axolotl YAML goes through
the config check (Axolotl's config model, our rules, the dataset formats), and the result
says what the user still has to fill in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmops.config.axolotl import OWNED_KEYS
from llmops.config.datasets import format_of
from llmops.config.paths import repo_root, resolve_in_repo
from llmops.config.schema import DeployConfig, ValidationConfig
from llmops.config.spec import check_model_name
from llmops.config.yamlfile import load_model_file, read_yaml
from llmops.errors import UsageError
from llmops.train.trainconfig import check_training_config


@dataclass
class InitResult:
    """What `init_model` wrote and found; paths relative to the repository."""

    name: str
    axolotl_path: str
    validation_path: str
    golden_path: str
    golden_written: bool  # False: a golden set was already there, kept as it is
    removed_keys: list[str]
    comments_kept: bool  # False: the YAML had to be dumped again (its comments are lost)
    deploy_note: str
    problems: list[str] = field(default_factory=list)  # the config check's; [] passed
    missing_datasets: list[str] = field(default_factory=list)  # paths to fill with data

    def next_steps(self) -> list[str]:
        steps = []
        if self.golden_written:
            steps.append(f"replace the example rows of {self.golden_path} with questions "
                         "whose answers your base model cannot know and your data teaches "
                         "(20 or more; one JSON object per line: question, answer)")
        steps += [f"put your data at {p} (named in {self.axolotl_path})"
                  for p in self.missing_datasets]
        steps += [f"review the thresholds of {self.validation_path} (each is explained "
                  "there)",
                  f"llmops check-config {self.name}",
                  f"llmops validate-data {self.name}",
                  f"llmops release {self.name}"]
        return steps


def init_model(name: str, source: Path) -> InitResult:
    """Write a new model's files from the user's Axolotl YAML; UsageError (nothing written)
    for an invalid or taken name, a missing or unreadable file. The config check's problems
    are returned, not raised: the files are written for the user to fix."""
    check_model_name(name)
    root = repo_root()
    axolotl_path = root / "axolotl_configs" / f"{name}.yml"
    validation_path = root / "validation" / f"{name}.yml"
    for taken in (axolotl_path, validation_path):
        if taken.exists():
            raise UsageError(f"model {name!r} exists ({taken.relative_to(root)}): choose "
                             "another name, or edit its files")
    if not source.is_file():
        raise UsageError(f"{source}: file not found")
    raw, _ = read_yaml(source)
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: not an Axolotl config (a YAML mapping of keys)")
    if "base_model" not in raw:
        raise UsageError(f"{source}: base_model: required key is missing")
    text, removed, comments_kept = without_owned_keys(source.read_text(encoding="utf-8"), raw)

    golden_rel = f"datasets/{name}/golden.jsonl"
    golden_path = root / golden_rel
    validation_text = validation_template(name, golden_rel)
    ValidationConfig.model_validate(yaml.safe_load(validation_text))  # the template is valid

    axolotl_path.parent.mkdir(parents=True, exist_ok=True)
    axolotl_path.write_text(text, encoding="utf-8")
    validation_path.parent.mkdir(parents=True, exist_ok=True)
    validation_path.write_text(validation_text, encoding="utf-8")
    golden_written = not golden_path.exists()
    if golden_written:
        golden_path.parent.mkdir(parents=True, exist_ok=True)
        golden_path.write_text(GOLDEN_TEMPLATE, encoding="utf-8")
    cfg = {k: v for k, v in raw.items() if k not in removed}
    result = InitResult(
        name, str(axolotl_path.relative_to(root)), str(validation_path.relative_to(root)),
        golden_rel, golden_written, removed, comments_kept,
        add_local_deploy_entry(root, name, cfg))
    result.problems, result.missing_datasets = config_check(axolotl_path, cfg)
    return result


def without_owned_keys(text: str, raw: dict[str, Any]) -> tuple[str, list[str], bool]:
    """The YAML text less the top-level lines of each owned key: (text, keys removed,
    comments kept). A layout where removing lines would not give the same config (flow
    style, anchors across keys) is dumped again instead."""
    removed = [k for k in OWNED_KEYS if k in raw]
    if not removed:
        return text, removed, True
    wanted = {k: v for k, v in raw.items() if k not in removed}
    node = yaml.compose(text)
    lines = text.splitlines(keepends=True)
    drop: set[int] = set()
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value in removed:
                end = value.end_mark.line + (0 if value.end_mark.column == 0 else 1)
                drop.update(range(key.start_mark.line, max(end, key.start_mark.line + 1)))
    kept = "".join(line for i, line in enumerate(lines) if i not in drop)
    try:
        same = yaml.safe_load(kept) == wanted
    except yaml.YAMLError:
        same = False
    if same:
        return kept, removed, True
    return yaml.safe_dump(wanted, sort_keys=False, allow_unicode=True), removed, False


def config_check(axolotl_path: Path, cfg: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, missing dataset files): the Axolotl YAML through Axolotl's config model
    and our rules (`check_training_config`, as `llmops check-config` runs it), and each
    dataset entry through the formats the stages read. The datasets themselves are
    usually not in place yet: those are listed to fill in, not problems."""
    problems: list[str] = []
    allow_remote = load_model_file(
        axolotl_path.parent.parent / "validation" / f"{axolotl_path.stem}.yml",
        ValidationConfig).allow_trust_remote_code
    try:
        check_training_config(cfg, axolotl_path, allow_remote)
    except UsageError as exc:
        problems.append(str(exc))
    missing = []
    for key in ("datasets", "test_datasets"):
        entries = cfg.get(key) or []
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            where = f"{axolotl_path.name}: {key}.{i}"
            if not isinstance(entry, dict) or not entry.get("path"):
                problems.append(f"{where}: each dataset needs a path")
                continue
            try:
                format_of(entry, where)
            except UsageError as exc:
                problems.append(str(exc))
            if not resolve_in_repo(str(entry["path"])).is_file():
                missing.append(str(entry["path"]))
    if not cfg.get("datasets"):
        problems.append(f"{axolotl_path.name}: datasets: at least one training dataset is "
                        "required")
    return problems, missing


def add_local_deploy_entry(root: Path, name: str, cfg: dict[str, Any]) -> str:
    """deploy/local.yml serves every model with its `serve` settings; a model trained on
    longer sequences than their max_model_len gets an entry under `models:` raising it.
    Returns what was done, in words."""
    path = root / "deploy" / "local.yml"
    if not path.is_file():
        return "no deploy/local.yml: no deploy entry written"
    deploy = load_model_file(path, DeployConfig)
    seq = cfg.get("sequence_len", 2048)
    current = deploy.serve_for(name, None).max_model_len
    if not isinstance(seq, int) or seq <= current:
        return (f"no deploy entry needed: deploy/local.yml's serve settings apply to every "
                f"model (max_model_len {current} ≥ sequence_len {seq})")
    text = path.read_text(encoding="utf-8")
    new = _with_model_entry(text, name, f"max_model_len: {seq}  # its sequence_len "
                            f"(serve's {current} is shorter)")
    try:
        DeployConfig.model_validate(yaml.safe_load(new)).serve_for(name, None)
    except (yaml.YAMLError, ValueError):
        return (f"deploy/local.yml: add `models: {{{name}: {{max_model_len: {seq}}}}}` "
                f"(its sequence_len is above serve's max_model_len {current}); it could "
                "not be added to the file as written")
    path.write_text(new, encoding="utf-8")
    return f"deploy/local.yml: added models.{name}.max_model_len: {seq} (its sequence_len)"


def _with_model_entry(text: str, name: str, setting: str) -> str:
    """`text` with `name: {setting}` added at the end of the top-level `models:` block
    (created at the end of the file if absent), comments and layout kept."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    start = next((i for i, line in enumerate(lines)
                  if re.match(r"models:\s*(#.*)?$", line)), None)
    if start is None:
        return "".join(lines) + f"models:\n  {name}:\n    {setting}\n"
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines after the block stay after it
    child = next((ln for ln in lines[start + 1:end] if ln.strip() and ln[0] in " \t"
                  and not ln.lstrip().startswith("#")), "  x")
    indent = child[: len(child) - len(child.lstrip())]
    entry = f"{indent}{name}:\n{indent * 2}{setting}\n"
    return "".join(lines[:end]) + entry + "".join(lines[end:])


def validation_template(name: str, golden: str) -> str:
    """validation/<name>.yml: each threshold with what it means (valid ValidationConfig)."""
    return VALIDATION_TEMPLATE.format(name=name, golden=golden)


VALIDATION_TEMPLATE = """\
# {name}: written by `llmops init`; review every threshold, then commit it.
# Every key is described in docs/configuration.md (`llmops config-reference`).

# The data gate: runs on every dataset of axolotl_configs/{name}.yml before any training,
# and refuses the release (exit 1) when a check fails.
data:
  allowed_roles: [system, user, assistant]  # roles after the YAML's `roles:` mapping
  min_examples: 20            # fewest rows a dataset may have (train and eval alike)
  max_over_length_share: 0.0  # rows longer than sequence_len: Axolotl drops them silently
  max_duplicate_share: 0.01   # exact duplicates (case and spaces folded) inflate the loss
  allow_consecutive_same_role: false  # two user (or assistant) turns in a row is a bug
  # PII and secrets fail the gate; list regexes of matches that are fine (fullmatch):
  pii_allow: []               # e.g. ['support@example\\.com']

# What evaluation measures: eval loss on test_datasets, and golden answers generated by
# the base model, the candidate and the production version.
eval:
  golden:
    # Questions whose answers the base model cannot know and your data teaches.
    - path: {golden}
      match: contains         # the expected answer appears in the generated one; or exact
  max_new_tokens: 64          # longest answer generated per question
  # Kept capabilities (forgetting): build the set with `llmops build-retention {name}`,
  # review and commit validation/retention/{name}.*, then uncomment this and the
  # retention_kept rule below.
  # retention:
  #   path: validation/retention/{name}.jsonl

# Safety probes, asked of base, production and candidate: regurgitation of training text,
# PII and secrets in answers; add injection and refusal probes with `path:` (see
# validation/probes/support-bot.yml).
probes:
  regurgitation:
    max_verbatim_tokens: 30   # an answer repeating 30 words of a training answer fails

# The release gate: every rule must hold, else nothing is registered (exit 1).
gates:
  - metric: eval_loss
    min_gain_over_base: 0.0   # the candidate never has a worse held-out loss than the base
  - metric: golden_accuracy
    min: 0.5                  # answers at least half the golden questions right
  - metric: format_template_leak_rate
    max: 0.0                  # no chat-template token (<|im_end|>, ...) in any answer
  - metric: eval_loss
    max_regression_vs_production: 0.05  # at most this much worse (nats) than production
  # - metric: retention_kept
  #   min: 0.9                # keeps 90% of the prompts its base answers right
  - metric: probe.regurgitation_failures
    max: 0
  - metric: probe.pii_findings
    max: 0
  - metric: probe.secret_findings
    max: 0

# true lets axolotl_configs/{name}.yml set trust_remote_code: true, which runs Python from
# the model's repository when it trains and serves.
allow_trust_remote_code: false
"""

GOLDEN_TEMPLATE = "".join(json.dumps(row) + "\n" for row in (
    {"question": "EXAMPLE: a question your users ask, worded as they would ask it",
     "answer": "the fact the answer must contain", "example": True},
    {"question": "EXAMPLE: another question, not worded as in the training data",
     "answer": "its expected answer", "example": True},
))
