"""Secrets at rest: MultiFernet over FIELD_ENCRYPTION_KEYS, and `rotate_keys`."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from smtp_settings import crypto
from smtp_settings.models import SenderProfile
from tests import factories


def _key() -> str:
    return Fernet.generate_key().decode()


def test_round_trip(settings):
    settings.FIELD_ENCRYPTION_KEYS = [_key()]
    plaintext = f"{factories.secret()} zażółć"

    ciphertext = crypto.encrypt(plaintext)

    assert plaintext not in ciphertext
    assert ciphertext != crypto.encrypt(plaintext)  # a fresh IV every time
    assert crypto.decrypt(ciphertext) == plaintext


def test_without_keys_nothing_is_encrypted_and_no_key_is_derived(settings):
    """Issue 11, item 8: no key comes from SECRET_KEY (which once had a public default)."""
    settings.FIELD_ENCRYPTION_KEYS = []
    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEYS"):
        crypto.encrypt(factories.secret())
    assert not hasattr(crypto, "_derived_key")


def test_first_key_encrypts_and_every_key_decrypts(settings):
    first, second = _key(), _key()
    plaintext = factories.secret()
    settings.FIELD_ENCRYPTION_KEYS = [second]
    under_second = crypto.encrypt(plaintext)

    settings.FIELD_ENCRYPTION_KEYS = [first, second]
    under_first = crypto.encrypt(plaintext)

    assert Fernet(first.encode()).decrypt(under_first.encode()).decode() == plaintext
    with pytest.raises(InvalidToken):
        Fernet(second.encode()).decrypt(under_first.encode())
    assert crypto.decrypt(under_first) == plaintext
    assert crypto.decrypt(under_second) == plaintext


def test_an_unknown_key_is_a_named_error_without_the_ciphertext(settings):
    settings.FIELD_ENCRYPTION_KEYS = [_key()]
    ciphertext = crypto.encrypt(factories.secret())
    settings.FIELD_ENCRYPTION_KEYS = [_key()]

    with pytest.raises(crypto.SecretDecryptionError) as error:
        crypto.decrypt(ciphertext)

    assert ciphertext not in str(error.value)
    assert "rotate_keys" in str(error.value)


@pytest.mark.django_db
def test_rotate_keys_re_encrypts_everything_under_the_new_key(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    old, new = _key(), _key()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    passwords = {
        "global": factories.secret(),
        "ANNA": factories.secret(),
        "BOB": factories.secret(),
    }
    factories.profile(
        None, host="relay.acme.test", port=465, login="r", password=passwords["global"]
    )
    for code in ["ANNA", "BOB"]:
        factories.profile(
            factories.user(code), host="smtp.acme.test", port=465, login=code,
            password=passwords[code],
        )  # fmt: skip
    factories.profile(factories.user("EWA"), host="smtp.acme.test", port=465)  # no password
    before = dict(SenderProfile.objects.values_list("pk", "password_encrypted"))

    # Rotation, step 1: the new key first, the old one kept for reading.
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    out = io.StringIO()
    call_command("rotate_keys", stdout=out)

    assert "smtp_settings.SenderProfile.password_encrypted: 3 re-encrypted" in out.getvalue()
    after = dict(SenderProfile.objects.values_list("pk", "password_encrypted"))
    assert after.keys() == before.keys()
    for pk, ciphertext in after.items():
        if before[pk] == "":
            assert ciphertext == ""
        else:
            assert ciphertext != before[pk]
    for value in passwords.values():
        assert value not in out.getvalue()

    # Step 2: the old key removed; everything still reads.
    settings.FIELD_ENCRYPTION_KEYS = [new]
    readable = {
        (p.user.code if p.user else "global"): crypto.decrypt(p.password_encrypted)
        for p in SenderProfile.objects.select_related("user").exclude(password_encrypted="")
    }
    assert readable == passwords
    # ...and without rotation it would not have: the old ciphertexts need the old key.
    with pytest.raises(crypto.SecretDecryptionError):
        crypto.decrypt(next(c for c in before.values() if c))


@pytest.mark.django_db
def test_rotate_keys_with_the_old_key_already_gone_fails_and_changes_nothing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.FIELD_ENCRYPTION_KEYS = [_key()]
    factories.profile(factories.user("ANNA"), host="smtp.acme.test", port=465, login="a",
                      password=factories.secret())  # fmt: skip
    before = list(SenderProfile.objects.values())
    settings.FIELD_ENCRYPTION_KEYS = [_key()]

    with pytest.raises(CommandError, match="cannot be decrypted"):
        call_command("rotate_keys", stdout=io.StringIO())

    assert list(SenderProfile.objects.values()) == before
