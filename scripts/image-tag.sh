#!/usr/bin/env bash
# image-tag.sh [--write | --files | --pin TAG PIPELINE_DIGEST TRAINER_DIGEST | --check-pin]:
# LLMOPS_IMAGE_TAG, the tag of the CI images (docker/): the first 16 hex digits of a sha256
# over every file that decides their content: the locks, the Dockerfiles (whose base images
# are pinned by digest), the set-up scripts their RUN lines call, and this script and
# build-images.sh, which say how they are built. A change to any of them gives a new tag.
# GitLab reads `image:` before any job runs, so the tag is committed in .gitlab-ci.yml:
# --write puts the current one there (then commit it); tests/unit/test_dockerfiles.py fails
# while the committed one is stale. --files: the list.
# Jobs run the images by digest, never by tag (anyone with a job token can push a tag):
#   --pin TAG PIPELINE_DIGEST TRAINER_DIGEST  writes the digests that build-images pushed
#       from the default branch (its log and images.env give this command) into
#       .gitlab-ci.yml, for the current TAG only. Commit it in a merge request.
#   --check-pin  (tag pipelines' images-pinned job) fails unless the committed digests were
#       built from this commit's inputs, are not placeholders, and are the ones this job's
#       pipeline got (no pipeline variable replaced them).
set -euo pipefail
cd "$(dirname "$0")/.."
# The digest a fresh clone carries until its own default branch has built the images; the
# same convention as vLLM's image in deploy/*.yml (llmops.serve.vllm_release).
PLACEHOLDER="sha256:$(printf '0%.0s' {1..64})"
DIGEST='^sha256:[0-9a-f]{64}$'
mapfile -t files < <(printf '%s\n' requirements/*.lock docker/*.Dockerfile scripts/setup.sh \
  scripts/setup-native.sh scripts/setup-gpu.sh scripts/apt-install.sh scripts/uv.sh \
  scripts/build-images.sh scripts/image-tag.sh | LC_ALL=C sort)
if [ "${1:-}" = --files ]; then
  printf '%s\n' "${files[@]}"
  exit 0
fi
tag=$(sha256sum "${files[@]}" | sha256sum | cut -c1-16)

committed() {  # the value of a variable under `variables:` in .gitlab-ci.yml
  sed -n "s/^  $1: \"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" .gitlab-ci.yml
}
commit_value() {
  grep -q "^  $1: " .gitlab-ci.yml || {
    echo "image-tag: no $1 under variables: in .gitlab-ci.yml" >&2; exit 1; }
  sed -i "s/^  $1: .*/  $1: \"$2\"/" .gitlab-ci.yml
}
real_digest() {  # NAME VALUE: a sha256 digest that is not the placeholder
  if ! [[ $2 =~ $DIGEST ]] || [ "$2" = "$PLACEHOLDER" ]; then
    echo "image-tag: $1 is ${2:-empty}, not the digest of a built image (sha256:<64 hex>)" >&2
    return 1
  fi
}

case "${1:-}" in
  "") ;;
  --write) commit_value LLMOPS_IMAGE_TAG "$tag" ;;
  --pin)
    [ $# -eq 4 ] || { echo "usage: image-tag.sh --pin TAG PIPELINE_DIGEST TRAINER_DIGEST" >&2
                      exit 2; }
    if [ "$2" != "$tag" ]; then
      echo "image-tag: those images were built for $2, but this checkout's inputs give $tag:" \
           "pin the digests that build-images printed for $tag" >&2
      exit 1
    fi
    real_digest pipeline "$3" && real_digest trainer "$4" || exit 1
    commit_value LLMOPS_IMAGE_TAG "$tag"
    commit_value LLMOPS_PINNED_IMAGE_TAG "$tag"
    commit_value LLMOPS_PIPELINE_IMAGE_DIGEST "$3"
    commit_value LLMOPS_TRAINER_IMAGE_DIGEST "$4"
    ;;
  --check-pin)
    for name in LLMOPS_IMAGE_TAG LLMOPS_PINNED_IMAGE_TAG LLMOPS_PIPELINE_IMAGE_DIGEST \
                LLMOPS_TRAINER_IMAGE_DIGEST; do
      # A pipeline variable of the same name would change what `image:` pulls.
      if [ -n "${!name:-}" ] && [ "${!name}" != "$(committed "$name")" ]; then
        echo "image-tag: $name is ${!name} in this pipeline but $(committed "$name") in" \
             ".gitlab-ci.yml: images come only from the committed pin" >&2
        exit 1
      fi
    done
    if [ "$(committed LLMOPS_IMAGE_TAG)" != "$tag" ]; then
      echo "image-tag: LLMOPS_IMAGE_TAG is stale ($tag from the inputs): run" \
           "\`bash scripts/image-tag.sh --write\` and commit" >&2
      exit 1
    fi
    if [ "$(committed LLMOPS_PINNED_IMAGE_TAG)" != "$tag" ]; then
      echo "image-tag: the images of this commit's inputs ($tag) are not pinned (the pin is" \
           "for $(committed LLMOPS_PINNED_IMAGE_TAG)): the default branch's build-images job" \
           "prints \`bash scripts/image-tag.sh --pin $tag sha256:… sha256:…\`; merge that," \
           "then tag again" >&2
      exit 1
    fi
    real_digest LLMOPS_PIPELINE_IMAGE_DIGEST "$(committed LLMOPS_PIPELINE_IMAGE_DIGEST)" &&
      real_digest LLMOPS_TRAINER_IMAGE_DIGEST "$(committed LLMOPS_TRAINER_IMAGE_DIGEST)" ||
      exit 1
    echo "image-tag: images pinned for $tag: pipeline@$(committed LLMOPS_PIPELINE_IMAGE_DIGEST)," \
         "trainer@$(committed LLMOPS_TRAINER_IMAGE_DIGEST)" >&2
    ;;
  *) echo "usage: image-tag.sh [--write | --files | --pin TAG PIPELINE TRAINER | --check-pin]" >&2
     exit 2 ;;
esac
echo "$tag"
