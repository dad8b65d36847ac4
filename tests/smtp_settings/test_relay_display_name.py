"""No address in the display name of the platform relay's mail (review of issue 11, item 3).

What an abuser tries: the card e-mail is not verified, so the relay sends From the company's
platform address; the abuser types an address as their name instead, so the mail reads
From: "security@paypal.com" <acme@event…>, and most phones show only that name. Also encoded
(RFC 2047, decoded by every mail client) and with a full-width at sign.

The goal that must fail: a mail at the relay whose From display name shows an address. The
control: an ordinary name is kept, and an own server (the user's responsibility, S3.5) is
left alone.
"""

from __future__ import annotations

import email.utils
import unicodedata

import pytest

from outbox.services import outbox_enqueue, outbox_send
from smtp_settings.models import Security
from tests import factories

pytestmark = pytest.mark.usefixtures("english")

DISGUISES = [
    "security@paypal.com",
    "PayPal <security@paypal.com>",
    "=?utf-8?q?security=40paypal=2Ecom?=",
    "security\uff20paypal.com",
]


def _shown_name(received) -> str:
    name = email.utils.parseaddr(str(received.message["From"]))[0]
    return unicodedata.normalize("NFKC", name)


def _send(user) -> None:
    message = outbox_enqueue(user=user, to=["victim@example.com"], subject="x", body_text="x")
    outbox_send(message_id=message.pk)


@pytest.mark.parametrize("name", DISGUISES)
@pytest.mark.parametrize("verified", [False, True], ids=["unverified", "verified"])
def test_no_address_in_the_relays_display_name(db, smtp_servers, name, verified):
    factories.company()
    relay = smtp_servers.plain
    _send(factories.user("MALLORY", name=name, email="mallory@evil.test", verified=verified))

    [received] = relay.messages
    assert "@" not in _shown_name(received)


def test_control_an_ordinary_name_is_kept_and_an_own_server_is_left_alone(db, smtp_servers):
    factories.company()
    _send(factories.user("ANNA", name="Anna Kowalska", verified=False))
    own = smtp_servers.starttls_optional
    bob = factories.user("BOB", name=DISGUISES[0])
    factories.profile(bob, host=own.host, port=own.port, security=Security.NONE)
    _send(bob)

    assert _shown_name(smtp_servers.plain.messages[0]) == "Anna Kowalska"
    assert "@" in _shown_name(own.messages[0])  # the detector fires
