"""Signing a version's folder with OpenSSF model-signing and verifying it: who is trusted,
what is refused (unsigned, another signer, a changed, added or missing file), and who signs
in which environment."""

from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from llmops import signatures
from llmops.digests import write_manifest
from llmops.errors import StageFailed, UsageError
from llmops.signatures import SIGNATURE, Signer, Trusted


def version(tmp_path: Path) -> Path:
    folder = tmp_path / "v"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer" / "tokenizer.json").write_text("{}")
    write_manifest(folder)
    return folder


def key_pair(where: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = where / f"{name}.pem", where / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def test_a_signed_version_verifies_against_its_key_and_names_it(tmp_path: Path) -> None:
    folder = version(tmp_path)
    private, public = key_pair(tmp_path, "release")
    signatures.sign(folder, Signer("key", private))
    assert (folder / SIGNATURE).is_file()
    assert signatures.verify(folder, [Trusted(key=public)], "bot 1.0.0") == f"key {public}"
    # the signature covers every file, the manifest included
    statement = json.loads((folder / SIGNATURE).read_text())
    assert statement["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"


def test_an_unsigned_version_is_refused(tmp_path: Path) -> None:
    folder = version(tmp_path)
    _, public = key_pair(tmp_path, "release")
    with pytest.raises(StageFailed, match=r"bot 1.0.0: no model.sig.*unsigned"):
        signatures.verify(folder, [Trusted(key=public)], "bot 1.0.0")


def test_a_version_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    folder = version(tmp_path)
    private, _ = key_pair(tmp_path, "intruder")
    _, trusted = key_pair(tmp_path, "release")
    signatures.sign(folder, Signer("key", private))
    with pytest.raises(StageFailed, match="signed by another key"):
        signatures.verify(folder, [Trusted(key=trusted)], "bot 1.0.0")


def test_any_trusted_identity_may_have_signed(tmp_path: Path) -> None:
    folder = version(tmp_path)
    private, public = key_pair(tmp_path, "release")
    _, other = key_pair(tmp_path, "old-release")
    signatures.sign(folder, Signer("key", private))
    assert signatures.verify(folder, [Trusted(key=other), Trusted(key=public)], "v") == \
        f"key {public}"


@pytest.mark.parametrize("change", ["edit", "add", "remove", "manifest"])
def test_a_file_changed_added_or_removed_since_signing_is_refused(tmp_path: Path,
                                                                  change: str) -> None:
    folder = version(tmp_path)
    private, public = key_pair(tmp_path, "release")
    signatures.sign(folder, Signer("key", private))
    if change == "edit":
        (folder / "adapter_model.safetensors").write_bytes(b"planted")
        reason = "changed since it was signed: adapter_model.safetensors"
    elif change == "add":
        (folder / "extra.safetensors").write_bytes(b"planted")
        reason = "Extra files .*extra.safetensors"
    elif change == "remove":
        (folder / "tokenizer" / "tokenizer.json").unlink()
        reason = "Missing files .*tokenizer/tokenizer.json"
    else:  # a manifest rewritten to match changed weights
        (folder / "adapter_model.safetensors").write_bytes(b"planted")
        write_manifest(folder)
        reason = "changed since it was signed: adapter_model.safetensors, manifest.json"
    with pytest.raises(StageFailed, match=reason):
        signatures.verify(folder, [Trusted(key=public)], "bot 1.0.0")


def test_a_certificate_signature_verifies_against_its_ca_chain(tmp_path: Path) -> None:
    """Offline certificate signing, as a company PKI issues it: a code-signing leaf under
    a root the deploy trusts; a root it does not trust is refused."""
    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
             issuer_key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                  critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def pem(c: x509.Certificate, name: str) -> Path:
        (tmp_path / name).write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return tmp_path / name

    root_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1())
                                     for _ in range(3))
    root = pem(cert("Release CA", root_key, "Release CA", root_key, True), "root.pem")
    other = pem(cert("Other CA", other_key, "Other CA", other_key, True), "other.pem")
    leaf = pem(cert("release-pipeline", leaf_key, "Release CA", root_key, False), "leaf.pem")
    (tmp_path / "leaf.key").write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    folder = version(tmp_path)
    signer = Signer("certificate", tmp_path / "leaf.key", certificate=leaf, chain=(root,))
    assert signer.describe() == "certificate CN=release-pipeline"
    signatures.sign(folder, signer)
    assert "certificates chaining to" in signatures.verify(folder, [Trusted(chain=(root,))],
                                                           "bot 1.0.0")
    with pytest.raises(StageFailed, match="does not verify against any trusted identity"):
        signatures.verify(folder, [Trusted(chain=(other,))], "bot 1.0.0")


def test_the_local_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    signer = signatures.signer_from_env(tmp_path, {})
    private, public = signatures.local_key_paths(tmp_path)
    assert signer.origin == "local" and signer.key == private and public.is_file()
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    before = private.read_bytes()
    assert signatures.signer_from_env(tmp_path, {}).key == private
    assert private.read_bytes() == before
    assert signer.describe().startswith("key sha256:")


