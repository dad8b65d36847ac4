"""Attacks found in the review of issue 11 (the relay, its limits and what it discloses).

What an abuser tries, and the goal that must fail:
- the relay in disguise: a Default user whose card e-mail (security@paypal.com) is not
  verified saves, on the card page, the mail sender SMTP with the platform relay's own host
  and port and no login, then presses "Send test e-mail" and "Test connection". Goal: mail at
  the relay From the unverified address (and, being "SMTP", outside the relay's limits).
- a Default user reads the relay's internal address off a failed message. Goal: the relay's
  host or port on the message page or in Events.

Figures (area "attacks"), each "= 0", with a control showing the detector fire.
"""

from __future__ import annotations

import email.utils
import html

import pytest
from django.test import Client
from django.urls import reverse

from outbox.models import OutgoingMessage
from outbox.services import outbox_enqueue, outbox_send
from smtp_settings.models import Security, SenderMode
from tests import factories

AREA = "attacks"
SPOOFED = "security@paypal.com"

pytestmark = pytest.mark.usefixtures("db", "english")


def _from_spoofed(server) -> int:
    return sum(
        email.utils.parseaddr(str(m.message["From"]))[1].lower() == SPOOFED for m in server.messages
    )


def _mallory_saves_server(host: str, port: int) -> Client:
    mallory = factories.user("MALLORY", name="PayPal Security", email=SPOOFED, verified=False)
    client = Client()
    client.force_login(mallory)
    response = client.post(
        reverse("card:card"),
        {
            "name": "PayPal Security",
            "email": SPOOFED,
            "mode": SenderMode.SMTP,
            "server": f"{host}:{port}",
            "security": Security.NONE,
            "login": "",
            "password": "",
        },
    )
    assert response.status_code == 302, "the card did not save"
    return client


def _press_test_buttons(client: Client) -> None:
    for _press in range(3):
        client.post(reverse("outbox:test_email"))
        client.post(reverse("card:card"), {"action": "test_connection"})
    for message in OutgoingMessage.objects.filter(state="queued"):
        outbox_send(message_id=message.pk)


def test_the_relay_typed_as_an_own_server_sends_nothing_from_an_unverified_address(
    smtp_servers, figures
):
    relay = smtp_servers.plain  # the platform relay: its second port (EMAIL_PORT)
    client = _mallory_saves_server(relay.host, relay.relay_port)

    _press_test_buttons(client)

    spoofed = _from_spoofed(relay)
    figures.add(
        AREA, "relay typed as an own server: mails From an unverified address", spoofed, "= 0"
    )
    assert spoofed == 0
    assert OutgoingMessage.objects.filter(explanation="relay_as_own_server").count() == 3


def test_control_a_real_own_server_gets_the_mail_from_the_card_address(smtp_servers):
    other = smtp_servers.starttls_optional
    client = _mallory_saves_server(other.host, other.port)

    _press_test_buttons(client)

    assert _from_spoofed(other) == 3  # the detector fires: own servers are the user's (S3.5)


@pytest.mark.parametrize("leak", ["hidden", "control"])
def test_a_failed_relay_mail_names_no_relay_address(
    smtp_servers, refused_port, settings, figures, leak
):
    settings.EMAIL_PORT = refused_port
    settings.SEND_MAX_ATTEMPTS = 1
    ewa = factories.user("EWA", email="ewa@acme.example")
    message = outbox_enqueue(user=ewa, to=["client@example.com"], subject="x", body_text="x")
    outbox_send(message_id=message.pk)
    client = Client()
    client.force_login(ewa)
    if leak == "control":  # what an own server's failure shows: its address, as it should
        OutgoingMessage.objects.filter(pk=message.pk).update(
            explanation="connection_refused",
            explanation_params={"host": settings.EMAIL_HOST, "port": refused_port},
        )

    shown = "".join(
        html.unescape(client.get(url).content.decode())
        for url in (reverse("outbox:message", args=[message.pk]), reverse("outbox:events"))
    )

    leaked = int(f"{settings.EMAIL_HOST}:{refused_port}" in shown)
    if leak == "hidden":
        figures.add(AREA, "relay address shown to a Default user on a failed mail", leaked, "= 0")
        assert leaked == 0
    else:
        assert leaked == 1


# -- an address as the display name (review of issue 11, item 3) ---------------------------------
NAMES = ["security@paypal.com", "PayPal <security@paypal.com>", "security\uff20paypal.com"]


def _names_showing_an_address(server) -> int:
    import unicodedata

    return sum(
        "@" in unicodedata.normalize("NFKC", email.utils.parseaddr(str(m.message["From"]))[0])
        for m in server.messages
    )


@pytest.mark.parametrize("through", ["relay", "control: own server"])
def test_an_address_as_the_name_never_shows_through_the_relay(smtp_servers, figures, through):
    factories.company()
    own = smtp_servers.starttls_optional
    server = smtp_servers.plain if through == "relay" else own
    for i, name in enumerate(NAMES):
        user = factories.user(f"M{i}", name=name, email=f"m{i}@evil.test", verified=i % 2 == 0)
        if through != "relay":
            factories.profile(user, host=own.host, port=own.port, security=Security.NONE)
        message = outbox_enqueue(user=user, to=["victim@example.com"], subject="x", body_text="x")
        outbox_send(message_id=message.pk)

    shown = _names_showing_an_address(server)
    if through == "relay":
        figures.add(AREA, "relay mails whose display name shows an address", shown, "= 0")
        assert shown == 0
    else:
        assert shown == len(NAMES)  # the detector fires (own servers are the user's, S3.5)
