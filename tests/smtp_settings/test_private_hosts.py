"""The private-address guard (SMTP_ALLOW_PRIVATE_HOSTS=False): a user's server may not be on the
platform's own network, in the connection test and when sending. The platform relay, configured
by the platform itself, is not subject to it.

Sending runs `outbox_send` in-process: under plain `db` the worker is never scheduled (on_commit
callbacks are dropped with the test's transaction).
"""

from __future__ import annotations

import functools

import pytest
from aiosmtpd.smtp import SMTP
from django.core import mail
from django.core.cache import cache
from django.utils.html import escape

from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue, outbox_send
from smtp_settings.diagnose import FAILED, OK, SKIPPED, STEPS, connection_test
from smtp_settings.explain import CATALOGUE
from smtp_settings.models import Security
from smtp_settings.selectors import sender_config_for
from smtp_settings.transports import SMTP_BACKEND
from tests import factories
from tests.smtp_fixtures import _ScriptedSMTP

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

PRIVATE_TITLE = str(CATALOGUE["private_host"].title)


@pytest.fixture(autouse=True)
def _guard_on(settings, smtp_servers):
    """The production setting; the server fixtures' autouse settings turn it off first.

    The relay in tests is smtp_servers.plain (smtp_settings_for_tests) reached over SMTP, as
    with EMAIL_URL=smtp://...; pytest-django swaps EMAIL_BACKEND for locmem, which the app
    would take for an ESP.
    """
    settings.SMTP_ALLOW_PRIVATE_HOSTS = False
    settings.EMAIL_BACKEND = SMTP_BACKEND
    cache.clear()


@pytest.fixture
def connections(monkeypatch) -> list[str]:
    """The name of the server of every SMTP session that got as far as EHLO."""
    seen: list[str] = []
    original = SMTP.smtp_EHLO

    @functools.wraps(original)
    async def spy(self, arg):
        seen.append(self.test_server.name)
        return await original(self, arg)

    monkeypatch.setattr(_ScriptedSMTP, "smtp_EHLO", spy)
    return seen


def _own_server_user(server, host: str):
    user = factories.user("ANNA", name="Anna Kowalska", email="anna@acme.example")
    factories.profile(user, host=host, port=server.port, security=Security.NONE)
    return user


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_connection_test_refuses_a_private_server(smtp_servers, connections, host):
    server = smtp_servers.plain
    user = _own_server_user(server, host)

    result = connection_test(sender_config_for(user=user), to="client@example.com")

    assert not result.passed
    outcomes = {step.name: step.outcome for step in result.steps}
    assert outcomes == {"dns": FAILED, **dict.fromkeys(list(STEPS)[1:], SKIPPED)}
    dns = result.steps[0]
    assert dns.explanation["title"] == PRIVATE_TITLE
    assert connections == []  # refused before connecting
    assert server.messages == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_sending_refuses_a_private_server(smtp_servers, connections, host):
    server = smtp_servers.plain
    user = _own_server_user(server, host)
    message = outbox_enqueue(
        user=user, to=["client@example.com"], subject="Faktura 1/2026", body_text="Dzień dobry"
    )

    state = outbox_send(message_id=message.pk)

    message.refresh_from_db()
    assert state == message.state == MessageState.FAILED
    assert message.explanation == "private_host"
    assert message.explanation_params["host"] == host
    assert message.attempts == 1
    [event] = Event.objects.filter(message=message)
    assert (event.kind, event.explanation) == (EventKind.SEND_FAILED, "private_host")
    assert connections == []
    assert server.messages == []


def test_card_page_explains_the_private_server(client, smtp_servers, connections):
    user = _own_server_user(smtp_servers.plain, "127.0.0.1")
    client.force_login(user)

    html = client.post("/accounts/card/", {"action": "test_connection"}).content.decode()

    assert "Connection test failed" in html
    assert '<li class="failed" data-step="dns">' in html
    assert escape(PRIVATE_TITLE) in html
    assert connections == []


def test_the_private_server_is_allowed_when_the_setting_says_so(smtp_servers, settings):
    settings.SMTP_ALLOW_PRIVATE_HOSTS = True
    user = _own_server_user(smtp_servers.plain, "127.0.0.1")

    result = connection_test(sender_config_for(user=user), to="client@example.com")

    assert result.passed, result.as_dict()


def test_the_relay_is_not_subject_to_the_guard_in_the_connection_test(smtp_servers, connections):
    """Default mode goes through the platform relay, here smtp_servers.plain on 127.0.0.1."""
    relay = smtp_servers.plain
    user = factories.user("EWA", name="Ewa Nowak", email="ewa@acme.example")

    result = connection_test(sender_config_for(user=user), to="client@example.com")

    assert result.passed, result.as_dict()
    # Issue 11: a Default user learns only that the relay answers, never where it is.
    assert [(s.name, s.outcome, s.detail, s.reply) for s in result.steps] == [("relay", OK, "", "")]
    assert connections == [relay.name]
    assert relay.messages == []


def test_the_relay_is_not_subject_to_the_guard_when_sending(smtp_servers):
    relay = smtp_servers.plain
    user = factories.user("EWA", name="Ewa Nowak", email="ewa@acme.example")
    factories.profile(user, mode="default")
    message = outbox_enqueue(
        user=user, to=["client@example.com"], subject="Faktura 2/2026", body_text="Dzień dobry"
    )

    state = outbox_send(message_id=message.pk)

    message.refresh_from_db()
    assert state == message.state == MessageState.SENT, message.last_reply
    [received] = relay.wait_for(1)
    assert received.message["From"] == "Ewa Nowak <ewa@acme.example>"
    assert received.message["Subject"] == "Faktura 2/2026"
    assert not Event.objects.exists()
    assert OutgoingMessage.objects.get().last_reply.startswith("250")


def test_a_non_anymail_relay_backend_that_took_the_mail_is_not_recorded_as_failed(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    user = factories.user("EWA", name="Ewa Nowak", email="ewa@acme.example")
    message = outbox_enqueue(
        user=user, to=["client@example.com"], subject="Faktura 3/2026", body_text="Dzień dobry"
    )

    state = outbox_send(message_id=message.pk)

    assert len(mail.outbox) == 1  # the backend took it
    message.refresh_from_db()
    assert (state, message.state, message.explanation) == (
        MessageState.SENT,
        MessageState.SENT,
        "",
    )
