# The CI jobs' image (every job but train): .venv and .venv-serve built at /opt/llmops from
# requirements/pipeline.lock and serve.lock by the project's own set-up scripts, as `make
# setup` builds them on a laptop; TCMalloc; git (diffs) and make (`make test`) for the jobs.
# A job's before_script, `bash scripts/setup.sh`, links both environments into its checkout
# (LLMOPS_PREBUILT_VENVS) and installs only the checkout's package, in seconds.
# Built by pipelines/images.yml as $CI_REGISTRY_IMAGE/pipeline:$LLMOPS_IMAGE_TAG
# (scripts/image-tag.sh: the hash of the locks, these Dockerfiles and the set-up scripts).
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

WORKDIR /opt/llmops
COPY requirements/*.lock requirements/
COPY scripts/setup.sh scripts/setup-native.sh scripts/apt-install.sh scripts/uv.sh scripts/
# The editable install of setup.sh needs the package; a job installs its own checkout's.
COPY pyproject.toml ./
COPY src/ src/
# kubectl for the deploy, verify and rollback jobs: Debian's kubernetes-client (1.20, the
# release the project's cluster tests run against, tests/k8s_sim). kubectl supports API
# servers one minor release either side: for a newer cluster, install its release instead.
RUN bash scripts/apt-install.sh git make kubernetes-client \
    && bash scripts/setup-native.sh \
    && UV_NO_CACHE=1 bash scripts/setup.sh \
    && rm -rf /var/lib/apt/lists/*
ENV LLMOPS_PREBUILT_VENVS=/opt/llmops
