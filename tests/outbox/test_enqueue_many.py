"""outbox_enqueue_many (issue 13, item 6): a job's chunk in two INSERTs, with every check and
limit outbox_enqueue applies to each mail, so the bulk path is no way around them."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from outbox.limits import LimitReached, TooManyRecipients
from outbox.message import verp_message_pk
from outbox.models import Attachment, BulkJob, LimitCounter, OutgoingMessage
from outbox.services import Mail, outbox_enqueue_many
from smtp_settings.models import SenderMode
from smtp_settings.selectors import sender_config_for
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def _job(user, sender) -> BulkJob:
    return BulkJob.objects.create(user=user, kind="invoices", sender=sender.to_snapshot())


def test_each_mail_is_checked_and_only_the_good_ones_are_written(settings):
    settings.MAX_RECIPIENTS_PER_MESSAGE = 3
    user = factories.user("ANNA", email="anna@acme.test")
    factories.profile(user, host="smtp.acme.test", port=587)
    sender = sender_config_for(user=user)
    pdf = default_storage.save("invoices/FV-1.pdf", ContentFile(b"%PDF-1.4 one"))
    mails = [
        Mail(["jan@klient.test"], "FV/1", "text", stored_attachments=[("FV-1.pdf", pdf, "a/b")]),
        Mail(["not an address"], "FV/2", "text"),
        Mail([f"p{n}@klient.test" for n in range(4)], "FV/3", "text"),
        Mail(["jan@klient.test"], "FV/4\r\nBcc: spy@evil.test", "text"),
        Mail([], "FV/5", "text"),
        Mail(["ewa@klient.test"], "FV/6", "text"),
    ]

    results = outbox_enqueue_many(user=user, sender=sender, job=_job(user, sender), mails=mails)

    assert [type(result).__name__ for result in results] == [
        "OutgoingMessage",
        "ValidationError",
        "TooManyRecipients",
        "ValidationError",
        "ValidationError",
        "OutgoingMessage",
    ]
    assert isinstance(results[2], TooManyRecipients)
    written = OutgoingMessage.objects.order_by("pk")
    assert [m.subject for m in written] == ["FV/1", "FV/6"]
    assert [m.pk for m in written] == [results[0].pk, results[5].pk]
    assert len({m.message_id for m in written}) == 2
    (attachment,) = Attachment.objects.all()
    assert (attachment.message_id, attachment.file.name) == (results[0].pk, pdf)


def test_the_relays_limits_hold_mail_by_mail(settings):
    """The bulk path is no way past the relay's hourly limit: the mails beyond it are refused
    and take no slot."""
    settings.RELAY_LIMIT_USER_HOUR = 3
    user = factories.user("ANNA", email="anna@acme.test")
    factories.profile(user, mode=SenderMode.DEFAULT)
    sender = sender_config_for(user=user)
    mails = [Mail([f"p{n}@klient.test"], f"Letter {n}", "text") for n in range(5)]

    results = outbox_enqueue_many(user=user, sender=sender, job=_job(user, sender), mails=mails)

    assert [isinstance(result, LimitReached) for result in results] == [False] * 3 + [True] * 2
    assert OutgoingMessage.objects.count() == 3
    assert LimitCounter.objects.filter(key__startswith="relay:user").first().count == 3


def test_a_verp_sender_names_each_message_in_its_envelope(settings):
    user = factories.user("ANNA", email="anna@acme.test")
    factories.profile(user, mode=SenderMode.REPLY_TO)
    factories.company()
    sender = sender_config_for(user=user)
    assert sender.verp
    mails = [Mail([f"p{n}@klient.test"], f"Letter {n}", "text") for n in range(3)]

    results = outbox_enqueue_many(user=user, sender=sender, job=_job(user, sender), mails=mails)

    for message in OutgoingMessage.objects.all():
        assert verp_message_pk(message.envelope_from, settings.EVENT_MAIL_DOMAIN) == message.pk
    assert {r.pk for r in results} == set(OutgoingMessage.objects.values_list("pk", flat=True))


def test_nothing_is_written_for_a_chunk_of_refused_mails():
    user = factories.user("ANNA", email="anna@acme.test")
    factories.profile(user, host="smtp.acme.test", port=587)
    sender = sender_config_for(user=user)

    results = outbox_enqueue_many(
        user=user, sender=sender, job=_job(user, sender), mails=[Mail(["x"], "S", "t")]
    )

    assert isinstance(results[0], ValidationError)
    assert not OutgoingMessage.objects.exists()
