"""Delivery through the real worker to real servers: TLS really negotiated, headers as resolved.

Tests here commit data (`transactional_db`) so the worker process sees it.
"""

from __future__ import annotations

import pytest

from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.models import SenderMode
from tests import factories
from tests.outbox.waiting import settled

pytestmark = [pytest.mark.usefixtures("english", "celery_worker", "transactional_db")]


def _sender(server, *, security: str, login: str = "", password: str = "", **card):
    card.setdefault("email", "anna@acme.example")
    user = factories.user(
        "ANNA",
        name="Anna Kowalska",
        bcc="archive@acme.example",
        reply_to="office@acme.example",
        signature="Anna Kowalska\nAcme Sp. z o.o.",
        **card,
    )
    if login:
        server.users[login] = password
    factories.profile(
        user,
        host=server.host,
        port=server.port,
        security=security,
        login=login,
        password=password,
    )
    return user


def _send(user, **fields) -> OutgoingMessage:
    fields.setdefault("to", ["client@example.com"])
    fields.setdefault("subject", "Faktura 1/2026")
    fields.setdefault("body_text", "Dzień dobry,\nw załączeniu faktura.")
    return outbox_enqueue(user=user, **fields)


@pytest.mark.parametrize(
    ("server_name", "security", "with_auth", "encrypted"),
    [
        ("implicit_tls", "ssl", True, True),
        ("implicit_tls", "ssl", False, True),
        ("starttls", "starttls", True, True),
        ("starttls", "starttls", False, True),
        ("plain", "none", True, False),
        ("plain", "none", False, False),
    ],
)
def test_delivery_with_the_resolved_headers(
    smtp_servers, server_name, security, with_auth, encrypted
):
    server = getattr(smtp_servers, server_name)
    login, password = ("anna@acme.example", factories.secret()) if with_auth else ("", "")
    user = _sender(server, security=security, login=login, password=password)

    message = settled(_send(user, body_html="<html><body><p>Dzień dobry</p></body></html>"))

    assert message.state == MessageState.SENT, message.last_reply
    assert message.last_reply.startswith("250")
    [received] = server.wait_for(1)
    assert received.tls is encrypted
    assert received.auth_login == (login or None)
    assert received.mail_from == "anna@acme.example"
    assert sorted(received.rcpt_tos) == ["archive@acme.example", "client@example.com"]
    mime = received.message
    assert mime["From"] == "Anna Kowalska <anna@acme.example>"
    assert mime["Reply-To"] == "office@acme.example"
    assert "Bcc" not in mime and "archive@acme.example" not in received.content.decode()
    assert mime["Message-ID"] == message.message_id
    assert mime["Subject"] == "Faktura 1/2026"
    text = mime.get_body(("plain",)).get_content().replace("\r\n", "\n")  # CRLF on the wire
    assert text.endswith(
        "Dzień dobry,\nw załączeniu faktura.\n\n-- \nAnna Kowalska\nAcme Sp. z o.o.\n"
    )
    html = mime.get_body(("html",)).get_content()
    assert '<div class="signature">-- <br>Anna Kowalska<br>Acme Sp. z o.o.</div></body>' in html
    assert server.times_accepted(message.message_id) == 1


def test_reply_to_mode_goes_through_the_relay_with_a_verp_envelope(smtp_servers, settings):
    """S7.2: platform From, the user in Reply-To, a signed VERP envelope sender."""
    relay = smtp_servers.plain  # the platform relay in tests (smtp_settings_for_tests)
    factories.company(slug="acme")
    user = factories.user("EWA", name="Ewa", email="ewa@acme.example")
    factories.profile(user, mode=SenderMode.REPLY_TO)

    message = settled(_send(user))
    assert message.state == MessageState.SENT, message.last_reply

    [received] = relay.wait_for(1)
    domain = settings.EVENT_MAIL_DOMAIN
    assert received.message["From"] == f"Ewa <acme@{domain}>"
    assert received.message["Reply-To"] == "ewa@acme.example"
    assert received.mail_from == message.envelope_from
    assert received.mail_from.startswith(f"bounces+{message.pk}-")
    assert received.mail_from.endswith(f"@{domain}")


def test_a_temporary_refusal_is_retried_and_delivered_exactly_once(smtp_servers):
    server = smtp_servers.starttls
    user = _sender(server, security="starttls")
    server.script("MAIL", "451 4.3.0 Mail server temporarily rejected message")

    message = settled(_send(user))

    assert message.state == MessageState.SENT
    assert message.attempts == 2
    assert server.times_accepted(message.message_id) == 1
    [event] = Event.objects.filter(message=message)
    assert event.kind == EventKind.SEND_RETRYING
    assert event.reply.startswith("451 4.3.0")


def test_a_permanent_refusal_fails_at_once_with_an_event(smtp_servers):
    server = smtp_servers.plain
    user = _sender(server, security="none")
    server.script("RCPT", "550 5.1.1 <client@example.com>: Recipient address rejected", None)

    message = settled(_send(user))

    assert message.state == MessageState.FAILED
    assert message.attempts == 1
    assert server.messages == []
    [event] = Event.objects.filter(message=message)
    assert event.kind == EventKind.SEND_FAILED
    assert event.explanation == "recipient_unknown"
    assert "550 5.1.1" in event.reply


def test_a_server_requiring_starttls_refuses_an_unencrypted_configuration(smtp_servers, client):
    """The user sees why, in their language, on the message page and in Events."""
    server = smtp_servers.starttls
    user = _sender(server, security="none")

    message = settled(_send(user))

    assert message.state == MessageState.FAILED
    assert message.explanation == "starttls_required"
    client.force_login(user)
    page = client.get(f"/outbox/{message.pk}/").content.decode()
    assert "530" in page and "STARTTLS" in page
    events = client.get("/events/").content.decode()
    assert "StartTLS" in events


def test_a_connection_refused_fails_with_the_ips_to_whitelist(refused_port, settings):
    settings.PLATFORM_SENDING_IPS = ["203.0.113.10"]
    user = factories.user("PIOTR", email="piotr@acme.example")
    factories.profile(user, host="127.0.0.1", port=refused_port, security="none")

    message = settled(_send(user))
    assert message.state == MessageState.FAILED
    assert message.explanation == "connection_refused"
