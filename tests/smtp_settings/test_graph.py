"""Microsoft Graph sendMail as Microsoft 365's second transport (issue 15, item 3), against a
local HTTPS Graph that checks each bearer token with the local Entra stand-in and its Mail.Send
scope (tests/m365_fixtures.py GraphServer). The browser's 5.7.139 → Graph switch is in
tests/test_browser_microsoft365.py."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from outbox.message import envelope_for, message_bytes
from outbox.models import Event, MessageState
from outbox.services import outbox_enqueue
from smtp_settings.models import OAuthConnection, SenderMode
from smtp_settings.providers.microsoft365 import graph
from smtp_settings.providers.microsoft365.oauth import GRAPH_SCOPES
from smtp_settings.resolve import SenderConfig
from smtp_settings.transports import transport_for
from tests import factories
from tests.m365_fixtures import MAIL_SEND_SCOPE
from tests.outbox.waiting import settled

ADDRESS = "anna@contoso.test"
AUTH_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
)


def _anna():
    user = factories.user("ANNA", email=ADDRESS, name="Anna Kowalska")
    factories.profile(user, mode=SenderMode.MICROSOFT365, login=ADDRESS)
    return user


def _connect(client: Client, provider) -> None:
    provider.add_user("anna", ADDRESS)
    started = client.get("/accounts/microsoft365/connect/")
    assert MAIL_SEND_SCOPE in started["Location"].replace("%2F", "/").replace("%3A", ":")
    response = client.get(
        "/accounts/microsoft365/callback/", provider.sign_in(started["Location"], "anna")
    )
    assert response.status_code == 302 and OAuthConnection.objects.exists()


def _headers(raw: bytes) -> bytes:
    return re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]


def test_graph_receives_what_smtp_would_have_sent(db, client, m365_settings):
    """One message built once, sent through both transports: Graph gets the same bytes."""
    anna = _anna()
    client.force_login(anna)
    _connect(client, m365_settings.provider)
    message = outbox_enqueue(
        user=anna,
        to=["customer@example.com"],
        subject="Faktura FV/1/2026 – zażółć",
        body_text="Dzień dobry,\nw załączniku faktura.\n",
        attachments=[("faktura.pdf", b"%PDF-1.4 test", "application/pdf")],
    )
    sender = SenderConfig.from_snapshot(message.sender)
    data = message_bytes(message, sender)
    envelope = envelope_for(message, sender)

    smtp = transport_for(sender)
    with smtp:
        smtp.send(data, envelope)
    OAuthConnection.objects.update(transport="graph")
    api = transport_for(sender)
    assert isinstance(api, graph.GraphTransport)
    with api:
        reply = api.send(data, envelope)

    [over_smtp] = m365_settings.smtp.wait_for(1)
    [over_graph] = m365_settings.graph.wait_for(1)
    assert reply.startswith("202 Accepted by Microsoft Graph")
    assert _headers(over_graph.raw) == _headers(over_smtp.content)
    assert over_graph.raw == over_smtp.content
    assert over_graph.user == ADDRESS and over_graph.recipients == ["customer@example.com"]


def test_envelope_only_recipients_reach_graph_as_bcc(db, client, m365_settings):
    anna = _anna()
    anna.bcc = "archive@acme.example"
    anna.save()
    client.force_login(anna)
    _connect(client, m365_settings.provider)
    OAuthConnection.objects.update(transport="graph")
    message = outbox_enqueue(user=anna, to=["c@example.com"], subject="s", body_text="x")
    sender = SenderConfig.from_snapshot(message.sender)
    with transport_for(sender) as api:
        api.send(message_bytes(message, sender), envelope_for(message, sender))
    [received] = m365_settings.graph.wait_for(1)
    assert sorted(received.recipients) == ["archive@acme.example", "c@example.com"]
    assert b"archive@acme.example" not in message_bytes(message, sender)  # only for Graph


def test_with_bcc_leaves_a_message_without_hidden_recipients_alone():
    data = b"From: a@x.test\r\nTo: B <b@x.test>,\r\n c@x.test\r\nCc: d@x.test\r\n\r\nbody\r\n"
    assert graph.with_bcc(data, ["b@x.test", "C@x.test", "d@x.test"]) == data
    assert graph.with_bcc(data, ["e@x.test"]) == (
        b"From: a@x.test\r\nTo: B <b@x.test>,\r\n c@x.test\r\nCc: d@x.test\r\nBcc: e@x.test"
        b"\r\n\r\nbody\r\n"
    )


@pytest.mark.usefixtures("english")
def test_a_token_without_mail_send_is_refused_by_graph_and_explained(db, client, m365_settings):
    """Connected while the platform asked only for SMTP (M365_TRANSPORT=smtp): no Mail.Send in
    the consent. The switch to Graph finds it at once and says to authenticate again."""
    m365_settings.settings.M365_TRANSPORT = "smtp"
    anna = _anna()
    client.force_login(anna)
    _connect_without_graph = m365_settings.provider
    _connect_without_graph.add_user("anna", ADDRESS)
    started = client.get("/accounts/microsoft365/connect/")
    assert "Mail.Send" not in started["Location"]
    client.get(
        "/accounts/microsoft365/callback/",
        _connect_without_graph.sign_in(started["Location"], "anna"),
    )
    m365_settings.settings.M365_TRANSPORT = "auto"

    page = client.post("/accounts/card/", {"action": "m365_graph"}, follow=True)

    text = page.content.decode()
    assert "Microsoft 365 no longer accepts the platform's sign-in" in text
    assert OAuthConnection.objects.get().transport == ""


@pytest.mark.usefixtures("english")
@pytest.mark.parametrize(
    ("status", "code", "explanation", "transient"),
    [
        (429, "ApplicationThrottled", "throttled", True),
        (503, "ServiceUnavailable", "throttled", True),
        (403, "ErrorSendAsDenied", "sender_denied", False),
        (413, "ErrorMessageSizeExceeded", "message_too_large", False),
        (403, "MailboxNotEnabledForRESTAPI", "m365_graph_mailbox", False),
        (400, "ErrorInvalidRecipients", "bad_recipient", False),
        (500, "UnknownError", "temporary_failure", True),
    ],
)
def test_graph_answers_are_explained(
    db, client, m365_settings, status, code, explanation, transient
):
    anna = _anna()
    client.force_login(anna)
    _connect(client, m365_settings.provider)
    OAuthConnection.objects.update(transport="graph")
    message = outbox_enqueue(user=anna, to=["c@example.com"], subject="s", body_text="x")
    sender = SenderConfig.from_snapshot(message.sender)
    m365_settings.graph.script(status, retry_after=7 if status == 429 else None, code=code)
    with transport_for(sender) as api, pytest.raises(Exception) as failed:
        api.send(message_bytes(message, sender), envelope_for(message, sender))
    error = failed.value
    assert (error.explanation, error.transient) == (explanation, transient), error.reply
    assert str(status) in error.reply and code in error.reply
    if status == 429:
        assert error.params == {"retry_after": 7.0}


@pytest.mark.usefixtures("english")
def test_an_expired_token_is_refreshed_once_on_401(db, client, m365_settings):
    anna = _anna()
    client.force_login(anna)
    _connect(client, m365_settings.provider)
    OAuthConnection.objects.update(transport="graph")
    message = outbox_enqueue(user=anna, to=["c@example.com"], subject="s", body_text="x")
    sender = SenderConfig.from_snapshot(message.sender)
    with transport_for(sender) as api:
        m365_settings.provider.expire_access_tokens("anna")  # Graph refuses the cached one
        api.send(message_bytes(message, sender), envelope_for(message, sender))
    assert m365_settings.graph.requests == [401, 202]


def test_the_graph_token_goes_only_to_the_endpoint_it_was_connected_for(db, client, m365_settings):
    anna = _anna()
    client.force_login(anna)
    _connect(client, m365_settings.provider)
    OAuthConnection.objects.update(transport="graph")
    m365_settings.settings.M365_GRAPH_ENDPOINT = "https://localhost:1/v1.0"
    message = outbox_enqueue(user=anna, to=["c@example.com"], subject="s", body_text="x")
    sender = SenderConfig.from_snapshot(message.sender)
    with pytest.raises(Exception) as refused, transport_for(sender) as api:
        api.send(message_bytes(message, sender), envelope_for(message, sender))
    assert refused.value.explanation == "password_bound_elsewhere"
    assert m365_settings.graph.requests == []


@pytest.mark.usefixtures("english", "celery_worker")
def test_a_tenant_without_smtp_auth_sends_through_graph_after_the_cards_click(
    transactional_db, m365_settings
):
    """SMTP AUTH is off for the tenant (5.7.139): the mail fails with that explanation, the card
    offers Graph, one click, and the next mail goes through Graph; a 429 with Retry-After on
    the way pauses the sender and the mail still goes."""
    anna = _anna()
    client = Client()
    client.force_login(anna)
    _connect(client, m365_settings.provider)
    m365_settings.smtp.script("AUTH", AUTH_DISABLED, times=None)

    first = settled(outbox_enqueue(user=anna, to=["c@example.com"], subject="1", body_text="x"))
    assert first.state == MessageState.FAILED
    assert first.explanation == "m365_smtp_auth_disabled"
    card = client.get("/accounts/card/").content.decode()
    assert "Your organisation has SMTP sign-in (SMTP AUTH) turned off" in card
    assert "5.7.139" in card

    switched = client.post("/accounts/card/", {"action": "m365_graph"}, follow=True)
    assert "Your mail is sent through Microsoft Graph now" in switched.content.decode()
    assert "Microsoft Graph (" in switched.content.decode()  # the effective sender says so
    m365_settings.graph.script(429, retry_after=1, code="ApplicationThrottled")
    second = settled(
        outbox_enqueue(user=anna, to=["c@example.com"], subject="2", body_text="x"), timeout=30
    )

    assert second.state == MessageState.SENT, (second.last_reply, second.explanation)
    assert second.last_reply.startswith("202 Accepted by Microsoft Graph")
    [received] = m365_settings.graph.wait_for(1)
    assert b"Subject: 2" in received.raw and received.user == ADDRESS
    assert m365_settings.graph.requests == [429, 202]
    assert not Event.objects.filter(message=second, kind="send_failed").exists()
    assert GRAPH_SCOPES == [MAIL_SEND_SCOPE]


@pytest.mark.usefixtures("english")
def test_only_the_owner_switches_their_own_account_to_graph(db, client, m365_settings):
    """Staff may open Anna's card, but not choose for her sign-in (nor a user for another)."""
    anna = _anna()
    client.force_login(anna)
    _connect(client, m365_settings.provider)
    staff = factories.user("STAFF", is_staff=True)
    other = Client()
    other.force_login(staff)

    page = other.post("/accounts/card/ANNA/", {"action": "m365_graph"}, follow=True)

    assert "owner can choose this, on their own card" in page.content.decode()
    assert OAuthConnection.objects.get().transport == ""
    assert m365_settings.graph.requests == []
