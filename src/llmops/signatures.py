"""Signing a version's files with OpenSSF model-signing, and verifying them before serving.

A registered version's folder carries `model.sig`: a Sigstore bundle whose signed in-toto
statement lists the sha256 of every other file of the folder (its manifest.json included).
It is written after the manifest and is not listed in it, so signing again (a retried
registration, whose EC signature differs) leaves the version's digest as it was.

Who signs: a CI job with `LLMOPS_SIGNING_KEY` (a protected File variable: an EC private key
in PEM), optionally with `LLMOPS_SIGNING_CERT` (+ `LLMOPS_SIGNING_CERT_CHAIN`) to sign as a
certificate; or keyless through Sigstore with the job's OIDC token (`SIGSTORE_ID_TOKEN`, from
`id_tokens:`); elsewhere, a key this project generates on first use in `.llmops/signing/`
(a protected pipeline refuses that: a key made in the job would prove nothing).
Who is trusted: `deploy/<env>.yml` `signing.trust`, checked by every deploy (local, the
Kubernetes init container, which ships this module) before a byte is served.

Standard library and model-signing only (imported when used): the init container runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmops.digests import SIGNATURE
from llmops.errors import StageFailed, UsageError

KEY_ENV = "LLMOPS_SIGNING_KEY"
KEY_PASSWORD_ENV = "LLMOPS_SIGNING_KEY_PASSWORD"
CERT_ENV = "LLMOPS_SIGNING_CERT"
CERT_CHAIN_ENV = "LLMOPS_SIGNING_CERT_CHAIN"
SIGSTORE_TOKEN_ENV = "SIGSTORE_ID_TOKEN"


@dataclass(frozen=True)
class Signer:
    """How this process signs: `key` (an EC private key), `certificate` (that key and its
    certificate chain) or `sigstore` (keyless, with an OIDC identity token)."""

    kind: str
    key: Path | None = None
    password: str | None = field(default=None, repr=False)
    certificate: Path | None = None
    chain: tuple[Path, ...] = ()
    identity_token: str | None = field(default=None, repr=False)
    origin: str = ""

    def describe(self) -> str:
        """Who signs, as the model card and the deploy's message name it."""
        if self.kind == "sigstore":
            return f"Sigstore keyless ({identity_of_token(self.identity_token or '')})"
        if self.kind == "certificate" and self.certificate is not None:
            return f"certificate {certificate_subject(self.certificate.read_bytes())}"
        assert self.key is not None
        return f"key {public_key_fingerprint(self._public_pem())}"

    def _public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        assert self.key is not None
        private = serialization.load_pem_private_key(
            self.key.read_bytes(), self.password.encode() if self.password else None)
        return private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Trusted:
    """One identity a deploy accepts: a public key (PEM), a certificate chain (PEM files,
    root last) or a Sigstore identity with its OIDC issuer."""

    key: Path | None = None
    chain: tuple[Path, ...] = ()
    identity: str | None = None
    issuer: str | None = None

    def describe(self) -> str:
        if self.key is not None:
            return f"key {self.key}"
        if self.chain:
            return "certificates chaining to " + ", ".join(str(c) for c in self.chain)
        return f"Sigstore identity {self.identity} (issuer {self.issuer})"

    def as_json(self) -> dict[str, object]:
        return {"key": str(self.key) if self.key else None,
                "chain": [str(c) for c in self.chain],
                "identity": self.identity, "issuer": self.issuer}

    @staticmethod
    def from_json(raw: Mapping[str, object]) -> Trusted:
        key, chain = raw.get("key"), raw.get("chain") or []
        assert isinstance(chain, list)
        return Trusted(Path(str(key)) if key else None, tuple(Path(str(c)) for c in chain),
                       str(raw["identity"]) if raw.get("identity") else None,
                       str(raw["issuer"]) if raw.get("issuer") else None)


# --- keys ---------------------------------------------------------------------------------


