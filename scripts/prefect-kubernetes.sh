#!/usr/bin/env bash
# Production orchestration on Kubernetes: create (or update) the llmops-kubernetes work pool
# from deploy/prefect-kubernetes-job-template.json and register prefect.yaml's `production`
# deployments on it, against the Prefect server in PREFECT_API_URL. A Kubernetes worker in
# the cluster runs their flow runs as Jobs:
#   prefect worker start --pool llmops-kubernetes --type kubernetes
# Needs, as in a CI job: CI_REGISTRY_IMAGE (the images, run by the digests pinned in
# .gitlab-ci.yml, scripts/image-tag.sh), CI_PROJECT_URL and CI_COMMIT_SHA (what the pods
# clone), and once LLMOPS_GIT_READ_TOKEN (a read_repository token, stored as the Secret
# block llmops-git-read-token).
#   --pool-only   create or update the work pool, register nothing
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT=${PREFECT:-.venv/bin/prefect}
POOL=llmops-kubernetes
TEMPLATE=deploy/prefect-kubernetes-job-template.json
: "${PREFECT_API_URL:?set PREFECT_API_URL to the API of the Prefect server}"

# --overwrite: a changed template replaces the pool's; its deployments and runs stay.
"$PREFECT" work-pool create "$POOL" --type kubernetes --base-job-template "$TEMPLATE" \
  --overwrite
[ "${1:-}" = --pool-only ] && exit 0

# The pods pull the images by the committed pin, never by a tag anyone with a job token
# can push (docs/operations.md#ci-images); prefect.yaml templates them from these.
for var in LLMOPS_PIPELINE_IMAGE_DIGEST LLMOPS_TRAINER_IMAGE_DIGEST; do
  digest=$(sed -n "s/^  $var: \"\{0,1\}\(sha256:[0-9a-f]*\)\"\{0,1\}\$/\1/p" .gitlab-ci.yml)
  if ! [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || [[ $digest =~ ^sha256:0{64}$ ]]; then
    echo "prefect-kubernetes: $var in .gitlab-ci.yml is ${digest:-missing}, not a built" \
         "image: pin the CI images first (docs/operations.md#ci-images)" >&2
    exit 2
  fi
  export "$var=$digest"
done
missing=()
for var in CI_REGISTRY_IMAGE CI_PROJECT_URL CI_COMMIT_SHA; do
  [ -n "${!var:-}" ] || missing+=("$var")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "prefect-kubernetes: set ${missing[*]} (prefect.yaml's production deployments use them)" >&2
  exit 2
fi
# The pods clone with a read token kept in a Prefect Secret block (resolved in the pod, never
# stored in a deployment); `prefect deploy` needs the block to exist.
if [ -n "${LLMOPS_GIT_READ_TOKEN:-}" ]; then
  "$(dirname "$PREFECT")/python" -c 'import os; from prefect.blocks.system import Secret
Secret(value=os.environ["LLMOPS_GIT_READ_TOKEN"]).save("llmops-git-read-token", overwrite=True)'
fi
"$PREFECT" --no-prompt deploy --name production
