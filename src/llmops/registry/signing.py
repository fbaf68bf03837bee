"""The pipeline's side of signatures: sign a package before it is registered, and resolve
`deploy/<env>.yml`'s trusted signers into what `llmops.signatures.verify` checks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from llmops import signatures
from llmops.config.paths import resolve_in_repo, state_dir
from llmops.config.signing import LOCAL_KEY, SigningSettings
from llmops.digests import write_manifest
from llmops.errors import UsageError
from llmops.process import activity


def signer(env: Mapping[str, str]) -> signatures.Signer:
    """Who signs, from the command's `Settings.signing` (`signatures.signer_from_env`)."""
    return signatures.signer_from_env(state_dir(), env)


SIGNER_TAG = "signature.signer"


def seal(folder: Path, env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """Write the package's manifest, then its signature over every file, by the signer
    `env` names: the manifest's digest (which does not depend on the signer) and the
    version's tag naming the signer."""
    by = signer(env)
    digest = write_manifest(folder)
    signatures.sign(folder, by)
    activity.tell(f"signed {folder.name}/ ({by.describe()})")
    return digest, {SIGNER_TAG: by.describe()}


def trusted(settings: SigningSettings) -> list[signatures.Trusted]:
    """The trusted identities with their files resolved; a key file that is missing is a
    usage error naming it (and, for `local`, how it comes to exist)."""
    out = []
    for entry in settings.trust:
        if entry.key is not None:
            path = signatures.local_key_paths(state_dir())[1] if entry.key == LOCAL_KEY \
                else resolve_in_repo(entry.key)
            if not path.is_file():
                hint = ("this project has registered nothing yet (its first registration "
                        "makes the key)") if entry.key == LOCAL_KEY else \
                    "commit the public key of the protected pipeline's signing key there"
                raise UsageError(f"signing.trust names the key {entry.key} ({path}), which "
                                 f"does not exist: {hint}")
            if problem := signatures.key_problem(path):
                raise UsageError(f"signing.trust: {entry.key} ({path}): {problem}")
            out.append(signatures.Trusted(key=path))
        elif entry.certificate_chain:
            out.append(signatures.Trusted(
                chain=tuple(resolve_in_repo(c) for c in entry.certificate_chain)))
        else:
            out.append(signatures.Trusted(identity=entry.sigstore_identity,
                                          issuer=entry.sigstore_issuer))
    return out


def trust_problem(settings: SigningSettings) -> str | None:
    """What keeps a deploy from checking signatures with these settings, or None."""
    try:
        trusted(settings)
    except UsageError as exc:  # said under the key by the caller
        return str(exc).removeprefix("signing.trust: ").removeprefix("signing.trust ")
    return None


def verify_version(folder: Path, settings: SigningSettings, where: str) -> str:
    """Who signed `folder` among the trusted; StageFailed (nothing served) otherwise."""
    return signatures.verify(folder, trusted(settings), where)
