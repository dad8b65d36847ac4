"""Every catalogue reply a test server gives yields its explanation, in Polish and in English.

Acceptance line: "every catalogue reply injected by a test server yields its explanation (Polish
and English asserted)". Each row configures a user's own SMTP server, scripts the reply on a
real aiosmtpd server (or points at a port that fails without one: refused, silent, a bad
certificate, the wrong TLS), sends through the REAL Celery worker and waits until the message
is final. Then it checks the message and its Event (key and raw reply), and renders the
message status page and the Events page through the Django test client with the user's
language set to English, then Polish: the explanation `explain(key, params)` gives in that
language must be on both pages, HTML-escaped, and so must some words written here by hand.

Transient keys (throttling, a timeout, a lost connection) would be retried SEND_MAX_ATTEMPTS
times with backoff; such rows start the message at its last attempt (attempts preset before the
task is published), so the worker's own "out of attempts" branch fails it at once. The retry
itself is shown separately (`test_a_throttled_message_is_retried_...`).

Tests here commit data (`transactional_db`) so the worker process sees it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest
from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import translation
from django.utils.html import escape

from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue, outbox_send
from smtp_settings import explain as explain_module
from smtp_settings.explain import CATALOGUE, explain
from tests import factories
from tests.outbox.waiting import settled

pytestmark = [pytest.mark.usefixtures("english", "celery_worker", "transactional_db")]

LOGIN = "anna@acme.example"
TO = "client@example.com"


@dataclass(frozen=True)
class Row:
    """One failure: where it comes from, the key it must get, words each language must show."""

    key: str
    server: str  # an SMTPServers attribute, or "refused" / "silent"
    security: str
    en: str  # words of the English explanation, written here (not taken from the catalogue)
    pl: str  # the same in Polish
    stage: str = ""  # where the reply is scripted ("" : no script)
    reply: str = ""  # the scripted reply, as the server says it (multi-line allowed)
    with_login: bool = False  # the profile has a login and password (registered on the server)
    last_attempt: bool = False  # a transient key: start at the last attempt (see module doc)
    raw: tuple[str, ...] = field(default=())  # what the stored raw reply must contain


def _seen_by_client(reply: str) -> str:
    """The reply as smtplib hands it over and the app stores it: "code text\\ntext…"."""
    lines = reply.splitlines()
    return f"{lines[0][:3]} " + "\n".join(line[4:].strip() for line in lines)


# -- replies: one row per reply-based catalogue entry (some entries twice: two servers' words) --
REPLY_ROWS = [
    pytest.param(
        Row(
            "gmail_app_password",
            "implicit_tls",
            "ssl",
            en="app password",
            pl="hasło aplikacji",
            stage="AUTH",
            reply=(
                "534-5.7.9 Application-specific password required. For more information, go to\n"
                "534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor "
                "d2e1a72fcca58-6e0b8f6a1b2sm1234567pfb.12 - gsmtp"
            ),
            with_login=True,
        ),
        id="gmail-534-5.7.9-multiline-AUTH",
    ),
    pytest.param(
        Row(
            "auth_failed",
            "implicit_tls",
            "ssl",
            en="did not accept the user name or password",
            pl="nie przyjął nazwy użytkownika lub hasła",
            stage="AUTH",
            reply=(
                "535-5.7.8 Username and Password not accepted. For more information, go to\n"
                "535 5.7.8  https://support.google.com/mail/?p=BadCredentials "
                "a640c23a62f3a-a9a0f1b2c3dsm123456766b.12 - gsmtp"
            ),
            with_login=True,
        ),
        id="gmail-535-5.7.8-AUTH",
    ),
    pytest.param(
        Row(
            "auth_failed",
            "implicit_tls",
            "ssl",
            en="did not accept the user name or password",
            pl="nie przyjął nazwy użytkownika lub hasła",
            stage="AUTH",
            reply=(
                "535 5.7.139 Authentication unsuccessful, the user credentials were incorrect. "
                "[WA1P291CA0012.POLP291.PROD.OUTLOOK.COM 2026-01-12T10:15:02.123Z 08DD2F1A]"
            ),
            with_login=True,
        ),
        id="microsoft-535-5.7.139-bad-credentials-AUTH",
    ),
    pytest.param(
        Row(
            "m365_smtp_auth_disabled",
            "implicit_tls",
            "ssl",
            en="Authenticated SMTP",
            pl="Uwierzytelniony SMTP",
            stage="AUTH",
            reply=(
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
                "for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
                "[WA1P291CA0012.POLP291.PROD.OUTLOOK.COM 2026-01-12T10:15:02.123Z 08DD2F1A]"
            ),
            with_login=True,
        ),
        id="microsoft-535-5.7.139-smtp-auth-disabled-AUTH",
    ),
    pytest.param(
        Row(
            "m365_basic_auth",
            "implicit_tls",
            "ssl",
            en="no longer accepts a password",
            pl="nie przyjmuje już hasła",
            stage="AUTH",
            reply=(
                "550 5.7.30 Basic authentication is not supported for Client Submission. "
                "[WA1P291CA0012.POLP291.PROD.OUTLOOK.COM 2026-01-12T10:15:02.123Z 08DD2F1A]"
            ),
            with_login=True,
        ),
        id="microsoft-550-5.7.30-basic-auth-AUTH",
    ),
    pytest.param(
        Row(
            "auth_method_unsupported",
            "implicit_tls",
            "ssl",
            en="no sign-in method that works with a password",
            pl="żadnej metody logowania",
            stage="AUTH",
            reply="504 5.5.4 Unrecognized authentication type",
            with_login=True,
        ),
        id="504-5.5.4-unrecognized-auth-type-AUTH",
    ),
    pytest.param(
        Row(
            "starttls_required",
            "plain",
            "none",
            en="requires an encrypted connection (StartTLS) first",
            pl="wymaga najpierw połączenia szyfrowanego",
            stage="MAIL",
            reply="530 5.7.0 Must issue a STARTTLS command first. "
            "d2e1a72fcca58-6e0b8f6a1b2sm1234567pfb.12 - gsmtp",
        ),
        id="530-5.7.0-must-issue-starttls-MAIL",
    ),
    pytest.param(
        Row(
            "auth_required",
            "starttls",
            "starttls",
            en="sends mail only after signing in",
            pl="dopiero po zalogowaniu",
            stage="MAIL",
            reply="530 5.7.57 Client not authenticated to send mail. "
            "[WA1P291CA0012.POLP291.PROD.OUTLOOK.COM 2026-01-12T10:15:02.123Z 08DD2F1A]",
        ),
        id="microsoft-530-5.7.57-not-authenticated-MAIL",
    ),
    pytest.param(
        Row(
            "sender_denied",
            "starttls",
            "starttls",
            en="does not let this mailbox send from your e-mail address",
            pl="nie pozwala tej skrzynce wysyłać",
            stage="MAIL",
            reply="550 5.7.1 Access denied",
        ),
        id="550-5.7.1-bare-sender-denied-MAIL",
    ),
    pytest.param(
        Row(
            "sender_denied",
            "starttls",
            "starttls",
            en="does not let this mailbox send from your e-mail address",
            pl="nie pozwala tej skrzynce wysyłać",
            stage="MAIL",
            reply=f"553 5.7.1 <{LOGIN}>: Sender address rejected: "
            "not owned by user office@acme.example",
        ),
        id="postfix-553-5.7.1-sender-not-owned-MAIL",
    ),
    pytest.param(
        Row(
            "relay_denied",
            "starttls",
            "starttls",
            en="refuses to pass on mail",
            pl="odmawia przekazania poczty",
            stage="RCPT",
            reply="550 5.7.1 Access denied",
        ),
        id="550-5.7.1-bare-relay-denied-RCPT",
    ),
    pytest.param(
        Row(
            "relay_denied",
            "starttls",
            "starttls",
            en="refuses to pass on mail",
            pl="odmawia przekazania poczty",
            stage="RCPT",
            reply=f"554 5.7.1 <{TO}>: Relay access denied",
        ),
        id="postfix-554-5.7.1-relay-access-denied-RCPT",
    ),
    pytest.param(
        Row(
            "recipient_unknown",
            "starttls",
            "starttls",
            en="address does not exist",
            pl="Adres odbiorcy nie istnieje",
            stage="RCPT",
            reply=f"550 5.1.1 <{TO}>: Recipient address rejected: "
            "User unknown in local recipient table",
        ),
        id="550-5.1.1-recipient-unknown-RCPT",
    ),
    pytest.param(
        Row(
            "ip_not_allowed",
            "starttls",
            "starttls",
            en="does not accept mail from the platform",
            pl="nie przyjmuje poczty z adresu IP platformy",
            stage="RCPT",
            reply="554 5.7.1 <unknown[203.0.113.10]>: Client host rejected: Access denied",
        ),
        id="postfix-554-5.7.1-client-host-rejected-RCPT",
    ),
    pytest.param(
        Row(
            "daily_limit",
            "starttls",
            "starttls",
            en="has reached its sending limit",
            pl="osiągnęła limit wysyłki",
            stage="MAIL",
            reply=(
                "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\n"
                "550-5.4.5 sending limits go to\n"
                "550 5.4.5  https://support.google.com/a/answer/166852 "
                "d2e1a72fcca58-6e0b8f6a1b2sm1234567pfb.12 - gsmtp"
            ),
        ),
        id="gmail-550-5.4.5-daily-limit-MAIL",
    ),
    pytest.param(
        Row(
            "message_too_large",
            "starttls",
            "starttls",
            en="too large for the mail server",
            pl="zbyt duża dla serwera poczty",
            stage="DATA",
            reply="552 5.3.4 Message size exceeds fixed maximum message size",
        ),
        id="552-5.3.4-too-large-DATA",
    ),
    pytest.param(
        Row(
            "spf_rejected",
            "starttls",
            "starttls",
            en="SPF record",
            pl="rekordu SPF",
            stage="DATA",
            reply=(
                "550-5.7.26 This mail has been blocked because the sender is unauthenticated.\n"
                "550-5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM.\n"
                "550 5.7.26  https://support.google.com/mail/answer/81126 - gsmtp"
            ),
        ),
        id="gmail-550-5.7.26-spf-dmarc-DATA",
    ),
    pytest.param(
        Row(
            "rejected",
            "starttls",
            "starttls",
            en="refused the message",
            pl="odrzucił wiadomość",
            stage="DATA",
            reply="554 5.6.0 Message rejected: content policy violation",
        ),
        id="554-5.6.0-rejected-DATA",
    ),
    pytest.param(
        Row(
            "throttled",
            "starttls",
            "starttls",
            en="limiting how fast mail is sent",
            pl="ogranicza tempo wysyłki",
            stage="MAIL",
            reply="421 4.7.0 Try again later, closing connection. "
            "d2e1a72fcca58-6e0b8f6a1b2sm1234567pfb.12 - gsmtp",
            last_attempt=True,
        ),
        id="gmail-421-4.7.0-throttled-MAIL-last-attempt",
    ),
    pytest.param(
        Row(
            "temporary_failure",
            "starttls",
            "starttls",
            en="could not take the message right now",
            pl="nie mógł teraz przyjąć wiadomości",
            stage="DATA",
            reply="451 4.3.0 Error: queue file write error",
            last_attempt=True,
        ),
        id="postfix-451-4.3.0-temporary-DATA-last-attempt",
    ),
]

# -- failures without a reply: the network, TLS, the server's EHLO --------------------------------
NON_REPLY_ROWS = [
    pytest.param(
        Row(
            "connection_refused",
            "refused",
            "none",
            en="refused the connection",
            pl="odrzucił połączenie",
            raw=("ConnectionRefusedError",),
        ),
        id="connection-refused",
    ),
    pytest.param(
        Row(
            "connection_timeout",
            "silent",
            "none",
            en="did not answer in time",
            pl="nie odpowiedział na czas",
            last_attempt=True,
            raw=("timed out",),
        ),
        id="silent-server-timeout-slow-3s",  # SMTP_TIMEOUT=3 in the worker
    ),
    pytest.param(
        Row(
            "connection_lost",
            "starttls",
            "starttls",
            en="was lost during sending",
            pl="zostało przerwane",
            stage="MAIL",
            last_attempt=True,
        ),
        id="dropped-at-MAIL-last-attempt",
    ),
    pytest.param(
        Row(
            "cert_expired",
            "expired_cert",
            "ssl",
            en="certificate has expired",
            pl="wygasł",
            raw=("certificate has expired",),
        ),
        id="expired-certificate",
    ),
    pytest.param(
        Row(
            "cert_hostname",
            "wrong_host_cert",
            "ssl",
            en="issued for a different server name",
            pl="wystawiony dla innej nazwy serwera",
            raw=("mismatch",),
        ),
        id="wrong-host-certificate",
    ),
    pytest.param(
        Row(
            "tls_wrong_port",
            "starttls",
            "ssl",
            en="does not start with an encrypted connection",
            pl="nie zaczyna od połączenia szyfrowanego",
            raw=("SSLError",),
        ),
        id="ssl-against-a-starttls-port",
    ),
    pytest.param(
        Row(
            "tls_wrong_port",
            "plain",
            "ssl",
            en="does not start with an encrypted connection",
            pl="nie zaczyna od połączenia szyfrowanego",
            raw=("SSLError",),
        ),
        id="ssl-against-a-plain-port",
    ),
    pytest.param(
        Row(
            "starttls_not_offered",
            "plain",
            "starttls",
            en="does not offer StartTLS",
            pl="nie obsługuje wybranego StartTLS",
        ),
        id="starttls-against-a-server-without-it",
    ),
    pytest.param(
        Row(
            "auth_not_offered",
            "plain",
            "none",
            en="does not offer sign-in, but a user name is set",
            pl="nie oferuje logowania",
            # A server whose EHLO lists no AUTH at all.
            stage="EHLO",
            reply="250-localhost\n250-SIZE 33554432\n250-8BITMIME\n250 HELP",
            with_login=True,
        ),
        id="login-against-a-server-offering-no-auth",
    ),
    pytest.param(
        Row(
            "auth_not_offered",
            "starttls",
            "none",
            en="does not offer sign-in, but a user name is set",
            pl="nie oferuje logowania",
            with_login=True,  # AUTH is offered only after STARTTLS, never chosen here
        ),
        id="login-unencrypted-against-auth-after-starttls-only",
    ),
    pytest.param(
        Row(
            "auth_method_unsupported",
            "plain",
            "none",
            en="no sign-in method that works with a password",
            pl="żadnej metody logowania",
            # Only OAuth: smtplib finds no method a password works with.
            stage="EHLO",
            reply="250-localhost\n250-SIZE 33554432\n250 AUTH XOAUTH2",
            with_login=True,
            raw=("No suitable authentication method",),
        ),
        id="login-against-a-server-offering-only-xoauth2",
    ),
]


# -- helpers -------------------------------------------------------------------------------------
def _host_port(row: Row, smtp_servers, refused_port, silent_server) -> tuple[str, int, object]:
    if row.server == "refused":
        return "127.0.0.1", refused_port, None
    if row.server == "silent":
        return silent_server.host, silent_server.port, None
    server = getattr(smtp_servers, row.server)
    return server.host, server.port, server


def _user(host: str, port: int, security: str, server=None, *, with_login: bool = False):
    user = factories.user("ANNA", name="Anna Kowalska", email=LOGIN)
    password = ""
    if with_login:
        password = factories.secret()
        if server is not None:
            server.users[LOGIN] = password  # right credentials: only the script can refuse
    factories.profile(
        user,
        host=host,
        port=port,
        security=security,
        login=LOGIN if with_login else "",
        password=password,
    )
    return user


def _send(user, *, last_attempt: bool = False) -> OutgoingMessage:
    """Enqueue a mail; with `last_attempt`, the worker's next try is its last (see module doc)."""
    with transaction.atomic():  # the task is published when this block commits, not before
        message = outbox_enqueue(
            user=user, to=[TO], subject="Faktura 1/2026", body_text="Dzień dobry."
        )
        if last_attempt:
            OutgoingMessage.objects.filter(pk=message.pk).update(
                attempts=settings.SEND_MAX_ATTEMPTS - 1
            )
    return message


