#!/usr/bin/env bash
# image-tag.sh [--write | --files]: LLMOPS_IMAGE_TAG, the tag of the CI images (docker/):
# the first 16 hex digits of a sha256 over what they are built from (the locks, the
# Dockerfiles, the set-up scripts their RUN lines call). A lock that changes gives a new
# tag, hence a new image. GitLab reads `image:` before any job runs, so the tag is committed
# in .gitlab-ci.yml: --write puts the current one there (then commit it);
# tests/unit/test_dockerfiles.py fails while the committed one is stale. --files: the list.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(printf '%s\n' requirements/*.lock docker/*.Dockerfile scripts/setup.sh \
  scripts/setup-native.sh scripts/setup-gpu.sh scripts/apt-install.sh scripts/uv.sh | LC_ALL=C sort)
if [ "${1:-}" = --files ]; then
  printf '%s\n' "${files[@]}"
  exit 0
fi
tag=$(sha256sum "${files[@]}" | sha256sum | cut -c1-16)
if [ "${1:-}" = --write ]; then
  grep -q '^  LLMOPS_IMAGE_TAG: ' .gitlab-ci.yml || {
    echo "image-tag: no LLMOPS_IMAGE_TAG under variables: in .gitlab-ci.yml" >&2; exit 1; }
  sed -i "s/^  LLMOPS_IMAGE_TAG: .*/  LLMOPS_IMAGE_TAG: \"$tag\"/" .gitlab-ci.yml
fi
echo "$tag"
