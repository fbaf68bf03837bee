"""`llmops doctor`: what this machine computes with, the plan decided from it, and what a
newcomer's machine may lack before a first release (Python, disk, memory, TCMalloc, the
serving environment, a free local port, base models it can reach)."""

from __future__ import annotations

import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from llmops.compute import ComputePlan, machine_plan
from llmops.config import known_models, load_model
from llmops.config.paths import state_dir
from llmops.config.schema import is_hub_id
from llmops.errors import UsageError
from llmops.process.native import tcmalloc

MIN_FREE_DISK_GIB = 10.0  # two environments' models, runs and the vLLM compile cache
MIN_MEMORY_GIB = 8.0  # a 135M model's training beside a vLLM CPU server


@dataclass(frozen=True)
class Check:
    """One thing a release needs: passed (True), missing (False) or slower without (None)."""

    name: str
    ok: bool | None
    detail: str


@dataclass(frozen=True)
class DoctorReport:
    plan: ComputePlan
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)


def doctor() -> DoctorReport:
    """The machine's plan and every check."""
    plan = machine_plan()
    checks = [python_check(), disk_check(state_dir()), memory_check(plan), tcmalloc_check(),
              serving_env_check(), port_check()]
    checks += base_model_checks()
    return DoctorReport(plan, checks)


def python_check() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    return Check("python", sys.version_info[:2] == (3, 11),
                 f"{version}" + ("" if sys.version_info[:2] == (3, 11) else
                                 ": the locks are for CPython 3.11 (`make setup` builds with "
                                 "python3.11)"))


def disk_check(where: Path) -> Check:
    probe = where if where.exists() else where.parent
    free = shutil.disk_usage(probe).free / 2**30
    ok = free >= MIN_FREE_DISK_GIB
    return Check("disk", ok, f"{free:.0f} GiB free at {probe}" + (
        "" if ok else f": a release needs about {MIN_FREE_DISK_GIB:.0f} GiB"))


def memory_check(plan: ComputePlan) -> Check:
    from llmops.compute.machine import detect

    memory = detect().memory_gib
    ok = memory >= MIN_MEMORY_GIB
    return Check("memory", ok, f"{memory:g} GiB, {plan.cores} cores" + (
        "" if ok else f": training beside a vLLM server needs about {MIN_MEMORY_GIB:g} GiB"))


def tcmalloc_check() -> Check:
    found = tcmalloc()
    return Check("tcmalloc", True if found else None, found or
                 "missing: training and serving run slower (sudo apt-get install "
                 "libtcmalloc-minimal4, or `make setup` as root)")


def serving_env_check() -> Check:
    from llmops.serve.process import serve_python

    try:
        python = serve_python()
    except UsageError as exc:
        return Check("serving environment", False, str(exc))
    return Check("serving environment", True, str(python.parent.parent))


def port_check(host: str = "127.0.0.1") -> Check:
    try:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    except OSError as exc:
        return Check("local ports", False, f"cannot listen on {host}: {exc}")
    return Check("local ports", True, f"{host} can listen (e.g. {port})")


def base_model_checks() -> list[Check]:
    """Each model's base model: one this machine builds, a local folder, or a Hub id it
    has a copy of or can download (`check-config` refuses the others)."""
    from llmops.config.paths import resolve_in_repo
    from llmops.models.base import BUILDERS, unreachable_base_model

    out = []
    for name in known_models():
        label = f"base model of {name}"
        try:
            base = load_model(name).base_model
        except UsageError as exc:
            out.append(Check(label, False, str(exc)))
            continue
        if Path(base).name in BUILDERS and Path(base).parent.name == "models":
            out.append(Check(label, True, f"{base} (built here on first use)"))
        elif resolve_in_repo(base).is_dir():
            out.append(Check(label, True, str(resolve_in_repo(base))))
        elif is_hub_id(base):
            why = unreachable_base_model(base)
            out.append(Check(label, why is None, why or f"{base} (the Hub's cache or a "
                             "download)"))
        else:
            out.append(Check(label, False, f"{base}: no such folder"))
    return out
