#!/usr/bin/env bash
# A TEST HARNESS, not part of the product: KEDA's ScaledObject CRD for the simulated cluster,
# once per machine, into a cache outside the clone keyed by KEDA's version:
#   ${LLMOPS_CACHE:-~/.cache/llmops}/k8s-sim/keda-v$KEDA_VERSION/scaledobjects.keda.sh.yaml
# KEDA's own CRD files are on its repository and release pages, which these machines cannot
# reach (nor the Go module proxy); its schema comes from PyPI (cloudcoil-models-keda, models
# generated from KEDA's CRDs), pinned by hash, turned into a CRD by keda_crd.py.
# Warm: returns at once. Prints the CRD's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
KEDA_VERSION=2.16.1
ROOT=${LLMOPS_CACHE:-$HOME/.cache/llmops}/k8s-sim/keda-v$KEDA_VERSION
CRD=$ROOT/scaledobjects.keda.sh.yaml
if [ -s "$CRD" ]; then echo "$CRD"; exit 0; fi

mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9
if [ -s "$CRD" ]; then echo "$CRD"; exit 0; fi

STAGE=$ROOT/stage
rm -rf "$STAGE" && mkdir -p "$STAGE"
cat > "$STAGE/requirements.txt" <<EOF
cloudcoil==0.6.0 \\
    --hash=sha256:91793dea2e86ad292af143c5d335ce2e5d27dfbe66fd4b945c2f069224cf7698
cloudcoil-models-keda==$KEDA_VERSION.0 \\
    --hash=sha256:9ec4a118def872b68216d9057ef386701b32fcb0ec2173f49c6214d309176b46
EOF
UV=$(bash scripts/uv.sh)
# Their own dependencies (pydantic, httpx, PyYAML) are the pipeline environment's.
"$UV" pip install -q --no-deps --require-hashes --python .venv/bin/python \
  --target "$STAGE/py" -r "$STAGE/requirements.txt" >&2
PYTHONPATH=$STAGE/py .venv/bin/python scripts/k8s-sim/keda_crd.py "$STAGE/crd.yaml"
# Put in place only when complete: an interrupted run leaves no half a cache.
mv "$STAGE/crd.yaml" "$CRD"
rm -rf "$STAGE"
echo "$CRD"
