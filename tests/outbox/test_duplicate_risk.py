"""A mail the server may have taken without the client hearing its "250" is recorded "possibly
sent twice" before it is tried again (found by tests/reliability/test_faults.py: a server that
stalls past SMTP_TIMEOUT after accepting a message got it twice, and nothing said so).

In-process: `outbox_send` is called directly, no worker.
"""

from __future__ import annotations

import pytest

from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue, outbox_send
from smtp_settings.errors import TransientSendError
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def _message(server) -> OutgoingMessage:
    user = factories.user("ANNA", email="anna@acme.example")
    factories.profile(user, host=server.host, port=server.port, security="none")
    return outbox_enqueue(
        user=user, to=["client@example.com"], subject="Faktura 1/2026", body_text="W załączeniu."
    )


def test_a_timeout_waiting_for_the_reply_to_the_body_is_recorded_as_a_duplicate_risk(
    smtp_servers, settings
):
    settings.SMTP_TIMEOUT = 0.5
    server = smtp_servers.plain
    server.stall_at("AFTER_DATA", 1.5)  # the server has the mail; its "250" comes too late
    message = _message(server)

    with pytest.raises(TransientSendError) as error:
        outbox_send(message_id=message.pk)
    assert error.value.maybe_delivered
    assert outbox_send(message_id=message.pk) == MessageState.SENT

    message.refresh_from_db()
    assert server.times_accepted(message.message_id) == 2
    assert message.possibly_duplicated
    kinds = list(Event.objects.filter(message=message).values_list("kind", flat=True))
    assert sorted(kinds) == sorted([EventKind.SEND_RETRYING, EventKind.SEND_DUPLICATE_RISK])


def test_a_refusal_of_the_body_is_no_duplicate_risk(smtp_servers):
    server = smtp_servers.plain
    server.script("DATA", "451 4.3.0 Error: queue file write error")  # an answer: not taken
    message = _message(server)

    with pytest.raises(TransientSendError) as error:
        outbox_send(message_id=message.pk)
    assert not error.value.maybe_delivered
    assert outbox_send(message_id=message.pk) == MessageState.SENT

    message.refresh_from_db()
    assert server.times_accepted(message.message_id) == 1
    assert not message.possibly_duplicated
    assert not Event.objects.filter(kind=EventKind.SEND_DUPLICATE_RISK).exists()


def test_a_timeout_before_the_body_is_no_duplicate_risk(smtp_servers, settings):
    settings.SMTP_TIMEOUT = 0.5
    server = smtp_servers.plain
    server.stall_at("MAIL", 1.5)
    message = _message(server)

    with pytest.raises(TransientSendError) as error:
        outbox_send(message_id=message.pk)
    assert not error.value.maybe_delivered
    assert outbox_send(message_id=message.pk) == MessageState.SENT

    message.refresh_from_db()
    assert not message.possibly_duplicated
