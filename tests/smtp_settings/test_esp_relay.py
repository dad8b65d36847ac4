"""The platform relay as an ESP (anymail backend): the built message reaches the ESP's API whole.

The ESP itself cannot run here; anymail's own test backend stands in for its HTTP API and
records the payload anymail would post.
"""

import pytest
from anymail.exceptions import AnymailAPIError
from django.core import mail

from outbox.models import MessageState
from outbox.services import outbox_enqueue, outbox_send
from smtp_settings.models import SenderMode
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture
def esp(settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    mail.outbox = []
    return mail.outbox


def _reply_to_user():
    factories.company(slug="acme")
    user = factories.user(
        "EWA", name="Ewa", email="ewa@acme.example", bcc="archive@acme.example", signature="Ewa"
    )
    factories.profile(user, mode=SenderMode.REPLY_TO)
    return user


def test_reply_to_mode_through_an_esp(esp, settings):
    user = _reply_to_user()
    message = outbox_enqueue(
        user=user,
        to=["client@example.com"],
        subject="Faktura 7/2026",
        body_text="Dzień dobry",
        body_html="<html><body><p>Dzień dobry</p></body></html>",
        attachments=[("faktura.pdf", b"%PDF-1.4 x", "application/pdf")],
    )

    assert outbox_send(message_id=message.pk) == MessageState.SENT

    [sent] = esp
    params = sent.anymail_test_params
    domain = settings.EVENT_MAIL_DOMAIN
    assert params["from"].address == f"Ewa <acme@{domain}>"
    assert [r.address for r in params["to"]] == ["client@example.com"]
    assert [r.address for r in params["bcc"]] == ["archive@acme.example"]
    assert [r.address for r in params["reply_to"]] == ["ewa@acme.example"]
    assert params["envelope_sender"] == message.envelope_from
    assert params["extra_headers"]["Message-ID"] == message.message_id
    # What the ESP's tracking webhook hands back to find the message (bounces/webhooks.py).
    assert params["metadata"] == {"verp": message.envelope_from, "message_id": message.message_id}
    assert params["text_body"].replace("\r\n", "\n").endswith("Dzień dobry\n\n-- \nEwa\n")
    assert '<div class="signature">-- <br>Ewa</div>' in params["html_body"]
    [attachment] = params["attachments"]
    assert (attachment.name, attachment.content) == ("faktura.pdf", b"%PDF-1.4 x")
    message.refresh_from_db()
    assert message.last_reply.startswith("sent")


class FakeResponse:
    """The bits of a `requests.Response` anymail reads when describing an API error."""

    def __init__(self, status: int) -> None:
        self.status_code, self.reason, self.text = status, "Bad", '{"message": "no"}'

    def json(self):
        return {"message": "no"}


@pytest.mark.parametrize(
    ("status", "state", "kind"),
    [(503, MessageState.QUEUED, "temporary_failure"), (400, MessageState.FAILED, "rejected")],
)
def test_esp_errors_are_transient_or_permanent(esp, monkeypatch, status, state, kind):
    from smtp_settings import transports
    from smtp_settings.errors import TransientSendError

    user = _reply_to_user()
    message = outbox_enqueue(user=user, to=["client@example.com"], subject="S", body_text="B")
    original = transports._django_message

    def with_response(mime, envelope):
        email = original(mime, envelope)
        email.anymail_test_response = AnymailAPIError(
            "ESP said no", status_code=status, response=FakeResponse(status)
        )
        return email

    monkeypatch.setattr(transports, "_django_message", with_response)
    if state == MessageState.QUEUED:
        with pytest.raises(TransientSendError):
            outbox_send(message_id=message.pk)
    else:
        outbox_send(message_id=message.pk)
    message.refresh_from_db()
    assert (message.state, message.explanation) == (state, kind)
