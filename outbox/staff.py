"""Staff actions on one outgoing message (issue 12, item 5): retry, send now, cancel, raw .eml.

Every action is a conditional UPDATE on the state, as the worker's own claim (queued →
sending) is: of a staff click and a worker, only one wins, so a message is never sent twice and
one being sent is never cancelled under the worker's feet.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from smtp_settings.resolve import SenderConfig

from .message import envelope_for, message_bytes
from .models import BulkJob, JobState, MessageState, OutgoingMessage
from .services import _enqueue_on_commit, bulk_job_progress
from .signals import message_retry_requested, message_state_changed


class StaffActionRefused(Exception):
    """The action does not fit the message's state now; the message says why (translated)."""


@transaction.atomic
def outbox_message_retry(*, message: OutgoingMessage) -> None:
    """Queue a failed message again with a fresh attempt budget; the worker sends it once."""
    if message.possibly_duplicated:
        raise StaffActionRefused(
            _(
                "This message may already have arrived (the server's reply was lost), so it is "
                "not sent again from here: ask the recipient first."
            )
        )
    queued = OutgoingMessage.objects.filter(pk=message.pk, state=MessageState.FAILED).update(
        state=MessageState.QUEUED, attempts=0, claimed_at=None, updated_at=timezone.now()
    )
    if not queued:
        raise StaffActionRefused(_("Only a failed message can be retried."))
    message_retry_requested.send(OutgoingMessage, message=message)  # may refuse: rolled back
    if message.job_id:
        BulkJob.objects.filter(pk=message.job_id, state=JobState.FINISHED).update(
            state=JobState.RUNNING, finished_at=None
        )
    message_state_changed.send(OutgoingMessage, message=message, state=MessageState.QUEUED)
    _enqueue_on_commit(message.pk)


@transaction.atomic
def outbox_message_send_now(*, message: OutgoingMessage) -> None:
    """Hand a queued message to the worker now (e.g. one waiting for its next retry, or one
    held for later: "now" is its meaning, so its "send at" is cleared). A task already on its
    way for it finds it claimed and skips it."""
    if not OutgoingMessage.objects.filter(pk=message.pk, state=MessageState.QUEUED).update(
        send_after=None, updated_at=timezone.now()
    ):
        raise StaffActionRefused(_("Only a queued message can be sent now."))
    _enqueue_on_commit(message.pk)


@transaction.atomic
def outbox_message_cancel(*, message: OutgoingMessage) -> None:
    """Cancel a queued message (staff, or its owner from the message page, e.g. one held for
    later). One being sent is not cancelled: the server may have it. An invoice's message
    cancelled gives the invoice back (unsent: invoices.signals)."""
    cancelled = OutgoingMessage.objects.filter(pk=message.pk, state=MessageState.QUEUED).update(
        state=MessageState.CANCELLED, updated_at=timezone.now()
    )
    if not cancelled:
        if OutgoingMessage.objects.filter(pk=message.pk, state=MessageState.SENDING).exists():
            raise StaffActionRefused(
                _("The message is being sent right now and can no longer be cancelled.")
            )
        raise StaffActionRefused(_("Only a queued message can be cancelled."))
    message_state_changed.send(OutgoingMessage, message=message, state=MessageState.CANCELLED)
    if message.job_id:
        bulk_job_progress(job=BulkJob.objects.get(pk=message.job_id))


def outbox_message_eml(message: OutgoingMessage) -> bytes:
    """The message exactly as the worker builds it (same Message-ID and Date); BCC is in no
    header, and the sender snapshot holds no secret, only a reference to it. CRLF line ends, as
    smtplib puts it on the wire (and as RFC 5322 files are)."""
    return message_bytes(message, SenderConfig.from_snapshot(message.sender))


def outbox_message_envelope(message: OutgoingMessage) -> tuple[str, tuple[str, ...]]:
    envelope = envelope_for(message, SenderConfig.from_snapshot(message.sender))
    return envelope.mail_from, envelope.recipients
