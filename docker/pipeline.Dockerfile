# The CI jobs' image (every job but train): .venv and .venv-serve built at /opt/llmops from
# requirements/pipeline.lock and serve.lock by the project's own set-up scripts, as `make
# setup` builds them on a laptop; TCMalloc; git (diffs) and make (`make test`) for the jobs.
# A job's before_script, `bash scripts/setup.sh`, links both environments into its checkout
# (LLMOPS_PREBUILT_VENVS) and installs the checkout's package, in seconds; the image holds
# no package (LLMOPS_ENVIRONMENTS_ONLY), so every file it is built from is in its tag.
# Built and pushed by the default branch's build-images job (pipelines/images.yml); jobs run
# it as $CI_REGISTRY_IMAGE/pipeline@$LLMOPS_PIPELINE_IMAGE_DIGEST (scripts/image-tag.sh).
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

WORKDIR /opt/llmops
COPY requirements/*.lock requirements/
COPY scripts/setup.sh scripts/setup-native.sh scripts/apt-install.sh scripts/uv.sh scripts/
# kubectl for the deploy, verify and rollback jobs: Debian's kubernetes-client (1.20, the
# release the project's cluster tests run against, tests/k8s_sim). kubectl supports API
# servers one minor release either side: for a newer cluster, install its release instead.
RUN bash scripts/apt-install.sh git make kubernetes-client \
    && bash scripts/setup-native.sh \
    && UV_NO_CACHE=1 LLMOPS_ENVIRONMENTS_ONLY=1 bash scripts/setup.sh \
    && rm -rf /var/lib/apt/lists/*
ENV LLMOPS_PREBUILT_VENVS=/opt/llmops