def test_a_protected_pipeline_never_signs_with_a_key_made_in_the_job(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="LLMOPS_SIGNING_KEY .*id_tokens"):
        signatures.signer_from_env(tmp_path, {"CI_COMMIT_REF_PROTECTED": "true"})
    assert not signatures.local_key_paths(tmp_path)[0].exists()


def test_the_environment_names_the_signer(tmp_path: Path) -> None:
    private, _ = key_pair(tmp_path, "release")
    env = {"CI_COMMIT_REF_PROTECTED": "true", "LLMOPS_SIGNING_KEY": str(private)}
    assert signatures.signer_from_env(tmp_path, env) == Signer("key", private,
                                                               origin="LLMOPS_SIGNING_KEY")
    with pytest.raises(UsageError, match="no such file .*File variable"):
        signatures.signer_from_env(tmp_path, {"LLMOPS_SIGNING_KEY": str(tmp_path / "nope")})
    token = "e30." + "eyJjaV9jb25maWdfcmVmX3VyaSI6ICJnaXRsYWIuY29tL2cvcC8vLmdpdGxhYi1jaS55bW" \
        "xAcmVmcy9oZWFkcy9tYWluIn0" + ".sig"
    keyless = signatures.signer_from_env(tmp_path, {"SIGSTORE_ID_TOKEN": token})
    assert keyless.kind == "sigstore" and token not in repr(keyless)
    assert keyless.describe() == \
        "Sigstore keyless (gitlab.com/g/p//.gitlab-ci.yml@refs/heads/main)"


def test_the_commands_settings_carry_what_names_the_signer(tmp_path: Path) -> None:
    """Read once with the rest of the environment (Settings), never shown in its repr."""
    from llmops.config.settings import SIGNING_VARIABLES, Settings

    named = {signatures.KEY_ENV, signatures.KEY_PASSWORD_ENV, signatures.CERT_ENV,
             signatures.CERT_CHAIN_ENV, signatures.SIGSTORE_TOKEN_ENV}
    assert named | {"CI_COMMIT_REF_PROTECTED"} == set(SIGNING_VARIABLES)
    settings = Settings.from_env({"SIGSTORE_ID_TOKEN": "eyJhbGciOi.secret.sig", "HOME": "/h"})
    assert settings.signing == {"SIGSTORE_ID_TOKEN": "eyJhbGciOi.secret.sig"}
    assert "secret" not in repr(settings)


def test_an_unreadable_or_locked_signing_key_is_named_not_raised(tmp_path: Path) -> None:
    garbage = tmp_path / "key.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(UsageError, match=r"LLMOPS_SIGNING_KEY: .*key.pem cannot be read as a "
                                         r"PEM EC private key.*LLMOPS_SIGNING_KEY_PASSWORD"):
        signatures.signer_from_env(tmp_path, {"LLMOPS_SIGNING_KEY": str(garbage)})
    locked = tmp_path / "locked.pem"
    locked.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass phrase")))
    with pytest.raises(UsageError, match="cannot be read"):
        signatures.signer_from_env(tmp_path, {"LLMOPS_SIGNING_KEY": str(locked)})
    opened = signatures.signer_from_env(tmp_path, {"LLMOPS_SIGNING_KEY": str(locked),
                                                   "LLMOPS_SIGNING_KEY_PASSWORD": "pass phrase"})
    assert "pass phrase" not in repr(opened)
    folder = version(tmp_path)
    signatures.sign(folder, opened)
    assert (folder / SIGNATURE).is_file()


def test_the_local_public_key_is_always_the_private_keys_pair(tmp_path: Path) -> None:
    """A first use interrupted between the two files, or a stale key.pub: the public key is
    derived again from the private one, so `key: local` trusts what signs."""
    private = signatures.ensure_local_key(tmp_path)
    _, public = signatures.local_key_paths(tmp_path)
    pair = public.read_bytes()
    public.unlink()
    signatures.ensure_local_key(tmp_path)
    assert public.read_bytes() == pair
    public.write_bytes(key_pair(tmp_path, "stale")[1].read_bytes())
    assert signatures.ensure_local_key(tmp_path) == private and public.read_bytes() == pair


def test_a_gitignore_beside_the_signed_files_is_not_skipped(tmp_path: Path) -> None:
    """model-signing's verifier would guess a configuration that skips .git* files; ours
    hashes every file beside the signature."""
    folder = version(tmp_path)
    private, public = key_pair(tmp_path, "release")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    signatures.sign(folder, Signer("key", private))
    assert signatures.verify(folder, [Trusted(key=public)], "v")
    (folder / ".gitattributes").write_text("changed\n")
    with pytest.raises(StageFailed, match=r"changed since it was signed: \.gitattributes"):
        signatures.verify(folder, [Trusted(key=public)], "v")
