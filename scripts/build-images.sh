#!/usr/bin/env bash
# build-images.sh: the CI images, for pipelines/images.yml's build-images job. Built with
# Buildah as GitLab documents for rootless builds (chroot isolation, vfs storage; no
# daemon, no privileged container):
#   pipeline  docker/pipeline.Dockerfile  every job but train
#   trainer   docker/trainer.Dockerfile   train (GPU)
# LLMOPS_PUSH_IMAGES (set by the job's rules) chooses what happens to them:
#   false  (merge requests) build only, to show that the change builds. No login, no push:
#          nothing an unprotected pipeline builds reaches the registry through this job.
#   true   (the protected default branch) build, push as $CI_REGISTRY_IMAGE/<name>:$LLMOPS_IMAGE_TAG
#          and write the digests of what was pushed to images.env, with the command that
#          pins them in .gitlab-ci.yml. Jobs pull the pinned digests, never the tag: a job
#          token from any pipeline can push that tag, so an image already under it is never
#          reused either.
# Exit 3 (allowed to fail, a warning): pushed, not yet pinned, so the pipeline goes on in the
# images pinned before. Exit 1 when no images are pinned yet: no other job could start.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLMOPS_IMAGE_TAG:?set in .gitlab-ci.yml by scripts/image-tag.sh --write}"
push=${LLMOPS_PUSH_IMAGES:-false}
want=$(bash scripts/image-tag.sh)
if [ "$want" != "$LLMOPS_IMAGE_TAG" ]; then
  echo "build-images: LLMOPS_IMAGE_TAG is $LLMOPS_IMAGE_TAG but the locks, Dockerfiles and" \
       "build scripts give $want: run \`bash scripts/image-tag.sh --write\` and commit" >&2
  exit 1
fi

# Base images by digest: a tag on Docker Hub or NGC can be moved to other content.
placeholder="sha256:$(printf '0%.0s' {1..64})"
for dockerfile in docker/*.Dockerfile; do
  while read -r base; do
    name=${base%@*}
    if [ "${base#*@}" = "$placeholder" ]; then
      echo "build-images: $dockerfile: the digest of $name is a placeholder (sha256:0000…):" \
           "pin the real one, which \`skopeo inspect --format '{{.Digest}}' docker://$name\`" \
           "prints (or the first Digest: line of \`docker buildx imagetools inspect $name\`)," \
           "then run \`bash scripts/image-tag.sh --write\`" >&2
      exit 1
    fi
    if ! [[ $base =~ @sha256:[0-9a-f]{64}$ ]]; then
      echo "build-images: $dockerfile: FROM $base is not pinned by digest: write" \
           "$name@sha256:<digest> (\`skopeo inspect --format '{{.Digest}}' docker://$name\`)" >&2
      exit 1
    fi
  done < <(awk 'toupper($1) == "FROM" { for (i = 2; i <= NF; i++) if ($i !~ /^--/) {
                                          print $i; break } }' "$dockerfile")
done

export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot} STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
case "$push" in
  false) ;;
  true)
    # The job's rules already say this; the script is the last line before the credentials.
    if [ "${CI_COMMIT_REF_PROTECTED:-}" != true ] ||
       [ "${CI_PIPELINE_SOURCE:-}" = merge_request_event ]; then
      echo "build-images: pushing needs a protected branch's pipeline, not a merge request's" \
           "(CI_COMMIT_REF_PROTECTED=${CI_COMMIT_REF_PROTECTED:-unset}," \
           "CI_PIPELINE_SOURCE=${CI_PIPELINE_SOURCE:-unset}): refused" >&2
      exit 1
    fi
    : "${CI_REGISTRY:?}" "${CI_REGISTRY_IMAGE:?}" "${CI_REGISTRY_USER:?}" "${CI_REGISTRY_PASSWORD:?}"
    export REGISTRY_AUTH_FILE=${REGISTRY_AUTH_FILE:-${TMPDIR:-/tmp}/llmops-registry-auth.json}
    # printf is a shell builtin: the password goes through a pipe, never on a command line.
    printf '%s' "$CI_REGISTRY_PASSWORD" |
      buildah login -u "$CI_REGISTRY_USER" --password-stdin "$CI_REGISTRY"
    ;;
  *) echo "build-images: LLMOPS_PUSH_IMAGES is '$push': true or false" >&2; exit 2 ;;
esac

digests=$(mktemp -d)
trap 'rm -rf "$digests"' EXIT
for name in pipeline trainer; do
  built="localhost/llmops-$name:$LLMOPS_IMAGE_TAG"  # a local name: nothing to push by mistake
  echo "build-images: building $name from docker/$name.Dockerfile"
  buildah build --isolation "$BUILDAH_ISOLATION" --storage-driver "$STORAGE_DRIVER" \
    --format docker --file "docker/$name.Dockerfile" --manifest "$built" .
  if [ "$push" = true ]; then
    image="$CI_REGISTRY_IMAGE/$name:$LLMOPS_IMAGE_TAG"
    # --digestfile: the digest of what this job pushed, not of whatever the tag names later.
    buildah manifest push --all --storage-driver "$STORAGE_DRIVER" \
      --digestfile "$digests/$name" "$built" "docker://$image"
    if ! [[ $(cat "$digests/$name" 2>/dev/null) =~ ^sha256:[0-9a-f]{64}$ ]]; then
      echo "build-images: buildah wrote no digest for $image" >&2
      exit 1
    fi
  fi
  buildah manifest rm "$built" >/dev/null  # room on the runner's disk for the next image
  buildah rmi --all --storage-driver "$STORAGE_DRIVER" >/dev/null 2>&1 || true
done
if [ "$push" = false ]; then
  echo "build-images: both images build; not pushed (only the protected default branch pushes)"
  exit 0
fi
buildah logout "$CI_REGISTRY" >/dev/null 2>&1 || true

pipeline=$(cat "$digests/pipeline") trainer=$(cat "$digests/trainer")
printf '%s\n' "LLMOPS_PINNED_IMAGE_TAG=$LLMOPS_IMAGE_TAG" \
  "LLMOPS_PIPELINE_IMAGE_DIGEST=$pipeline" "LLMOPS_TRAINER_IMAGE_DIGEST=$trainer" > images.env
echo "build-images: pushed $CI_REGISTRY_IMAGE/pipeline@$pipeline"
echo "build-images: pushed $CI_REGISTRY_IMAGE/trainer@$trainer"
echo "build-images: jobs run these once pinned; commit this in a merge request:"
echo "  bash scripts/image-tag.sh --pin $LLMOPS_IMAGE_TAG $pipeline $trainer"
if [ "${LLMOPS_PINNED_IMAGE_TAG:-}" = "$LLMOPS_IMAGE_TAG" ]; then
  exit 0
elif [ "${LLMOPS_PIPELINE_IMAGE_DIGEST:-$placeholder}" = "$placeholder" ]; then
  echo "build-images: no images are pinned yet: no other job can start until you pin these" >&2
  exit 1
fi
echo "build-images: until then, jobs run the images pinned for ${LLMOPS_PINNED_IMAGE_TAG:-?}" >&2
exit 3
