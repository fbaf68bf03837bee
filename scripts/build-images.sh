#!/usr/bin/env bash
# build-images.sh: the CI images, for pipelines/images.yml's build-images job. Built with
# Buildah as GitLab documents for rootless builds (chroot isolation, vfs storage; no
# daemon, no privileged container) and pushed to the project's container registry:
#   $CI_REGISTRY_IMAGE/pipeline:$LLMOPS_IMAGE_TAG  docker/pipeline.Dockerfile  every job but train
#   $CI_REGISTRY_IMAGE/trainer:$LLMOPS_IMAGE_TAG   docker/trainer.Dockerfile   train (GPU)
# The tag is the hash of everything the images are built from (scripts/image-tag.sh), so a
# tag the registry already has is not built again: `buildah manifest inspect docker://…`
# finds the manifest list pushed below (when it cannot, the image is built and pushed again).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CI_REGISTRY:?}" "${CI_REGISTRY_IMAGE:?}" "${CI_REGISTRY_USER:?}" "${CI_REGISTRY_PASSWORD:?}"
: "${LLMOPS_IMAGE_TAG:?set in .gitlab-ci.yml by scripts/image-tag.sh --write}"
want=$(bash scripts/image-tag.sh)
if [ "$want" != "$LLMOPS_IMAGE_TAG" ]; then
  echo "build-images: LLMOPS_IMAGE_TAG is $LLMOPS_IMAGE_TAG but the locks, Dockerfiles and" \
       "set-up scripts give $want: run \`bash scripts/image-tag.sh --write\` and commit" >&2
  exit 1
fi
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot} STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
export REGISTRY_AUTH_FILE=${REGISTRY_AUTH_FILE:-${TMPDIR:-/tmp}/llmops-registry-auth.json}
# printf is a shell builtin: the password goes through a pipe, never on a command line.
printf '%s' "$CI_REGISTRY_PASSWORD" |
  buildah login -u "$CI_REGISTRY_USER" --password-stdin "$CI_REGISTRY"
for name in pipeline trainer; do
  image="$CI_REGISTRY_IMAGE/$name:$LLMOPS_IMAGE_TAG"
  if buildah manifest inspect "docker://$image" >/dev/null 2>&1; then
    echo "build-images: $image is already in the registry: not built again"
    continue
  fi
  echo "build-images: building $image from docker/$name.Dockerfile"
  buildah build --isolation "$BUILDAH_ISOLATION" --storage-driver "$STORAGE_DRIVER" \
    --format docker --file "docker/$name.Dockerfile" --manifest "$image" .
  buildah manifest push --all --storage-driver "$STORAGE_DRIVER" "$image" "docker://$image"
  buildah manifest rm "$image" >/dev/null  # room on the runner's disk for the next image
  buildah rmi --all --storage-driver "$STORAGE_DRIVER" >/dev/null 2>&1 || true
done
buildah logout "$CI_REGISTRY" >/dev/null 2>&1 || true