def _pages(client, user, message: OutgoingMessage, lang: str) -> dict[str, str]:
    user.language = lang
    user.save(update_fields=["language"])
    pages = {}
    for name, url in (("message", f"/outbox/{message.pk}/"), ("events", "/events/")):
        response = client.get(url)
        assert response.status_code == 200, url
        pages[name] = response.content.decode()
    return pages


def _assert_explained_in_both_languages(client, user, message, key, words, kind):
    """The message page and the Events page show `key`'s explanation in English and Polish."""
    client.force_login(user)
    texts = {}
    for lang in ("en", "pl"):
        with translation.override(lang):
            texts[lang] = explain(key, message.explanation_params)
            texts[lang]["kind"] = str(EventKind(kind).label)
    assert texts["en"]["title"] != texts["pl"]["title"], f"{key} has no Polish title"
    assert texts["en"]["fix"] != texts["pl"]["fix"], f"{key} has no Polish fix"
    for lang, other in (("en", "pl"), ("pl", "en")):
        pages = _pages(client, user, message, lang)
        text = texts[lang]
        for name, html in pages.items():
            where = f"{key}, {lang}, {name} page"
            assert f'<html lang="{lang}"' in html, where
            assert escape(text["title"]) in html, where
            assert escape(text["fix"]) in html, where
            assert escape(words[lang]) in html, where
            assert escape(texts[other]["title"]) not in html, where
            assert escape(message.last_reply or "—") in html, where  # the raw reply beside it
        assert escape(f"{text['kind']}: {text['title']}") in pages["events"]


