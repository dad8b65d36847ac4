"""The card e-mail's verification link (issue 11, item 3), through the pages.

What an abuser tries, and what must fail: verifying an address they do not receive mail at
(the link is mailed there only, never to the card's BCC), a forged, expired or replayed link, a
link for an address the card no longer has, and mailing links to spam someone.
"""

from __future__ import annotations

import re

import pytest
from django.core import signing
from django.test import Client
from django.utils.html import escape

from accounts.models import User
from outbox.models import LimitCounter, OutgoingMessage
from smtp_settings import verification
from smtp_settings.selectors import sender_config_for
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

CARD_URL = "/accounts/card/"
SEND_URL = "/accounts/email/verify/"
LINK = re.compile(r"https?://[^/\s]+(/accounts/email/verify/[^\s]+/)")
SEND_BUTTON = "Send the verification link"


def _html(response) -> str:
    return response.content.decode()


@pytest.fixture
def paul(client) -> User:
    """A Default user whose card e-mail is not verified, with a BCC and a company."""
    factories.company()
    user = factories.user(
        "PAUL", name="Paul", email="paul@acme.test", bcc="stranger@evil.test", verified=False
    )
    client.force_login(user)
    return user


def _mailed_link(message: OutgoingMessage) -> str:
    return LINK.search(message.body_text)[1]


def test_an_unverified_card_says_how_mail_is_sent_and_offers_the_link(client, paul):
    html = _html(client.get(CARD_URL))
    assert "paul@acme.test is not verified yet" in html
    assert "sends your mail from acme@event.directo-mail.localhost" in html
    assert SEND_BUTTON in html
    assert "&lt;acme@event.directo-mail.localhost&gt;" in html  # "How your mail is sent now"


def test_the_box_is_in_the_users_language(client, paul):
    paul.language = "pl"
    paul.save()
    html = _html(client.get(CARD_URL))
    assert "Wyślij link weryfikacyjny" in html


def test_a_verified_card_says_so_and_sends_from_the_card_email(client, paul):
    User.objects.filter(pk=paul.pk).update(email_verified_address="paul@acme.test")
    html = _html(client.get(CARD_URL))
    assert "paul@acme.test is verified" in html
    assert SEND_BUTTON not in html
    assert sender_config_for(user=User.objects.get(pk=paul.pk)).from_email == "paul@acme.test"


def test_the_link_goes_to_the_card_email_only_never_to_the_bcc(client, paul):
    response = client.post(SEND_URL, follow=True)
    assert "A verification link has been sent to paul@acme.test" in _html(response)
    message = OutgoingMessage.objects.get()
    assert (message.to, message.cc, message.bcc) == (["paul@acme.test"], [], [])
    assert message.sender["bcc"] == "" and message.sender["signature"] == ""
    assert message.sender["from_email"] == "noreply@directo-mail.localhost"
    assert message.sender["verp"] is False  # a bounce quoting the link never reaches Events
    assert _mailed_link(message)


def test_the_link_opened_in_another_browser_asks_then_verifies_once(client, paul):
    client.post(SEND_URL)
    link = _mailed_link(OutgoingMessage.objects.get())
    stranger = Client()  # another browser, nobody logged in

    shown = stranger.get(link)  # what a mail scanner does: it verifies nothing
    assert shown.status_code == 200
    assert "Confirm the e-mail address" in _html(shown)
    assert not User.objects.get(pk=paul.pk).email_verified

    done = stranger.post(link)
    assert done.status_code == 200, _html(done)
    paul.refresh_from_db()
    assert paul.email_verified and paul.email_verified_at is not None
    assert sender_config_for(user=paul).from_email == "paul@acme.test"

    again = stranger.post(link)
    assert again.status_code == 400
    assert "already been used" in _html(again)


