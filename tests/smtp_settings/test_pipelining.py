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