def _check_row(row: Row, client, smtp_servers, refused_port, silent_server) -> None:
    host, port, server = _host_port(row, smtp_servers, refused_port, silent_server)
    user = _user(host, port, row.security, server, with_login=row.with_login)
    if row.stage == "MAIL" and not row.reply:
        server.drop_connection_at("MAIL", times=None)
    elif row.stage:
        # Every time: smtplib tries each AUTH mechanism in turn, and a retry must meet it too.
        server.script(row.stage, row.reply, times=None)

    message = settled(_send(user, last_attempt=row.last_attempt))

    assert message.state == MessageState.FAILED, message.last_reply
    assert message.explanation == row.key, message.last_reply
    assert message.attempts == (settings.SEND_MAX_ATTEMPTS if row.last_attempt else 1)
    [event] = Event.objects.filter(message=message)
    assert (event.kind, event.explanation) == (EventKind.SEND_FAILED, row.key)
    assert event.reply == message.last_reply
    assert event.params == message.explanation_params
    assert (event.params["host"], event.params["port"]) == (host, port)
    if row.reply and not row.reply.startswith("250"):
        assert event.reply == _seen_by_client(row.reply)
    for part in row.raw:
        assert part in event.reply
    if server is not None:
        assert server.messages == []
    _assert_explained_in_both_languages(
        client, user, message, row.key, {"en": row.en, "pl": row.pl}, EventKind.SEND_FAILED
    )


