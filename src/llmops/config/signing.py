"""deploy/<env>.yml `signing:`: whose signatures a deploy to that environment accepts."""

from __future__ import annotations

from pydantic import Field, model_validator

from llmops.config.strict import Strict

LOCAL_KEY = "local"


class TrustedSigner(Strict):
    """One trusted identity: exactly one of `key`, `certificate_chain`, `sigstore_identity`."""

    key: str | None = Field(
        default=None, description="A PEM public key (EC P-256/384/521), relative to the "
        "repository; `local`: the key this project generated in .llmops/signing/ on its "
        "first registration (a laptop's or a test cluster's releases).")
    certificate_chain: list[str] | None = Field(
        default=None, description="PEM certificates (relative to the repository) that a "
        "signing certificate must chain to (the signer set LLMOPS_SIGNING_CERT).")
    sigstore_identity: str | None = Field(
        default=None, description="Keyless signing through Sigstore: the certificate's "
        "identity, for GitLab the protected pipeline's ci_config_ref_uri, e.g. "
        "gitlab.com/group/project//.gitlab-ci.yml@refs/tags/v1.2.3 (no wildcard: one ref).")
    sigstore_issuer: str | None = Field(
        default=None, description="With sigstore_identity: the OIDC issuer, e.g. "
        "https://gitlab.com.")

    @model_validator(mode="after")
    def _one_kind(self) -> TrustedSigner:
        kinds = [k for k in ("key", "certificate_chain", "sigstore_identity")
                 if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("a trusted signer names exactly one of key, certificate_chain, "
                             f"sigstore_identity (got {', '.join(kinds) or 'none'})")
        if bool(self.sigstore_identity) != bool(self.sigstore_issuer):
            raise ValueError("sigstore_identity and sigstore_issuer go together")
        return self


class SigningSettings(Strict):
    """Who may have signed a version this environment serves."""

    trust: list[TrustedSigner] = Field(
        default_factory=lambda: [TrustedSigner(key=LOCAL_KEY)], min_length=1,
        description="Identities whose signature is accepted; a version signed by anyone "
        "else, unsigned, or with a file changed since, is refused before it serves. "
        "Default: this project's local key. Production: the protected pipeline's only.")
