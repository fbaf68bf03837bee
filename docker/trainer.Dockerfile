# The train job's image: CUDA 13.0 with cuDNN, Python 3.11, and .venv built at /opt/llmops
# from requirements/gpu.lock by scripts/setup-gpu.sh (scripts/setup.sh with the GPU lock),
# as on any GPU machine. The train job's before_script, `bash scripts/setup.sh` like every
# job's, finds the GPU lock in LLMOPS_LOCK (below), links the environment into its checkout
# (LLMOPS_PREBUILT_VENVS) and installs the checkout's package (the image holds none).
# Built and pushed by the default branch's build-images job (pipelines/images.yml); the
# train job runs it as $CI_REGISTRY_IMAGE/trainer@$LLMOPS_TRAINER_IMAGE_DIGEST.
#
# Base: NVIDIA's CUDA 13.0.1 runtime + cuDNN on Ubuntu 22.04. 13.0 is the CUDA line of the
# locked torch 2.13.0 (its wheels bring their own nvidia-*-cu13 libraries), so the NVIDIA_*
# variables of this base make the NVIDIA container toolkit refuse a host driver too old for
# them (CUDA 13 needs driver 580 or newer) instead of torch failing mid-job. The runtime
# flavour carries no compilers (Axolotl's LoRA training needs no nvcc). Ubuntu 22.04 rather
# than 24.04: its archive has a python3.11 package (24.04's has 3.12).
# PLACEHOLDER digest (sha256:000…): no public pin of this tag was found to copy, so
# scripts/build-images.sh refuses to build until the platform team pins the real one:
#   skopeo inspect --format '{{.Digest}}' docker://nvidia/cuda:13.0.1-cudnn-runtime-ubuntu22.04
# (or the first Digest: line of `docker buildx imagetools inspect` of it), then
# `bash scripts/image-tag.sh --write`.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu22.04@sha256:0000000000000000000000000000000000000000000000000000000000000000

WORKDIR /opt/llmops
COPY requirements/*.lock requirements/
COPY scripts/setup.sh scripts/setup-gpu.sh scripts/apt-install.sh scripts/uv.sh scripts/
RUN bash scripts/apt-install.sh git \
    && UV_NO_CACHE=1 LLMOPS_ENVIRONMENTS_ONLY=1 bash scripts/setup-gpu.sh \
    && rm -rf /var/lib/apt/lists/*
# What scripts/setup-gpu.sh passes to scripts/setup.sh, for the jobs' `bash scripts/setup.sh`.
ENV LLMOPS_LOCK=requirements/gpu.lock LLMOPS_SERVE_LOCK="" LLMOPS_PREBUILT_VENVS=/opt/llmops