# -- tests ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("row", REPLY_ROWS)
def test_an_injected_reply_is_explained_in_polish_and_english(
    row, client, smtp_servers, refused_port, silent_server
):
    _check_row(row, client, smtp_servers, refused_port, silent_server)


@pytest.mark.parametrize("row", NON_REPLY_ROWS)
def test_a_failure_without_a_reply_is_explained_in_polish_and_english(
    row, client, smtp_servers, refused_port, silent_server
):
    _check_row(row, client, smtp_servers, refused_port, silent_server)


def test_a_throttled_message_is_retried_and_its_delay_explained(smtp_servers, client):
    """Transient: the first refusal is an Event (retrying), the second try delivers."""
    server = smtp_servers.starttls
    user = _user(server.host, server.port, "starttls", server)
    reply = "421 4.7.0 Try again later, closing connection. - gsmtp"
    server.script("MAIL", reply, times=1)

    message = settled(_send(user))

    assert message.state == MessageState.SENT, message.last_reply
    assert message.attempts == 2
    assert message.explanation == ""
    assert server.times_accepted(message.message_id) == 1
    [event] = Event.objects.filter(message=message)
    assert (event.kind, event.explanation) == (EventKind.SEND_RETRYING, "throttled")
    assert event.reply == _seen_by_client(reply)
    client.force_login(user)
    for lang, words in (("en", "limiting how fast"), ("pl", "ogranicza tempo wysyłki")):
        with translation.override(lang):
            text = explain("throttled", event.params)
            kind = str(EventKind.SEND_RETRYING.label)
        pages = _pages(client, user, message, lang)
        assert escape(f"{kind}: {text['title']}") in pages["events"]
        assert escape(text["fix"]) in pages["events"]
        assert escape(words) in pages["events"]
        assert escape(event.reply) in pages["events"]
        # Delivered in the end: the status page no longer shows the delay's explanation.
        assert escape(text["title"]) not in pages["message"]


