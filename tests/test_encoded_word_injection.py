"""Regression (issue 7, bad input): an RFC 2047 encoded word is no way into a header.

The email package decodes "=?utf-8?q?Anna=0D=0ABcc=3A_spy=40evil.test?=" when a header is set
and, on Pythons without the CVE-2024-6923 fix, writes the decoded CR/LF back raw: the name on a
card became a Bcc header. tests/reliability/test_bad_input.py found it. The card and the system
settings refuse such text, outbox_enqueue refuses such a subject, and build_message refuses to
build a message whose header would carry a line break (a row stored before this fix).
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.utils.html import escape

from outbox.message import build_message
from outbox.models import MessageState, OutgoingMessage
from outbox.services import outbox_enqueue, outbox_send_batch
from smtp_settings.errors import PermanentSendError
from smtp_settings.models import Security, SenderMode
from smtp_settings.resolve import SenderConfig
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

INJECTING = "=?utf-8?q?Anna=0D=0ABcc=3A_spy=40evil.test?="
REFUSED = "This field may not contain line breaks or control characters."


@pytest.fixture
def anna(client):
    user = factories.user("ANNA", name="Anna Kowalska", email="anna@acme.test")
    factories.profile(user, mode=SenderMode.REPLY_TO)
    factories.company()
    client.force_login(user)
    return user


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", INJECTING),
        ("name", "Anna =?utf-8?q?=0A?= Kowalska"),
        ("email", "=?utf-8?q?a=0D=0ABcc=3A_x?=@acme.test"),
        ("reply_to", "=?utf-8?q?a=0D=0ABcc=3A_x?=@acme.test"),
        ("bcc", "=?utf-8?q?a=0D=0ABcc=3A_x?=@acme.test"),
    ],
)
def test_the_card_refuses_an_encoded_line_break(client, anna, field, value):
    before = factories.db_rows()
    data = {"name": "Anna Kowalska", "email": "anna@acme.test", "mode": SenderMode.REPLY_TO}

    response = client.post("/accounts/card/", {**data, field: value})

    assert response.status_code == 200
    assert escape(REFUSED) in response.content.decode()
    assert factories.db_rows() == before


def test_the_card_keeps_an_ordinary_name_with_an_equals_sign(client, anna):
    response = client.post(
        "/accounts/card/",
        {"name": "Anna =? Kowalska", "email": "anna@acme.test", "mode": SenderMode.REPLY_TO},
    )

    assert response.status_code == 302
    anna.refresh_from_db()
    assert anna.name == "Anna =? Kowalska"


def test_the_system_settings_refuse_an_encoded_company_name(client):
    factories.company()
    factories.profile(None, host="relay.acme.test", port=465, security=Security.SSL)
    client.force_login(factories.user("ADMIN", is_staff=True))
    before = factories.db_rows()

    response = client.post(
        "/settings/system/",
        {
            "company_name": INJECTING,
            "company_slug": "acme",
            "mail_sending_user": "",
            "global-mode": SenderMode.SMTP,
            "global-server": "relay.acme.test:465",
            "global-security": Security.SSL,
        },
    )

    assert response.status_code == 200
    assert escape(REFUSED) in response.content.decode()
    assert factories.db_rows() == before


def test_outbox_enqueue_refuses_an_encoded_line_break_in_the_subject(anna):
    with pytest.raises(ValidationError, match="The subject may not contain line breaks"):
        outbox_enqueue(user=anna, to=["c@example.com"], subject=INJECTING, body_text="x")


def test_build_message_refuses_a_stored_name_that_would_inject(anna):
    message = outbox_enqueue(user=anna, to=["c@example.com"], subject="Invoice", body_text="x")
    sender = SenderConfig.from_snapshot({**message.sender, "from_name": INJECTING})

    with pytest.raises(PermanentSendError) as refused:
        build_message(message, sender)
    assert (refused.value.explanation, refused.value.params) == (
        "header_line_break",
        {"header": "From"},
    )


def test_such_a_stored_row_fails_with_its_event_instead_of_killing_the_batch(anna):
    """A row written before the form check existed: it fails visibly, and the batch goes on."""
    message = outbox_enqueue(user=anna, to=["c@example.com"], subject="Invoice", body_text="x")
    OutgoingMessage.objects.filter(pk=message.pk).update(
        sender={**message.sender, "from_name": INJECTING}
    )

    assert outbox_send_batch(message_ids=[message.pk]) == {MessageState.FAILED: 1}
    message.refresh_from_db()
    assert message.explanation == "header_line_break"
    assert message.events.get().explanation == "header_line_break"
