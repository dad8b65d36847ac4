"""What the connection test may tell (issue 11, item 10).

An attacker with an ordinary account wants from it: the platform relay's internal address and
banner, a list of which addresses some server accepts (RCPT probing), and the private address a
name resolves to inside the platform's network. Each test shows none of it comes out.
"""

from __future__ import annotations

import html
import re

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from smtp_settings.diagnose import connection_test
from smtp_settings.models import Security
from smtp_settings.selectors import sender_config_for
from tests import factories

pytestmark = pytest.mark.usefixtures("english")

CARD_URL = "/accounts/card/"
LOGIN = "anna@acme.example"


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    cache.clear()


def _page(response) -> str:
    return html.unescape(response.content.decode())


def _test_section(page: str) -> str:
    match = re.search(r'<section class="connection-test".*?</section>', page, re.S)
    assert match, "no connection test on the page"
    return match.group(0)


def test_a_default_user_learns_only_that_the_relay_answers(db, smtp_servers):
    relay = smtp_servers.plain
    ewa = factories.user("EWA", email="ewa@acme.example")
    client = Client()
    client.force_login(ewa)

    section = _test_section(_page(client.post(CARD_URL, {"action": "test_connection"})))

    assert "Connection test passed" in section
    assert "The platform's mail server answers" in section
    for leak in [str(relay.relay_port), relay.host, "localhost", "ESMTP", "EHLO", "250", "AUTH"]:
        assert leak not in section, leak
    assert relay.messages == []


def test_a_relay_that_does_not_answer_is_said_so_without_its_address(
    db, smtp_servers, refused_port, settings
):
    settings.EMAIL_PORT = refused_port
    ewa = factories.user("EWA", email="ewa@acme.example")

    result = connection_test(sender_config_for(user=ewa), to="ewa@acme.example")

    assert not result.passed
    text = str(result.as_dict())
    assert "The platform's mail server does not answer right now." in text
    assert str(refused_port) not in text and "127.0.0.1" not in text
    assert "Connection refused" not in text  # no raw reply either


def _anna_with_server(server) -> object:
    anna = factories.user("ANNA", email=LOGIN)
    password = factories.secret()
    server.users[LOGIN] = password
    factories.profile(
        anna,
        host=server.host,
        port=server.port,
        security=Security.SSL,
        login=LOGIN,
        password=password,
    )
    return anna


def test_a_user_cannot_probe_other_addresses(db, smtp_servers):
    server = smtp_servers.implicit_tls
    anna = _anna_with_server(server)
    client = Client()
    client.force_login(anna)

    probe = _page(
        client.post(CARD_URL, {"action": "test_connection", "to": "ceo@competitor.example"})
    )

    assert "checks the recipient only for your own address" in _test_section(probe)
    assert server.auth_attempts == []  # nothing connected, so no RCPT was offered
    # Her own address is tested as before (the control: the test does reach the server).
    own = _page(client.post(CARD_URL, {"action": "test_connection", "to": LOGIN.upper()}))
    assert "Connection test passed" in _test_section(own)
    assert len(server.auth_attempts) == 1


def test_staff_may_test_another_recipient(db, smtp_servers):
    server = smtp_servers.implicit_tls
    _anna_with_server(server)
    staff = factories.user("ADMIN", is_staff=True, email="admin@acme.example")
    client = Client()
    client.force_login(staff)

    page = _page(
        client.post(f"{CARD_URL}ANNA/", {"action": "test_connection", "to": "client@example.com"})
    )

    section = _test_section(page)
    assert "Connection test passed" in section
    assert f"{LOGIN} → client@example.com" in section


def test_a_name_resolving_to_a_private_address_is_refused_without_naming_it(db, settings):
    """`localhost` really resolves to 127.0.0.1 (and maybe ::1); the guard is on."""
    settings.SMTP_ALLOW_PRIVATE_HOSTS = False
    settings.SMTP_ALLOWED_PORTS = [587]
    anna = factories.user("ANNA", email=LOGIN)
    factories.profile(anna, host="localhost", port=587, security=Security.STARTTLS)

    result = connection_test(sender_config_for(user=anna), to=LOGIN)

    assert not result.passed
    text = str(result.as_dict())
    assert "localhost leads to a private or local network address" in text
    assert "127.0.0.1" not in text and "::1" not in text


def test_an_allowed_private_server_is_not_named_either(db, smtp_servers):
    """With SMTP_ALLOW_PRIVATE_HOSTS (development), the steps say "a private address"."""
    anna = _anna_with_server(smtp_servers.implicit_tls)

    result = connection_test(sender_config_for(user=anna), to=LOGIN)

    assert result.passed
    assert "127.0.0.1" not in str(result.as_dict())
    assert [s.detail for s in result.steps[:2]] == ["a private address"] * 2


# -- the same, when a mail through the relay fails (review of issue 11, item 10) ---------------
@pytest.mark.parametrize("failure", ["refused", "silent", "stalls after the message"])
def test_a_relay_failure_tells_a_default_user_no_address(
    db, smtp_servers, refused_port, silent_server, settings, failure
):
    """The connection test hides the relay's address; its Events and message page must too."""
    from outbox.models import Event, OutgoingMessage
    from outbox.services import outbox_enqueue, outbox_send

    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = {
        "refused": refused_port,
        "silent": silent_server.port,
        "stalls after the message": smtp_servers.plain.relay_port,
    }[failure]
    smtp_servers.plain.stall_at("AFTER_DATA", 2)
    settings.SMTP_TIMEOUT = settings.EMAIL_TIMEOUT = 0.5
    settings.SEND_MAX_ATTEMPTS = 1
    ewa = factories.user("EWA", email="ewa@acme.example")
    message = outbox_enqueue(user=ewa, to=["client@example.com"], subject="x", body_text="x")
    outbox_send(message_id=message.pk)
    message.refresh_from_db()
    client = Client()
    client.force_login(ewa)

    shown = _page(client.get(reverse("outbox:message", args=[message.pk]))) + _page(
        client.get(reverse("outbox:events"))
    )

    assert message.state == "failed"
    assert Event.objects.filter(message=message).exists()
    for leak in [str(settings.EMAIL_PORT), "127.0.0.1"]:
        assert leak not in shown.lower(), leak
    if failure != "stalls after the message":  # reaching the relay at all: not the user's
        assert "The platform's mail server does not answer right now." in shown
        assert "refused" not in shown.lower() and "timed out" not in shown.lower()
        assert OutgoingMessage.objects.get(pk=message.pk).explanation_params == {}