@pytest.mark.django_db  # nothing is published: outbox_send runs here, in-process
def test_a_failure_is_never_recorded_without_its_event(smtp_servers, monkeypatch):
    server = smtp_servers.plain
    user = _user(server.host, server.port, "none", server)
    server.script("RCPT", f"550 5.1.1 <{TO}>: Recipient address rejected: User unknown", None)
    message = outbox_enqueue(user=user, to=[TO], subject="Faktura", body_text="Hej.")

    def insert_fails(self, *args, **kwargs):
        raise OperationalError("could not write the event")

    monkeypatch.setattr(Event, "save", insert_fails)
    with contextlib.suppress(OperationalError):
        outbox_send(message_id=message.pk)

    message.refresh_from_db()
    recorded = Event.objects.filter(message=message).exists()
    assert message.state != MessageState.FAILED or recorded, "failed, and no Event says why"


def _keys(rows) -> set[str]:
    return {row.values[0].key for row in rows}


def test_the_table_covers_every_reply_based_key_of_the_catalogue():
    """A new matcher rule in explain.py needs its row here."""
    rule_keys = {rule.key for rule in explain_module._RULES}
    assert rule_keys <= set(CATALOGUE)
    assert rule_keys - _keys(REPLY_ROWS) == set()
    # …and the transport's own failures met on 127.0.0.1 (DNS and private hosts need a network
    # or settings the worker does not have; explain's unit tests cover them).
    assert {
        "connection_refused",
        "connection_timeout",
        "connection_lost",
        "cert_expired",
        "cert_hostname",
        "tls_wrong_port",
        "starttls_not_offered",
        "auth_not_offered",
    } <= _keys(NON_REPLY_ROWS)