def test_a_changed_email_is_unverified_again_and_its_old_link_is_refused(client, paul):
    client.post(SEND_URL)
    link = _mailed_link(OutgoingMessage.objects.get())
    Client().post(link)
    paul.refresh_from_db()
    assert paul.email_verified

    response = client.post(
        CARD_URL,
        {"name": "Paul", "email": "security@paypal.com", "mode": "default"},
        follow=True,
    )
    assert "The settings have been saved." in _html(response)
    paul.refresh_from_db()
    assert not paul.email_verified
    assert sender_config_for(user=paul).from_email == "acme@event.directo-mail.localhost"
    assert "security@paypal.com is not verified yet" in _html(response)


def test_a_link_for_an_address_the_card_no_longer_has_is_refused(client, paul):
    client.post(SEND_URL)
    link = _mailed_link(OutgoingMessage.objects.get())
    User.objects.filter(pk=paul.pk).update(email="security@paypal.com")

    response = Client().post(link)
    assert response.status_code == 400
    assert "no longer the one on the user card" in _html(response)
    assert not User.objects.get(pk=paul.pk).email_verified


def test_an_expired_link_is_refused(client, paul, settings):
    client.post(SEND_URL)
    link = _mailed_link(OutgoingMessage.objects.get())
    settings.EMAIL_VERIFICATION_MAX_AGE = -1
    response = Client().post(link)
    assert response.status_code == 400
    assert "has expired" in _html(response)
    assert not User.objects.get(pk=paul.pk).email_verified


@pytest.mark.parametrize(
    "forge",
    [
        lambda user: "x" + verification.verification_token(user)[1:],
        lambda user: signing.dumps({"u": user.pk, "e": "security@paypal.com", "s": ""}),
        lambda user: signing.dumps(
            {"u": user.pk, "e": "security@paypal.com", "s": ""}, salt=verification.SALT, key="k"
        ),
        lambda user: "..",
        lambda user: "²",
    ],
    ids=["tampered", "unsalted", "wrong-key", "dots", "unicode-digit"],
)
def test_a_forged_link_is_refused(paul, forge):
    User.objects.filter(pk=paul.pk).update(email="security@paypal.com")
    user = User.objects.get(pk=paul.pk)
    response = Client().post(f"/accounts/email/verify/{forge(user)}/")
    assert response.status_code in (400, 404)
    assert not User.objects.get(pk=paul.pk).email_verified


def test_the_genuine_token_is_accepted_by_the_same_check(paul):
    """Control for the forgeries above: the detector sees a verification when there is one."""
    User.objects.filter(pk=paul.pk).update(email="security@paypal.com")
    token = verification.verification_token(User.objects.get(pk=paul.pk))
    assert Client().post(f"/accounts/email/verify/{token}/").status_code == 200
    assert User.objects.get(pk=paul.pk).email_verified


def test_verification_mails_are_limited_and_the_refusal_explained(client, paul, settings):
    settings.EMAIL_VERIFICATION_MAILS_PER_HOUR = 2
    for _ in range(2):
        client.post(SEND_URL)
    response = client.post(SEND_URL, follow=True)
    assert "2 verification links an hour are the most allowed" in _html(response)
    assert OutgoingMessage.objects.count() == 2


def test_verification_mails_count_against_the_relay_limits(client, paul, settings):
    settings.RELAY_LIMIT_USER_HOUR = 1
    client.post(SEND_URL)
    response = client.post(SEND_URL, follow=True)
    assert escape("the platform relay's limit of 1 recipients an hour") in _html(response)
    assert OutgoingMessage.objects.count() == 1
    assert LimitCounter.objects.get(key=f"relay:user:{paul.pk}:hour").count == 1


def test_nothing_to_verify_is_explained(client, paul):
    User.objects.filter(pk=paul.pk).update(email="")
    response = client.post(SEND_URL, follow=True)
    assert "Enter your e-mail on the card and save it first." in _html(response)
    assert not OutgoingMessage.objects.exists()


def test_sending_the_link_wants_post_and_a_login(client, paul):
    assert client.get(SEND_URL).status_code == 405
    assert Client().post(SEND_URL).status_code == 302
