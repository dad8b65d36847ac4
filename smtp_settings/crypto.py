"""Secrets at rest: MultiFernet over FIELD_ENCRYPTION_KEYS (first key encrypts, all decrypt).

Ciphertext lives in model fields named `*_encrypted`; plaintext exists only where a
connection is opened. Without configured keys a key is derived from SECRET_KEY, which is
fine for development and flagged by `check --deploy` (smtp_settings.checks).
https://cryptography.io/en/latest/fernet/#cryptography.fernet.MultiFernet
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.views.decorators.debug import sensitive_variables


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""

    def __init__(self) -> None:
        super().__init__(
            "A stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS; "
            "was a key removed before `rotate_keys` ran?"
        )


def _derived_key() -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"directo_mail", info=b"fields")
    return base64.urlsafe_b64encode(hkdf.derive(settings.SECRET_KEY.encode()))


@functools.cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    raw = [k.encode() for k in keys] or [_derived_key()]
    return MultiFernet([Fernet(k) for k in raw])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


@sensitive_variables("plaintext")
def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError from None


def rotate(ciphertext: str) -> str:
    """Re-encrypt under the first key (MultiFernet.rotate)."""
    try:
        return fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError from None
