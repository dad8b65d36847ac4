"""The card's "How your mail is sent now" box tells the truth about the effective sender."""

import pytest

from smtp_settings.models import Security, SenderMode
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def _box(client, user) -> str:
    client.force_login(user)
    html = client.get("/accounts/card/").content.decode()
    return html[html.index('class="effective"') :]


def test_microsoft365_before_authentication_says_nothing_can_be_sent(client):
    user = factories.user("TOOMAS")
    factories.profile(user, mode=SenderMode.MICROSOFT365, login="toomas@acme.example")
    box = _box(client, user)
    assert "not authenticated yet" in box
    assert "needs your own SMTP server, Microsoft 365 or Google" in box


def test_own_smtp_server_unlocks_mass_mailing(client):
    user = factories.user("PIOTR")
    factories.profile(user, host="smtp.acme.example", port=587, security=Security.STARTTLS)
    box = _box(client, user)
    assert "SMTP server: smtp.acme.example:587 (StartTLS)" in box
    assert "available" in box


def test_reply_to_mode_shows_the_platform_from_and_the_user_in_reply_to(client):
    factories.company(slug="acme")
    user = factories.user("EWA", email="ewa@acme.example")
    factories.profile(user, mode=SenderMode.REPLY_TO)
    box = _box(client, user)
    assert "&lt;acme@event.directo-mail.localhost&gt;" in box
    assert "ewa@acme.example" in box
    assert "needs your own SMTP server, Microsoft 365 or Google" in box


def test_a_configuration_error_is_explained_not_a_500(client):
    """A mail sending user who later switched to Default: the box explains, the page works."""
    sender = factories.user("MAIL")
    factories.profile(sender, mode=SenderMode.DEFAULT)
    factories.mail_sending_user(sender)
    box = _box(client, factories.user("ANNA"))
    assert "The mail sending user MAIL inherits the global configuration" in box
