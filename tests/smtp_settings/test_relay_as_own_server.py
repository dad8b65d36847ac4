"""The platform relay is never a user's "own" SMTP server (review of issue 11, items 3 and 4).

What an abuser tries: a Default user with an unverified card e-mail (security@paypal.com)
switches the mail sender to SMTP and types the platform relay's own host and port, with no
login. The relay trusts the platform's own connections (by address, or because it is the local
MTA), so without a guard the mail leaves the platform's IPs From the unverified address, and,
the transport being "SMTP", none of the relay's limits counts it and mass mailing is unlocked.

The goal that must fail: a mail at the relay From the unverified address. A control shows the
same detector firing for the same user's mail through a server that is really someone else's.
"""

from __future__ import annotations

import email.utils

import pytest

from outbox.models import LimitCounter, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue, outbox_send
from smtp_settings.diagnose import connection_test
from smtp_settings.models import Security
from smtp_settings.selectors import sender_config_for
from tests import factories

pytestmark = pytest.mark.usefixtures("english")

SPOOFED = "security@paypal.com"


def _from_spoofed(server) -> int:
    """Mails `server` accepted From the unverified address."""
    return sum(
        email.utils.parseaddr(str(m.message["From"]))[1].lower() == SPOOFED for m in server.messages
    )


def _mallory(host: str, port: int):
    user = factories.user("MALLORY", email=SPOOFED, verified=False)
    factories.profile(user, host=host, port=port, security=Security.NONE)
    return user


def _send(user) -> OutgoingMessage:
    message = outbox_enqueue(user=user, to=["victim@example.com"], subject="x", body_text="x")
    outbox_send(message_id=message.pk)
    message.refresh_from_db()
    return message


@pytest.mark.parametrize("name", ["as configured", "another name for it"])
def test_the_relay_typed_as_an_own_server_sends_nothing(db, smtp_servers, settings, name):
    relay = smtp_servers.plain  # the platform relay of the test settings (EMAIL_HOST/PORT)
    assert (settings.EMAIL_HOST, int(settings.EMAIL_PORT)) == (relay.host, relay.relay_port)
    host = relay.host if name == "as configured" else "localhost"
    user = _mallory(host, relay.relay_port)

    message = _send(user)

    assert _from_spoofed(relay) == 0
    assert message.state == MessageState.FAILED
    assert message.explanation == "relay_as_own_server"


def test_control_the_detector_sees_mail_from_the_unverified_address(db, smtp_servers):
    other = smtp_servers.starttls_optional  # someone's own server: not the relay
    user = _mallory(other.host, other.port)

    message = _send(user)

    assert message.state == MessageState.SENT
    assert _from_spoofed(other) == 1
    assert not LimitCounter.objects.exists()  # an own server: the relay's limits do not count


def test_the_connection_test_does_not_reach_the_relay_either(db, smtp_servers):
    """Nor does the test probe it: no EHLO, no MAIL FROM the unverified address at the relay."""
    relay = smtp_servers.plain
    user = _mallory("localhost", relay.relay_port)

    result = connection_test(sender_config_for(user=user), to=SPOOFED, own_address=SPOOFED)

    assert not result.passed
    failed = [step for step in result.steps if step.outcome == "failed"]
    assert [step.name for step in failed] == ["dns"]
    assert failed[0].explanation["title"] == (
        "The server named is the platform's own mail server, not yours."
    )
    assert all(step.outcome != "ok" for step in result.steps)  # no banner, no EHLO shown


@pytest.mark.parametrize(
    ("address", "port", "refused"),
    [
        ("203.0.113.25", 587, True),  # the relay's machine, its submission port
        ("203.0.113.25", 25, True),
        ("::ffff:203.0.113.25", 2525, True),
        ("203.0.113.26", 25, False),  # a neighbour: someone's own server
        ("127.0.0.1", 25, False),  # a loopback relay elsewhere: only its own port counts
    ],
)
def test_a_public_relay_is_refused_on_every_port(settings, monkeypatch, address, port, refused):
    from smtp_settings import transports
    from smtp_settings.errors import PermanentSendError

    settings.EMAIL_BACKEND = transports.SMTP_BACKEND
    settings.EMAIL_HOST, settings.EMAIL_PORT = "relay.platform.example", 25
    monkeypatch.setattr(
        transports.socket,
        "getaddrinfo",
        lambda host, port, **kw: [(2, 1, 6, "", ("203.0.113.25", port))],
    )
    if refused:
        with pytest.raises(PermanentSendError) as error:
            transports.check_not_relay("mail.mallory.example", address, port)
        assert error.value.explanation == "relay_as_own_server"
    else:
        transports.check_not_relay("mail.mallory.example", address, port)
