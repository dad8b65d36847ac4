"""SMTP PIPELINING (RFC 2920, issue 13 item 6): with a server that offers it, MAIL, RCPT and
DATA go in one write; a refused recipient still means nothing is delivered, to anyone."""

from __future__ import annotations

from email.message import EmailMessage
from types import SimpleNamespace

import pytest

from smtp_settings.errors import PermanentSendError
from smtp_settings.transports import SmtpTransport, wire_bytes

pytestmark = pytest.mark.usefixtures("english")


def _mail(subject: str) -> bytes:
    mime = EmailMessage()
    mime["From"], mime["To"], mime["Subject"] = "anna@acme.test", "jan@klient.test", subject
    mime["Message-ID"] = f"<{subject.replace(' ', '-')}@acme.test>"
    mime.set_content(".\n..\nbody\n")
    return wire_bytes(mime)


def _envelope(*recipients: str):
    return SimpleNamespace(mail_from="anna@acme.test", recipients=recipients)


def _transport(server) -> SmtpTransport:
    return SmtpTransport(host=server.host, port=server.port, security="none")


@pytest.fixture
def server(smtp_servers):
    server = smtp_servers.plain
    server.pipelining = True
    return server


def test_a_pipelined_mail_arrives_whole(server):
    with _transport(server) as transport:
        assert transport.smtp.has_extn("pipelining")
        for n in range(3):
            assert transport.send(_mail(f"mail {n}"), _envelope("jan@klient.test")).startswith(
                "250"
            )

    received = server.wait_for(3)
    assert [m.message["Subject"] for m in received] == ["mail 0", "mail 1", "mail 2"]
    assert received[0].message.get_content().replace("\r\n", "\n") == ".\n..\nbody\n"


def test_one_refused_recipient_delivers_nothing_to_the_others(server):
    """The attacker-free failure that matters: the server refused one recipient, accepted the
    other and answered DATA with 354. The client must not let a message (even an empty one)
    reach the accepted recipient: it drops the connection before any "."."""
    server.script("RCPT", "550 5.1.1 <ghost@klient.test>: no such user")
    with _transport(server) as transport:
        with pytest.raises(PermanentSendError) as refused:
            transport.send(_mail("refused"), _envelope("ghost@klient.test", "jan@klient.test"))
        assert refused.value.explanation == "recipient_unknown"
        assert "no such user" in refused.value.reply
        # The next mail on the same transport goes out (on a new connection).
        transport.send(_mail("next"), _envelope("jan@klient.test"))

    received = server.wait_for(1)
    assert [m.message["Subject"] for m in received] == ["next"]


def test_a_refused_sender_address_is_told_as_such(server):
    server.script("MAIL", "553 5.7.1 <anna@acme.test>: Sender address rejected")
    with _transport(server) as transport:
        with pytest.raises(PermanentSendError) as refused:
            transport.send(_mail("no sender"), _envelope("jan@klient.test"))
        transport.send(_mail("after"), _envelope("jan@klient.test"))

    assert refused.value.reply.startswith("553")
    assert [m.message["Subject"] for m in server.wait_for(1)] == ["after"]


def test_without_pipelining_the_same_refusal_is_the_same_error(smtp_servers):
    server = smtp_servers.plain
    server.script("RCPT", "550 5.1.1 <ghost@klient.test>: no such user")
    with _transport(server) as transport:
        assert not transport.smtp.has_extn("pipelining")
        with pytest.raises(PermanentSendError) as refused:
            transport.send(_mail("refused"), _envelope("ghost@klient.test", "jan@klient.test"))

    assert refused.value.explanation == "recipient_unknown"
    assert server.messages == []


def test_a_slow_down_that_closes_the_connection_is_still_a_slow_down(server):
    """Gmail's "421 4.7.0 Try again later, closing connection" in answer to MAIL: the replies
    to RCPT and DATA never come. The 421 is the failure (the sender is paused on it), not the
    closed connection; the next mail connects again."""
    from smtp_settings.errors import TransientSendError

    server.script("MAIL", "421 4.7.0 Try again later, closing connection.")
    with _transport(server) as transport:
        with pytest.raises(TransientSendError) as later:
            transport.send(_mail("throttled"), _envelope("jan@klient.test"))
        transport.send(_mail("after"), _envelope("jan@klient.test"))

    assert later.value.explanation == "throttled"
    assert later.value.reply.startswith("421")
    assert [m.message["Subject"] for m in server.wait_for(1)] == ["after"]


@pytest.mark.parametrize("pipelining", [False, True])
def test_an_address_smtp_cannot_carry_fails_alone(smtp_servers, pipelining):
    """A recipient smtplib cannot encode (a non-ASCII domain the caller did not convert) fails
    that mail only: the transaction it began is ended, and the next mail on the connection is
    not refused as "nested MAIL"."""
    server = smtp_servers.plain
    server.pipelining = pipelining
    with _transport(server) as transport:
        with pytest.raises(PermanentSendError) as refused:
            transport.send(_mail("idn"), _envelope("jan@klient.test", "ewa@bücher.test"))
        transport.send(_mail("next"), _envelope("jan@klient.test"))

    assert refused.value.explanation == "bad_recipient"
    assert [m.message["Subject"] for m in server.wait_for(1)] == ["next"]


def test_a_domain_that_is_not_ascii_travels_in_idna(smtp_servers):
    from django.utils import timezone

    from outbox.message import envelope_for
    from outbox.models import OutgoingMessage
    from tests.outbox.test_mimewrite import _sender

    message = OutgoingMessage(
        to=["Jan@Bücher.test"],
        cc=[],
        bcc=[],
        envelope_from="anna@zażółć.test",
        created_at=timezone.now(),
    )
    envelope = envelope_for(message, _sender())
    assert envelope.recipients == ("jan@xn--bcher-kva.test",)
    assert envelope.mail_from == "anna@xn--za-6ja4f8n1l.test"
    with _transport(smtp_servers.plain) as transport:
        transport.send(_mail("idn"), envelope)
    (received,) = smtp_servers.plain.wait_for(1)
    assert received.rcpt_tos == ["jan@xn--bcher-kva.test"]


@pytest.mark.parametrize("pipelining", [False, True])
def test_bare_line_ends_cannot_end_the_message_early(smtp_servers, pipelining):
    """SMTP smuggling (CVE-2023-51764 and kin): a body with "\\n.\\n" or "\\r.\\r" would end the
    message early at a server that reads bare line ends, and what follows would be read as a
    second message. Bytes that are not CRLF-only are made so before the dots are doubled, so
    the server gets one message whose lines all end in CRLF."""
    server = smtp_servers.plain
    server.pipelining = pipelining
    smuggled = b"MAIL FROM:<ceo@acme.test>\r\nRCPT TO:<victim@klient.test>\r\nDATA\r\n"
    data = (
        b"From: anna@acme.test\r\nTo: jan@klient.test\r\nSubject: smuggle\r\n"
        b"Message-ID: <smuggle@acme.test>\r\n\r\nline\n.\n" + smuggled + b"x\r.\rend\r\n"
    )
    with _transport(server) as transport:
        transport.send(data, _envelope("jan@klient.test"))

    (received,) = server.wait_for(1)
    body = received.content.split(b"\r\n\r\n", 1)[1]
    assert b"\r" not in body.replace(b"\r\n", b"") and b"\n" not in body.replace(b"\r\n", b"")
    assert b"\r\n.\r\nMAIL FROM:<ceo@acme.test>" in body  # still inside the one message
    assert received.rcpt_tos == ["jan@klient.test"]
