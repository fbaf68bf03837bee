"""Keys for the tests of signed versions."""

from __future__ import annotations


def fresh_public_pem() -> bytes:
    """The PEM public half of a new EC P-256 key: a signer nobody's version was signed by."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
