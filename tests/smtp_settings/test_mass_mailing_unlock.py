"""Mass mailing through an own server unlocks after a passed connection test (issue 14, item 3).

Against the real plain SMTP test server. What must hold: a server nobody tested, or one
changed after its test (server, port, security, user name), cannot start a job; a failed test
unlocks nothing; a passed one unlocks, on the card, the invoice list and `bulk_send`.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from invoices.services import MassMailingLocked, mass_mailing_sender
from smtp_settings.models import Security, SenderMode
from smtp_settings.selectors import sender_config_for
from smtp_settings.services import profile_update
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]
CARD_URL = "/accounts/card/"
LOCKED = "unlocks after a passed connection test"


@pytest.fixture
def piotr(client, smtp_servers):
    server = smtp_servers.plain
    user = factories.user("PIOTR", name="Piotr", email="piotr@acme.test")
    factories.profile(
        user, host=server.host, port=server.port, security=Security.NONE, tested=False
    )
    client.force_login(user)
    return user


def _locked(user) -> str | None:
    try:
        mass_mailing_sender(user=user)
    except MassMailingLocked as locked:
        return locked.message
    return None


def test_an_untested_own_server_cannot_mass_mail_and_the_card_says_what_to_do(client, piotr):
    assert LOCKED in _locked(piotr)
    html = client.get(CARD_URL).content.decode()
    assert "after a passed connection test of this server" in html
    invoices = client.get("/invoices/").content.decode()
    assert LOCKED in invoices


def test_a_passed_test_on_the_card_unlocks(client, piotr):
    response = client.post(CARD_URL, {"action": "test_connection"}, follow=True)
    html = response.content.decode()
    assert "Connection test passed" in html
    assert "mass mailing is available now" in html
    assert _locked(piotr) is None
    assert sender_config_for(user=piotr).mass_mailing_allowed


def test_a_failed_test_unlocks_nothing(client, piotr, smtp_servers):
    smtp_servers.plain.script("MAIL", "550 5.7.1 not from you", times=None)
    html = client.post(CARD_URL, {"action": "test_connection"}).content.decode()
    assert "Connection test failed" in html
    assert LOCKED in _locked(piotr)


@pytest.mark.parametrize(
    "change",
    [
        {"port": 2525},
        {"security": Security.STARTTLS},
        {"host": "smtp.other.test"},
        {"login": "piotr@acme.test", "password": "x" * 12, "unencrypted_ok": True},
    ],
    ids=["port", "security", "server", "login"],
)
def test_any_change_of_the_server_locks_again(client, piotr, change):
    client.post(CARD_URL, {"action": "test_connection"})
    assert _locked(piotr) is None
    profile = piotr.sender_profile
    fields = {
        "host": profile.host,
        "port": profile.port,
        "security": profile.security,
        "login": profile.login,
    }
    fields.update(change)
    profile_update(user=piotr, mode=SenderMode.SMTP, **fields)
    assert LOCKED in _locked(piotr)


def test_a_change_of_the_pace_or_the_signature_keeps_it_unlocked(client, piotr):
    client.post(CARD_URL, {"action": "test_connection"})
    profile_update(user=piotr, mode=SenderMode.SMTP, rate_limit=30)
    assert _locked(piotr) is None


def test_bulk_send_from_a_shell_is_refused_with_the_same_words(piotr):
    with pytest.raises(CommandError, match=LOCKED):
        call_command("bulk_send", "--user", "PIOTR", "--unsent", stdout=io.StringIO())


def test_sender_test_from_a_shell_unlocks_too(piotr):
    out = io.StringIO()
    call_command("sender", "test", "PIOTR", stdout=out)
    assert "mass mailing is available now" in out.getvalue()
    assert _locked(piotr) is None


def test_inherited_and_microsoft_365_senders_are_not_asked_for_a_test(smtp_servers):
    server = smtp_servers.plain
    factories.profile(
        None, host=server.host, port=server.port, security=Security.NONE, tested=False
    )
    user = factories.user("ANNA", email="anna@acme.test")
    factories.profile(user, mode=SenderMode.DEFAULT)
    assert sender_config_for(user=user).mass_mailing_allowed  # the admin's server


def test_an_upgrade_keeps_existing_own_servers_unlocked():
    """The migration counts servers that sent before the rule as tested as they are."""
    from importlib import import_module

    from django.apps import apps

    grandfather = import_module("smtp_settings.migrations.0005_profile_tested").grandfather
    user = factories.user("OLD", email="old@acme.test")
    factories.profile(user, host="smtp.acme.test", port=587, security="starttls", tested=False)
    assert LOCKED in _locked(user)
    grandfather(apps, None)
    assert _locked(user) is None
