"""Secrets at rest: MultiFernet over FIELD_ENCRYPTION_KEYS (first key encrypts, all decrypt).

Ciphertext lives in model fields named `*_encrypted`; plaintext exists only where a
connection is opened. The keys are the installation's own (settings refuse to start without
them); none is ever derived from SECRET_KEY, so a leaked SECRET_KEY opens no stored secret.
https://cryptography.io/en/latest/fernet/#cryptography.fernet.MultiFernet
"""

from __future__ import annotations

import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.views.decorators.debug import sensitive_variables


class SecretDecryptionError(Exception):
    """A stored secret could not be decrypted with any configured key."""

    def __init__(self) -> None:
        super().__init__(
            "A stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS; "
            "was a key removed before `rotate_keys` ran?"
        )


@functools.cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:  # settings refuse this at start; a test or a shell may still empty the list
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty: no secret can be stored.")
    return MultiFernet([Fernet(k.encode()) for k in keys])


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
