"""Fixtures shared by the whole suite."""

import logging

import pytest

pytest_plugins = ["tests.smtp_fixtures", "tests.m365_fixtures"]

# aiosmtpd warns at every AUTH; keep test output readable.
logging.getLogger("mail.log").setLevel(logging.ERROR)


@pytest.fixture
def english(settings):
    from django.utils import translation

    settings.LANGUAGE_CODE = "en"
    with translation.override("en"):
        yield


@pytest.fixture(autouse=True)
def _fast_hashing(settings) -> None:
    """Login passwords are not under test; the default hasher costs 0.2 s a user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