def local_key_paths(state: Path) -> tuple[Path, Path]:
    """This project's own signing key pair (`.llmops/signing/key.pem`, `key.pub`)."""
    return state / "signing" / "key.pem", state / "signing" / "key.pub"


def ensure_local_key(state: Path) -> Path:
    """The project's private key, generated (ECDSA P-256) on first use, readable by its
    owner only; the public key beside it, what `key: local` trusts, is always derived from
    it (rewritten when missing or not its pair)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private, public = local_key_paths(state)
    private.parent.mkdir(parents=True, exist_ok=True)
    if not private.is_file():
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        fd, tmp = tempfile.mkstemp(dir=private.parent, prefix=".key-")  # mode 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        try:
            os.link(tmp, private)  # whole, and only if none exists: a racing first use wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    if not public.is_file() or public.read_bytes() != pub:
        fd, tmp = tempfile.mkstemp(dir=public.parent, prefix=".pub-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(pub)
        os.chmod(tmp, 0o644)
        os.replace(tmp, public)
    return private


def public_key_fingerprint(pem: bytes) -> str:
    """sha256 of a PEM public key's bytes, as model-signing records it in a bundle."""
    return "sha256:" + hashlib.sha256(pem).hexdigest()[:16]


def key_problem(path: Path) -> str | None:
    """Why `path` is not a public key model-signing verifies with (PEM, EC P-256/384/521)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        return "not a PEM public key (`openssl ec -in key.pem -pubout` writes one)"
    if not isinstance(key, ec.EllipticCurvePublicKey) or \
            key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        return "not an EC P-256, P-384 or P-521 key, which model-signing needs"
    return None


def certificate_subject(pem: bytes) -> str:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem).subject.rfc4514_string()


def identity_of_token(token: str) -> str:
    """The identity a Sigstore certificate will carry for this OIDC token (GitLab: the
    pipeline's `ci_config_ref_uri`), read from the token's claims without checking them
    (Fulcio checks them)."""
    import base64

    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError):
        return "an identity token that is not a JWT"
    return str(claims.get("ci_config_ref_uri") or claims.get("sub") or "unknown identity")


def signer_from_env(state: Path, env: Mapping[str, str]) -> Signer:
    """The signer `env` names (the command's Settings.signing): a key or certificate, a
    Sigstore identity token, else (outside a protected pipeline) the project's own key."""
    if env.get(KEY_ENV):
        key = Path(env[KEY_ENV])
        if not key.is_file():
            raise UsageError(f"{KEY_ENV}={key}: no such file (in GitLab, make it a File "
                             "variable holding the PEM private key)")
        signer = Signer("key", key, env.get(KEY_PASSWORD_ENV), origin=KEY_ENV)
        if env.get(CERT_ENV):
            chain = tuple(Path(p) for p in env.get(CERT_CHAIN_ENV, "").split(os.pathsep) if p)
            if not chain:
                raise UsageError(f"{CERT_ENV} is set but {CERT_CHAIN_ENV} is not: give the "
                                 "certificates up to the root, separated by ':'")
            for path in (Path(env[CERT_ENV]), *chain):
                if not path.is_file():
                    raise UsageError(f"{CERT_ENV}/{CERT_CHAIN_ENV}: {path}: no such file")
            signer = Signer("certificate", key, env.get(KEY_PASSWORD_ENV),
                            Path(env[CERT_ENV]), chain, origin=CERT_ENV)
        from cryptography.exceptions import UnsupportedAlgorithm

        try:
            signer.describe()  # reads the key and certificate once, here, with a clear error
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # unreadable or locked
            raise UsageError(f"{KEY_ENV}: {key} cannot be read as a PEM EC private key "
                             f"({type(exc).__name__}); if it is encrypted, set "
                             f"{KEY_PASSWORD_ENV}") from None
        return signer
    if env.get(SIGSTORE_TOKEN_ENV):
        return Signer("sigstore", identity_token=env[SIGSTORE_TOKEN_ENV],
                      origin=SIGSTORE_TOKEN_ENV)
    if env.get("CI_COMMIT_REF_PROTECTED", "").lower() == "true":
        raise UsageError(
            f"nothing to sign this version with in a protected pipeline: set {KEY_ENV} (a "
            f"protected File variable: an EC private key in PEM) or give the job `id_tokens: "
            f"{SIGSTORE_TOKEN_ENV}: {{aud: sigstore}}` to sign keyless; a key made in the "
            "job would prove nothing (docs/security.md#signed-versions)")
    return Signer("key", ensure_local_key(state), origin="local")


# --- signing and verifying ----------------------------------------------------------------


def _hashing() -> object:
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def sign(folder: Path, signer: Signer) -> Path:
    """Write `folder/model.sig` over every other file of `folder` (written whole, then
    renamed: a failure leaves the folder as it was)."""
    from model_signing import signing

    config = signing.Config().set_hashing_config(_hashing())  # type: ignore[arg-type]
    if signer.kind == "sigstore":
        config = config.use_sigstore_signer(identity_token=signer.identity_token)
    elif signer.kind == "certificate":
        assert signer.key is not None and signer.certificate is not None
        config = config.use_certificate_signer(private_key=signer.key,
                                               signing_certificate=signer.certificate,
                                               certificate_chain=signer.chain)
    else:
        assert signer.key is not None
        # model-signing hands the password to cryptography, which takes bytes.
        password = signer.password.encode() if signer.password else None
        config = config.use_elliptic_key_signer(private_key=signer.key,
                                                password=password)  # type: ignore[arg-type]
    fd, tmp = tempfile.mkstemp(dir=folder.parent, prefix=f".{folder.name}.sig-")
    os.close(fd)
    try:
        config.sign(folder, tmp)
        os.replace(tmp, folder / SIGNATURE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return folder / SIGNATURE


def verify(folder: Path, trust: Sequence[Trusted], where: str) -> str:
    """The trusted identity that signed every file of `folder`, or StageFailed naming why
    none did: no signature, another signer, a file changed, added or missing since."""
    from model_signing import verifying

    signature = folder / SIGNATURE
    if not signature.is_file():
        raise StageFailed(f"{where}: no {SIGNATURE}, so nothing proves who produced it; "
                          "refusing to serve an unsigned version (register it again with "
                          "this llmops, which signs it)")
    if not trust:
        raise StageFailed(f"{where}: signing.trust names nobody, so no signature can be "
                          "accepted; refusing to serve it")
    reasons = []
    for trusted in trust:
        # Our hashing, not one guessed from the bundle: nothing beside the signature is
        # left out (model-signing's guess would skip .git* files).
        config = verifying.Config().set_hashing_config(_hashing())  # type: ignore[arg-type]
        try:
            if trusted.key is not None:
                config = config.use_elliptic_key_verifier(public_key=trusted.key)
            elif trusted.chain:
                config = config.use_certificate_verifier(certificate_chain=trusted.chain)
            else:
                assert trusted.identity and trusted.issuer
                config = config.use_sigstore_verifier(identity=trusted.identity,
                                                      oidc_issuer=trusted.issuer)
            config.verify(folder, signature)
        except FileNotFoundError as exc:
            reasons.append(f"{trusted.describe()}: {exc.filename} is missing")
        except Exception as exc:  # model-signing raises ValueError and the crypto errors
            reasons.append(f"{trusted.describe()}: {_reason(exc)}")
        else:
            return trusted.describe()
    raise StageFailed(f"{where}: the signature does not verify against any trusted "
                      f"identity ({'; '.join(reasons)}); refusing to serve it")


def _reason(exc: BaseException) -> str:
    """model-signing's message, short: which file changed rather than two digests' bytes."""
    text = str(exc) or type(exc).__name__
    changed = re.findall(r"Hash mismatch for '([^']+)'", text)
    if changed:
        return "changed since it was signed: " + ", ".join(changed)
    if "Key mismatch" in text or "InvalidSignature" in text or "Invalid signature" in text:
        return "signed by another key"
    return text.split("\n")[0][:300]
