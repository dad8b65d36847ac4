"""Writes: enqueue a mail, send one (claim → deliver → record), record events, sweep stuck rows."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.core.validators import validate_email
from django.db import models, transaction
from django.db.models.functions import Now
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from accounts.models import User, header_text
from directo_mail.faults import fault_point
from filestore.storage import read_many, stored_sizes
from smtp_settings.crypto import SecretDecryptionError
from smtp_settings.errors import PermanentSendError, SendError, TransientSendError
from smtp_settings.resolve import SenderConfig, SenderConfigError, TransportKind
from smtp_settings.selectors import sender_config_for
from smtp_settings.transports import Transport, transport_for

from . import limits, ratelimit
from .attachments import attachments_check
from .compiled import RowsInsert, RowUpdate
from .leases import UNDISPATCHED, lease_current, leases_forget_old
from .message import (
    envelope_for,
    extra_headers_check,
    message_bytes,
    new_message_id,
    verp_address,
)
from .mimewrite import FORBIDDEN
from .models import (
    Attachment,
    BulkJob,
    Event,
    EventKind,
    JobState,
    MessageState,
    OutgoingMessage,
    WorkerLease,
)
from .signals import message_state_changed, sweep_reconcile

logger = logging.getLogger(__name__)


def _clean_addresses(addresses: Iterable[str], field: str) -> list[str]:
    cleaned = []
    for address in addresses:
        address = address.strip()
        try:
            validate_email(address)  # also refuses CR/LF: no header injection through addresses
        except ValidationError:
            raise ValidationError(
                {field: _("“%(address)s” is not a valid e-mail address.") % {"address": address}}
            ) from None
        cleaned.append(address)
    return cleaned


@transaction.atomic
def outbox_enqueue(
    *,
    user: User,
    to: Iterable[str],
    subject: str,
    body_text: str,
    body_html: str = "",
    cc: Iterable[str] = (),
    bcc: Iterable[str] = (),
    attachments: Iterable[tuple[str, bytes | File, str]] = (),
    stored_attachments: Iterable[tuple[str, str, str]] = (),
    related: models.Model | None = None,
    job: BulkJob | None = None,
    sender: SenderConfig | None = None,
    purpose: str = "",
    extra_headers: dict[str, str] | None = None,
    send_after: datetime | None = None,
) -> OutgoingMessage:
    """Record a mail from `user` and hand its id to the worker once the row is committed.

    `send_after` ("send at", checked by the caller with send_after_clean) holds the mail until
    then; a time already past sends it now (a job built after its time, for instance).

    Every path that sends mail comes through here, so the limits are enforced here (issue 11,
    item 4): at most MAX_RECIPIENTS_PER_MESSAGE recipients, the relay's limits per user and
    company when the sender is the platform relay, and the limits of the `purpose` ("test_email"
    or "verification"). A refused mail leaves nothing behind and takes no slot.

    `attachments` are (name, content, type) with content as bytes or a File (an upload is
    copied to storage in chunks, never read whole); a mail that carries them is checked against
    its server's size limit (outbox.attachments), counting the stored files too.

    Raises SenderConfigError when the user's configuration cannot send, ValidationError for bad
    addresses, a subject with line breaks or a message too large for its server, and its
    subclasses limits.TooManyRecipients and limits.LimitReached (each with a message in the
    active language). `extra_headers` are the message's own headers (a letter's
    List-Unsubscribe): a name outside message.EXTRA_HEADERS or a value with a line break is a
    caller's bug, ValueError.
    """
    extra_headers = extra_headers_check(extra_headers or {})
    sender = sender or sender_config_for(user=user)
    attachments, stored_attachments = list(attachments), list(stored_attachments)
    sizes = []
    if attachments:
        sizes = [
            len(content) if isinstance(content, bytes) else content.size
            for _name, content, _type in attachments
        ] + [default_storage.size(name) for _name, name, _type in stored_attachments]
    recipients, cc, bcc = _mail_checked(
        user=user,
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject,
        body=body_text + body_html,
        sizes=sizes,
        purpose=purpose,
    )
    message = _new_message(
        user=user,
        sender=sender,
        related=related,
        job=job,
        to=recipients,
        cc=cc,
        bcc=bcc,
        subject=subject,
        body_text=body_text,
        body_html=body_html,
        extra_headers=extra_headers,
        send_after=send_after if send_after and send_after > timezone.now() else None,
    )
    for filename, content, content_type in attachments:
        attachment = Attachment(message=message, filename=filename, content_type=content_type)
        content = ContentFile(content) if isinstance(content, bytes) else content
        attachment.file.save(_storage_name(filename), content, save=True)
    # Files already kept in storage (an invoice's PDF): attached by name, never copied.
    Attachment.objects.bulk_create(
        Attachment(message=message, filename=filename, file=name, content_type=content_type)
        for filename, name, content_type in stored_attachments
    )
    if job is None:  # a job's messages go out in batches (bulk_job_dispatch)
        _enqueue_on_commit(message.pk)
    return message


@dataclass
class Mail:
    """One mail of a chunk for outbox_enqueue_many: its files are already in storage."""

    to: list[str]
    subject: str
    body_text: str
    body_html: str = ""
    stored_attachments: list[tuple[str, str, str]] = field(default_factory=list)
    related: models.Model | None = None


@transaction.atomic  # the slots its mails take and their rows: both or neither
def outbox_enqueue_many(
    *,
    user: User,
    sender: SenderConfig,
    job: BulkJob,
    mails: list[Mail],
    send_after: datetime | None = None,
) -> list[OutgoingMessage | ValidationError]:
    """outbox_enqueue for a chunk of one job's mails (one user, one sender, files already
    stored): every check and limit of outbox_enqueue for each mail, then one INSERT for the
    messages and one for their files instead of two statements and a savepoint a mail.

    Returns, in order, each mail's row or the ValidationError that refused it (TooManyRecipients,
    LimitReached, a bad address, a message too large); a refused mail leaves nothing behind and
    takes no slot. Runs in the caller's transaction (a job's chunk is written in one).
    """
    names = [name for mail in mails for _filename, name, _type in mail.stored_attachments]
    sizes = stored_sizes(default_storage, names) if names else {}
    results: list[OutgoingMessage | ValidationError] = []
    rows: list[tuple[OutgoingMessage, Mail]] = []
    held = send_after if send_after and send_after > timezone.now() else None
    snapshot = sender.to_snapshot()
    for mail in mails:
        try:
            recipients, _cc, _bcc = _mail_checked(
                user=user,
                sender=sender,
                to=mail.to,
                subject=mail.subject,
                body=mail.body_text + mail.body_html,
                # A file gone meanwhile counts 0 here; sending it then fails as "file_missing".
                sizes=[sizes.get(name, 0) for _f, name, _t in mail.stored_attachments],
            )
        except ValidationError as error:
            results.append(error)
            continue
        message = _message_row(
            user=user,
            sender=sender,
            snapshot=snapshot,
            related=mail.related,
            job=job,
            to=recipients,
            subject=mail.subject,
            body_text=mail.body_text,
            body_html=mail.body_html,
            send_after=held,
        )
        rows.append((message, mail))
        results.append(message)
    created = [message for message, _mail in rows]
    _INSERT_MESSAGES.run(created)
    if sender.verp:  # the VERP address names the message: it needs the row's id first
        for message in created:
            message.envelope_from = verp_address(message.pk, settings.EVENT_MAIL_DOMAIN)
        OutgoingMessage.objects.bulk_update(created, ["envelope_from"])
    _INSERT_ATTACHMENTS.run(
        [
            Attachment(message=message, filename=filename, file=name, content_type=content_type)
            for message, mail in rows
            for filename, name, content_type in mail.stored_attachments
        ]
    )
    return results


# A job's chunk: its messages and their files in one statement each (bulk_create's work, its
# SQL built once; outbox.compiled).
_INSERT_MESSAGES = RowsInsert(OutgoingMessage)
_INSERT_ATTACHMENTS = RowsInsert(Attachment)


def _storage_name(filename: str) -> str:
    """The file's name in storage: "attachment" and the extension's letters and digits only,
    whatever the user's name for it (which the Attachment row keeps): no path, no character a
    storage might read differently; the storage adds a random suffix."""
    extension = re.sub(r"[^A-Za-z0-9]", "", os.path.splitext(filename)[1])[:10]
    return f"attachment.{extension}" if extension else "attachment"


def send_after_clean(value: datetime | None) -> datetime | None:
    """A "send at" time a user gave, checked: None for "now", or a ValidationError saying why
    (in the active language).

    A time up to a minute past is "now" (the form took a while to fill in) and gives None; one
    further back is refused, as is one beyond SEND_LATER_MAX_DAYS: a message is not held for
    ever, and nobody parks mail (and the sending slots it took at enqueue) years ahead.
    """
    if value is None:
        return None
    now = timezone.now()
    if value < now - timedelta(minutes=1):
        raise ValidationError(
            _(
                "This time has already passed. Choose a later time, or leave the field empty "
                "to send now."
            ),
            code="send_at_past",
        )
    if value > now + timedelta(days=settings.SEND_LATER_MAX_DAYS):
        raise ValidationError(
            _("A message can be held for at most %(days)s days. Choose an earlier time.")
            % {"days": settings.SEND_LATER_MAX_DAYS},
            code="send_at_too_far",
        )
    return value if value > now else None


PURPOSE_LIMITS = {
    "test_email": limits.limits_of_test_emails,
    "verification": limits.verification_limits,
}


def _limits_take(*, user: User, sender: SenderConfig, addresses: list[str], purpose: str) -> None:
    """Check the recipient cap and take the mail's slots (in the enqueue's transaction: a
    later failure gives them back). The card's BCC counts: the relay delivers to it too."""
    unique = {address.lower() for address in [*addresses, sender.bcc] if address}
    limits.recipients_check(len(unique))
    takes: list[tuple[limits.Limit, int]] = []
    if sender.transport == TransportKind.RELAY:  # each recipient is a delivery for the relay
        takes += [(limit, len(unique)) for limit in limits.relay_limits(user_id=user.pk)]
    if purpose:  # a test or verification mail counts once
        takes += [(limit, 1) for limit in PURPOSE_LIMITS[purpose](user_id=user.pk)]
    limits.limits_take_amounts(takes)


def outbox_record_unsendable(
    *,
    user: User,
    subject: str,
    addresses: Iterable[str],
    related: models.Model | None = None,
    job: BulkJob | None = None,
    sender: SenderConfig | None = None,
    explanation: str = "",
    params: dict[str, str] | None = None,
) -> OutgoingMessage:
    """Record, as a failed message with its Event, a mail of a job that cannot be built: its
    addresses are missing or invalid (or `explanation` says why, with `params` for its text).
    The job's row says why, and its counts stay whole."""
    sender = sender or sender_config_for(user=user)
    shown = ", ".join(addresses)[:200]
    message = _new_message(
        user=user,
        sender=sender,
        related=related,
        job=job,
        to=[],
        subject=subject.replace("\r", " ").replace("\n", " ")[:998],
        body_text="",
    )
    explanation = explanation or ("bad_recipient" if shown else "no_recipient")
    params = {"address": shown, **(params or {})}
    _fail(message, PermanentSendError("", explanation=explanation, params=params))
    return message


def _mail_checked(
    *,
    user: User,
    sender: SenderConfig,
    to: Iterable[str],
    subject: str,
    body: str,
    sizes: list[int],
    cc: Iterable[str] = (),
    bcc: Iterable[str] = (),
    purpose: str = "",
) -> tuple[list[str], list[str], list[str]]:
    """What every mail passes before it is written (outbox_enqueue and outbox_enqueue_many):
    valid addresses and at least one recipient, a subject without line breaks, the server's
    size limit when `sizes` (of its files) are given, then its slots in the limits. Returns
    the cleaned (to, cc, bcc); raises ValidationError (or its limits subclasses) otherwise."""
    recipients = _clean_addresses(to, "to")
    if not recipients:
        raise ValidationError({"to": _("Give at least one recipient.")})
    if _has_line_break(subject):
        raise ValidationError({"subject": _("The subject may not contain line breaks.")})
    cc, bcc = _clean_addresses(cc, "cc"), _clean_addresses(bcc, "bcc")
    if sizes:
        attachments_check(sender=sender, body=body, sizes=sizes)
    _limits_take(user=user, sender=sender, addresses=[*recipients, *cc, *bcc], purpose=purpose)
    return recipients, cc, bcc


def _message_row(
    *,
    user: User,
    sender: SenderConfig,
    related: models.Model | None,
    job: BulkJob | None,
    snapshot: dict | None = None,
    **fields,
) -> OutgoingMessage:
    """The row of a message, not saved: its sender snapshot (`snapshot` when the caller made it
    once for many), Message-ID, envelope and what it is about."""
    return OutgoingMessage(
        user=user,
        sender=snapshot if snapshot is not None else sender.to_snapshot(),
        message_id=new_message_id(sender.from_email.rpartition("@")[2]),
        envelope_from=sender.envelope_sender,
        related_type=ContentType.objects.get_for_model(related) if related is not None else None,
        related_id=str(related.pk) if related is not None else "",
        job=job,
        **fields,
    )


def _new_message(
    *, user: User, sender: SenderConfig, related: models.Model | None, job: BulkJob | None, **fields
) -> OutgoingMessage:
    """The row of a message, saved (and its VERP envelope, which needs the row's id)."""
    message = _message_row(user=user, sender=sender, related=related, job=job, **fields)
    message.save(force_insert=True)
    if sender.verp:  # the VERP address names the message: it needs the row's id first
        message.envelope_from = verp_address(message.pk, settings.EVENT_MAIL_DOMAIN)
        message.save(update_fields=["envelope_from"])
    return message


def _has_line_break(subject: str) -> bool:
    """A line break (CR, LF, NEL, U+2028 … or another control character: mimewrite.FORBIDDEN)
    in the subject, also an RFC 2047-encoded one (CVE-2024-6923)."""
    try:
        shown = header_text(subject)
    except ValueError:
        return True  # unreadable for the email package: refused like a line break
    return any(FORBIDDEN.search(text) for text in (subject, shown))


def _dispatch_options(send_after: datetime | None) -> dict | None:
    """How to hand a message held until `send_after` to the worker: at once ({}), with an eta
    (a short hold), or not now (None) for a long hold: the sweeper dispatches it when its time
    has come (outbox_sweep). A long eta is avoided on purpose: on Redis a task not acknowledged
    within the visibility timeout (1 h by default) is delivered again, over and over until its
    eta; harmless (the claim refuses a message before its time, and only one claim wins), but
    a pile of duplicates. A task with an eta lives in a worker's memory; if it is lost (a worker
    killed, the filesystem broker emptied) the sweeper dispatches the message all the same.
    """
    if send_after is None:
        return {}
    delay = (send_after - timezone.now()).total_seconds()
    if delay <= 0:
        return {}
    if delay > settings.SEND_LATER_ETA_MAX_SECONDS:
        return None
    return {"eta": send_after}


def _enqueue_on_commit(message_pk: int) -> None:
    """Once the transaction commits, hand the message to its lane (_send_one): at once, or as
    its committed "send at" says (_dispatch_options).

    The dispatch is recorded with the row, in the caller's transaction (worker=UNDISPATCHED)
    and cleared once the broker has the task: if this process dies after the commit, or the
    broker is down, the row says so and the sweep hands it over again (after a lease's time),
    and the click still answers (never a 500 for a broker away)."""

    OutgoingMessage.objects.filter(pk=message_pk, state=MessageState.QUEUED).update(
        worker=UNDISPATCHED, updated_at=timezone.now()
    )

    def dispatch() -> None:
        row = OutgoingMessage.objects.filter(pk=message_pk).values_list("send_after", "job_id")
        send_after, job_id = row.first() or (None, None)
        options = _dispatch_options(send_after)
        if options is None:  # held past the eta window: the sweep dispatches it when due
            OutgoingMessage.objects.filter(pk=message_pk, worker=UNDISPATCHED).update(worker="")
            return
        if to_broker(
            lambda: _send_one(message_pk, job_id=job_id, **options), f"message {message_pk}"
        ):
            _with_broker([message_pk])

    # robust: nothing after the commit (a broker that hangs, a locked database) fails the click.
    transaction.on_commit(dispatch, robust=True)


# A URL's user and password (up to the authority's last "@"), and a password= parameter.
_CREDENTIALS = re.compile(r"//[^/]*@|(?i:password=)[^&\s]*")


def to_broker(send: Callable[[], object], what: str) -> bool:
    """Hand a task to the broker; False (logged, without any credential of its URL) when the
    broker does not take it: the row stays UNDISPATCHED for the sweep."""
    try:
        send()
    except Exception as error:
        reason = _CREDENTIALS.sub("***", f"{type(error).__name__}: {error}")[:300]
        logger.warning("%s: the broker did not take the task (%s); the sweep will", what, reason)
        return False
    return True


def _send_one(message_pk: int, *, job_id: int | None, **options: Any) -> None:
    """Publish the task that sends one message, in its lane (CELERY_TASK_ROUTES): a job's
    message as a batch of one (the bulk lane: a 20,000-message job's retries never crowd the
    interactive lane), any other with send_message (the interactive lane)."""
    from .tasks import send_batch, send_message  # tasks import services

    if job_id is not None:
        send_batch.apply_async(([message_pk],), **options)
    else:
        send_message.apply_async((message_pk,), **options)


def _with_broker(message_ids: list[int]) -> None:
    """The broker has these rows' task: "" (nobody's yet), since now. From here until a worker
    takes the task (outbox_received) the row's only trace is in the broker, and the sweep
    counts it lost once its lane's queue is empty (_lost_in_transit)."""
    OutgoingMessage.objects.filter(pk__in=message_ids, worker=UNDISPATCHED).update(
        worker="", updated_at=timezone.now()
    )


SEND_BATCH, SEND_MESSAGE = "outbox.tasks.send_batch", "outbox.tasks.send_message"


def outbox_received(*, task: str, args: Any) -> int:
    """A worker process took a task from the broker (Celery's task_received, before the task
    runs: also one it prefetched) and runs its tasks itself (directo_mail/celery.py: a solo or
    threads pool; a prefork parent hands them to children, which mark what they hold when a
    batch starts and at each claim): what the task is for is marked with this process's lease,
    so it is known to be in a live worker's hands, or in a dead one's once that lease expires
    (_abandoned). Only messages whose time has come: a task early for a held message (a
    duplicate, a stray) sends nothing, and the mark would hide the message from the sweep that
    sends it when due (came_due).

    Without the mark, a task a killed worker had taken but not started (prefetched, or popped
    from Redis a moment before the kill) would leave its rows looking like rows still in the
    queue until the queue is empty (_lost_in_transit); on Redis its message comes back only
    after the visibility timeout (1 h). Returns how many rows. Never raises: the worker goes
    on taking tasks whatever happens here."""
    worker = lease_current()
    if not worker or not isinstance(args, list | tuple) or len(args) != 1:
        return 0
    first, now = args[0], timezone.now()
    free = models.Q(worker="") | models.Q(worker=UNDISPATCHED)
    try:
        if task in (SEND_BATCH, SEND_MESSAGE):
            fault_point("receive.taken")
            ids = first if isinstance(first, list) else [first]
            ids = [pk for pk in ids if type(pk) is int and 0 < pk < 2**63][:10_000]
            marked = 0
            for start in range(0, len(ids), 1000):  # bounded IN lists
                marked += OutgoingMessage.objects.filter(
                    free, _due(), pk__in=ids[start : start + 1000], state=MessageState.QUEUED
                ).update(worker=worker, updated_at=now)
            return marked
        if type(first) is int and 0 < first < 2**63:  # a job's building task names its job
            return BulkJob.objects.filter(free, pk=first, prepare_task=task, prepared=False).update(
                worker=worker, updated_at=now
            )
    except Exception:  # the database away: the rows stay "", for the sweep's other rules
        logger.warning("task %s received: could not mark what it holds", task, exc_info=True)
        with contextlib.suppress(Exception):
            from django.db import connection

            if not connection.in_atomic_block:  # a broken connection: opened again next time
                connection.close()
    return 0


DEFERRED = "deferred"


def outbox_send(*, message_id: int) -> str:
    """Deliver one queued message. Returns its final state; raises TransientSendError to retry.

    The row is claimed (queued → sending) before the SMTP transaction, so two workers never
    send it twice; it is marked sent with the server's reply right after.
    """
    try:
        with _Connections() as connections:
            state, error = _deliver(message_id, connections, max_wait=SINGLE_MAX_WAIT)
    except _NotYourTurn as later:
        # The sender is at its limit (or paused): the mail comes back when it may go, and this
        # worker of the interactive lane is free for everybody else's meanwhile.
        delay, job_id = later.delay, later.job_id
        to_broker(
            lambda: _send_one(message_id, job_id=job_id, countdown=delay),
            f"message {message_id} (waiting for its turn)",
        )
        return WAITING
    except Exception:
        _release([message_id])
        raise
    if state == DEFERRED:
        raise error
    return state


# A single mail waits for its sender's turn in the worker at most this long (seconds); a longer
# wait sends it back to the broker with a countdown, without a claim.
SINGLE_MAX_WAIT = 1.0
WAITING = "waiting"


class _NotYourTurn(Exception):
    def __init__(self, delay: float, job_id: int | None) -> None:
        super().__init__(f"the sender's turn is in {delay:.1f} s")
        self.delay, self.job_id = delay, job_id


def _release(message_ids: list[int]) -> None:
    """A task failed on an error of its own (the database away, a bug): what this worker still
    holds of it is let go, so the sweep's rules for rows without a worker take it back (a
    claim flagged "possibly sent twice" after SEND_CLAIM_TIMEOUT). If even this fails, the cap
    on a live worker's holdings does it (_abandoned)."""
    worker = lease_current()
    if not worker:
        return
    with contextlib.suppress(Exception):
        OutgoingMessage.objects.filter(
            pk__in=message_ids,
            worker=worker,
            state__in=(MessageState.QUEUED, MessageState.SENDING),
        ).update(worker="")


def outbox_send_batch(*, message_ids: list[int]) -> dict[str, int]:
    """Deliver a batch over one connection per sender (a bulk job's batch: one user, one sender).

    Each message is claimed just before its own SMTP transaction, so a worker killed mid-batch
    leaves at most that one message "sending"; the rest stay queued for the next worker. A
    cancelled job's messages are no longer queued, so their claims fail and they are skipped.
    Transient failures go back to the queue one by one, each with its own backoff.
    """
    counts: dict[str, int] = {}
    # The batch's messages are this worker's now: if it dies, the sweep knows at once (by its
    # lease) that they wait for nobody, instead of after SEND_CLAIM_TIMEOUT.
    if worker := lease_current():
        OutgoingMessage.objects.filter(
            models.Q(send_after__isnull=True) | models.Q(send_after__lte=timezone.now()),
            pk__in=message_ids,
            state=MessageState.QUEUED,
        ).update(worker=worker, updated_at=timezone.now())
    ended_jobs = _batch_jobs.set(set())  # jobs are looked at once, after the batch
    # The batch's queued rows and their files in two queries; each is still claimed on its own
    # (the claim checks its state again), right before its SMTP transaction.
    preloaded = {
        message.pk: message
        for message in OutgoingMessage.objects.prefetch_related("attachments").filter(
            pk__in=message_ids, state=MessageState.QUEUED
        )
    }
    contents = read_many(
        default_storage,
        [a.file.name for message in preloaded.values() for a in message.attachments.all()],
    )
    try:
        with _Connections() as connections:
            for message_id in message_ids:
                message = preloaded.pop(message_id, None)
                if message is None:  # not queued when the batch began: someone else's now
                    state = "skipped"
                else:
                    state, _error = _deliver(
                        message_id, connections, message=message, contents=contents
                    )
                if state == DEFERRED:
                    message = OutgoingMessage.objects.only("attempts", "job_id").get(pk=message_id)
                    countdown = retry_delay(message.attempts)
                    _send_one(message_id, job_id=message.job_id, countdown=countdown)
                counts[state] = counts.get(state, 0) + 1
    except Exception:
        _release(message_ids)
        raise
    finally:
        jobs = _batch_jobs.get()
        _batch_jobs.reset(ended_jobs)
    # The job is finished by whoever ends its last message: here, once per batch (a crash
    # before this line is repaired by the sweep).
    for job_id in sorted(jobs):
        bulk_job_finish_if_done(job_id=job_id)
    return counts


class _Connections:
    """Open transports of a batch, one per sender, closed together at the end."""

    def __init__(self) -> None:
        self.open: dict[str, Transport] = {}

    def for_sender(self, sender: SenderConfig) -> Transport:
        key = repr((sender.transport, sender.host, sender.port, sender.login, sender.secret))
        if key not in self.open:
            self.open[key] = transport_for(sender)  # opened by its first send
        return self.open[key]

    def __enter__(self) -> _Connections:
        return self

    def __exit__(self, *exc_info) -> None:
        for transport in self.open.values():
            transport.close()


def _deliver(
    message_id: int,
    connections: _Connections,
    *,
    max_wait: float | None = None,
    message: OutgoingMessage | None = None,
    contents: dict[str, bytes] | None = None,
) -> tuple[str, SendError | None]:
    # Only a queued message whose time has come: a task early for a held message (a duplicate,
    # a redelivery, a sweep, a second worker) claims nothing and sends nothing. A batch passes
    # the row it read already; the claim below checks the same conditions again.
    if message is None:
        message = OutgoingMessage.objects.filter(
            _due(), pk=message_id, state=MessageState.QUEUED
        ).first()
    if message is None or (message.send_after and message.send_after > timezone.now()):
        return "skipped", None
    sender = SenderConfig.from_snapshot(message.sender)
    # The sender's turn (its rate limit, a server's "slow down") is waited for before the claim:
    # a waiting message holds no claim, so the sweep never takes it for a dead one.
    if (delay := ratelimit.wait_for_turn(sender, max_wait=max_wait)) > 0:
        raise _NotYourTurn(delay, message.job_id)
    now = timezone.now()
    claimed = _CLAIM.run_returning(
        {
            "state": MessageState.SENDING,
            "claimed_at": now,
            "worker": lease_current(),
            "updated_at": now,
        },
        {"pk": message_id, "state": MessageState.QUEUED, "send_after": now},
    )
    if claimed is None:  # another task took it while this one waited: its place is given back
        ratelimit.give_back(sender)
        return "skipped", None
    # The attempts as the claim left them (a batch's row was read when the batch began; a
    # retry or another worker may have changed them since).
    message.state, message.claimed_at, message.attempts = MessageState.SENDING, now, claimed[0]
    fault_point("deliver.claimed")
    try:
        data = message_bytes(message, sender, list(message.attachments.all()), contents)
        reply = connections.for_sender(sender).send(data, envelope_for(message, sender))
    except TransientSendError as error:
        if error.explanation == "throttled":  # 421 / 4.7.x: the whole sender slows down
            # Graph's 429/503 name how long (Retry-After); an SMTP 421 does not.
            wait = (error.params or {}).get("retry_after") or retry_delay(message.attempts)
            ratelimit.pause(sender, float(wait))
        if error.maybe_delivered:  # the server may have it: another try may send it twice
            _flag_possibly_duplicated(message)
        if message.attempts >= settings.SEND_MAX_ATTEMPTS:
            return _fail(message, error), None
        _defer(message, error)
        return DEFERRED, error
    except PermanentSendError as error:
        if error.maybe_delivered:
            _flag_possibly_duplicated(message)
        return _fail(message, error), None
    except (SenderConfigError, SecretDecryptionError) as error:
        return _fail(message, _config_error(message.user, error)), None
    except FileNotFoundError:  # stored on another machine's own disk (FILE_STORAGE=local)
        logger.warning("message %s: an attachment is not in this worker's storage", message.pk)
        return _fail(message, PermanentSendError("", explanation="file_missing")), None
    except Exception:
        # A bug, not the server: fail visibly rather than leave the row "sending" for ever.
        logger.exception("message %s: unexpected error while sending", message.pk)
        return _fail(message, PermanentSendError("", explanation="generic")), None
    fault_point("deliver.accepted")
    # The message's final state and what follows it (the invoice: invoices.signals) commit
    # together, so a crash can never leave one without the other.
    with transaction.atomic():
        now = timezone.now()
        _SENT.run(
            {
                "state": MessageState.SENT,
                "sent_at": now,
                "last_reply": reply,
                "explanation": "",
                "explanation_params": {},
                "updated_at": now,
            },
            {"pk": message.pk},
        )
        message_state_changed.send(OutgoingMessage, message=message, state=MessageState.SENT)
    # A job's batch reports its counts when it ends (the task's result): one line a mail only
    # where the log level asks for it; a single mail says it at INFO.
    logger.log(
        logging.DEBUG if _batch_jobs.get() is not None else logging.INFO,
        "message %s sent: %s",
        message.pk,
        reply,
    )
    fault_point("deliver.recorded")
    _job_finish_after(message)
    return MessageState.SENT, None


def _due() -> models.Q:
    return models.Q(send_after__isnull=True) | models.Q(send_after__lte=timezone.now())


# The two statements every sent mail runs, compiled once (the ORM spends ~0.3 ms of CPU a
# statement building the same SQL again; these are the hot path of a 20,000-mail job).
_CLAIM = RowUpdate(
    OutgoingMessage,
    sets=("state", "claimed_at", "worker", "updated_at"),
    increments=("attempts",),
    returning=("attempts",),
    where="{pk} = %s AND {state} = %s AND ({send_after} IS NULL OR {send_after} <= %s)",
)
_SENT = RowUpdate(
    OutgoingMessage,
    sets=("state", "sent_at", "last_reply", "explanation", "explanation_params", "updated_at"),
    where="{pk} = %s",
)


# Inside outbox_send_batch: the jobs whose messages ended, finished after the batch (one
# statement a batch instead of one a mail); None elsewhere (a single send finishes at once).
_batch_jobs: ContextVar[set[int] | None] = ContextVar("_batch_jobs", default=None)


def _job_finish_after(message: OutgoingMessage) -> None:
    """After a message of a job went final (and committed): finish the job if that was its
    last one. Checked after the commit, so of two workers ending the last two messages at once
    the later commit sees both; a crash right before it is repaired by the sweep."""
    if not message.job_id:
        return
    if (batch := _batch_jobs.get()) is not None:
        batch.add(message.job_id)
    else:
        bulk_job_finish_if_done(job_id=message.job_id)


def _flag_possibly_duplicated(message: OutgoingMessage) -> None:
    """Mark the message "possibly sent twice", with its Event, as the sweep does."""
    with transaction.atomic():
        OutgoingMessage.objects.filter(pk=message.pk).update(possibly_duplicated=True)
        _duplicate_risk_event(message)


def _duplicate_risk_event(message: OutgoingMessage) -> None:
    Event.objects.create(
        user_id=message.user_id,
        message=message,
        kind=EventKind.SEND_DUPLICATE_RISK,
        explanation="possibly_duplicated",
        params={},
    )


def _config_error(user: User, error: Exception) -> PermanentSendError:
    with translation.override(user.language or settings.LANGUAGE_CODE):
        text = str(getattr(error, "message", None) or error)
    return PermanentSendError("", explanation="sender_config", params={"message": text})


@transaction.atomic  # a failed message always has its Event
def _record(message: OutgoingMessage, error: SendError, *, state: str, kind: str) -> None:
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=state,
        worker="",
        last_reply=error.reply,
        explanation=error.explanation,
        explanation_params=error.params,
        updated_at=timezone.now(),
    )
    Event.objects.create(
        user_id=message.user_id,
        message=message,
        kind=kind,
        explanation=error.explanation,
        params=error.params,
        reply=error.reply,
    )


def _fail(message: OutgoingMessage, error: SendError) -> str:
    with transaction.atomic():  # the failure, its Event and the invoice's "failed" together
        _record(message, error, state=MessageState.FAILED, kind=EventKind.SEND_FAILED)
        message_state_changed.send(OutgoingMessage, message=message, state=MessageState.FAILED)
    logger.warning("message %s failed (%s): %s", message.pk, error.explanation, error.reply or "-")
    fault_point("deliver.failed_recorded")
    _job_finish_after(message)  # (while a job is being built, it is not prepared: a no-op)
    return MessageState.FAILED


def _defer(message: OutgoingMessage, error: SendError) -> None:
    """Back to the queue for a later try; the user hears of the first delay only."""
    if message.attempts == 1:
        _record(message, error, state=MessageState.QUEUED, kind=EventKind.SEND_RETRYING)
    else:
        OutgoingMessage.objects.filter(pk=message.pk).update(
            state=MessageState.QUEUED,
            worker="",
            last_reply=error.reply,
            explanation=error.explanation,
            explanation_params=error.params,
            updated_at=timezone.now(),
        )
    logger.info("message %s deferred (%s): %s", message.pk, error.explanation, error.reply)


def retry_delay(attempt: int) -> float:
    """Exponential backoff: base, 2×base, 4×base… seconds after the first, second… try."""
    return settings.SEND_RETRY_BASE_SECONDS * 2 ** max(attempt - 1, 0)


def outbox_sweep(*, stuck_after: timedelta | None = None) -> dict[str, int]:
    """Recover what a dead worker left behind (periodic, Celery beat).

    - Claims of a worker process whose lease expired (outbox.leases: no beat for
      WORKER_LEASE_SECONDS), or, made without a lease, older than SEND_CLAIM_TIMEOUT: the
      worker died mid-send, so the message may have gone out; it is queued again, marked
      "possibly sent twice", with an Event. A live worker's claim is never taken.
    - Queued messages whose task a dead worker had taken, or that were handed to the broker a
      lease ago while their lane's queue is empty now (_lost_in_transit), or untouched as
      long as the claim timeout: their task was lost with the worker or the broker;
      dispatched again. A duplicate task is harmless: only one claim per message can
      succeed. A message held for later ("send at") is not lost: it is left alone until its
      time.
    - Held messages whose time has come and that nobody touched since (no claim yet): their
      task had too long a hold for an eta (_dispatch_options), or was lost; they are
      dispatched, and marked touched, so the next sweep leaves them to the rule above. A
      held message thus goes within one sweep interval (OUTBOX_SWEEP_SECONDS) of its time.
    - Jobs whose messages are still being built, untouched as long: the building task died;
      it is started again and goes on where it stopped.
    - Jobs with nothing left to send that are still running (a crash right after their last
      message): finished, at the time of that message; and, through `sweep_reconcile`, what
      other apps keep in step with a message (invoices.signals).
    - Limit counters (outbox.limits) of windows long past are deleted.
    """
    # Given `stuck_after` (an operator's or a test's "everything older is dead"), the leases
    # are not asked: every claim and task older than it counts as abandoned.
    forced = stuck_after is not None
    stuck_after = stuck_after if forced else timedelta(seconds=settings.SEND_CLAIM_TIMEOUT)
    limit = timezone.now() - stuck_after
    returned: dict[int, int | None] = {}  # message id -> its job's id (its lane)
    dead_claims = OutgoingMessage.objects.filter(
        models.Q(claimed_at__lt=limit) if forced else _abandoned("claimed_at", limit),
        state=MessageState.SENDING,
    )
    for message in dead_claims.select_related("user"):
        with transaction.atomic():
            if not OutgoingMessage.objects.filter(
                pk=message.pk, state=MessageState.SENDING, claimed_at=message.claimed_at
            ).update(
                state=MessageState.QUEUED,
                worker="",
                possibly_duplicated=True,
                updated_at=timezone.now(),
            ):
                continue
            _duplicate_risk_event(message)
        returned[message.pk] = message.job_id
    now = timezone.now()
    # Asked before the rows are read, so a task the broker held then and a worker took since
    # was most likely marked by that worker (outbox_received) before the rows are read; when
    # not (a prefork worker, a slow mark), the cost is one duplicate task, which the claim
    # makes harmless.
    # The tasks that build the jobs not built yet (their lanes, for _lost_in_transit).
    building = set(
        BulkJob.objects.filter(prepared=False).values_list("prepare_task", flat=True).distinct()
    ) - {""}
    idle = set() if forced else _idle_lanes(building)
    due = models.Q(send_after__isnull=True) | models.Q(send_after__lte=now)
    orphans = OutgoingMessage.objects.filter(
        due,
        models.Q(updated_at__lte=limit)
        if forced
        else _abandoned("updated_at", limit) | _lost_in_transit(idle),
        state=MessageState.QUEUED,
    )
    orphaned = dict(orphans.order_by("pk").values_list("pk", "job_id"))
    untouched = OutgoingMessage.objects.filter(
        state=MessageState.QUEUED,
        worker__in=("", UNDISPATCHED),  # not one a live worker holds for its eta
        send_after__lte=now,
        updated_at__lt=models.F("send_after"),
    )
    came_due = dict(untouched.order_by("pk").values_list("pk", "job_id"))
    lost = returned | orphaned | came_due
    # Dispatched again, in one transaction with the rows' new mark (UNDISPATCHED, cleared once
    # the broker has them): a sweep killed halfway leaves them to the next sweep, not to the
    # claim timeout.
    with transaction.atomic():
        redone = list(orphaned) + list(came_due)
        for start in range(0, len(redone), 1000):  # bounded IN lists (SQLite's variable limit)
            OutgoingMessage.objects.filter(
                pk__in=redone[start : start + 1000], state=MessageState.QUEUED
            ).update(worker="", updated_at=now)
        # Each to its lane: a job's messages in batches, any other on its own.
        batches_dispatch(message_ids=[pk for pk, job_id in lost.items() if job_id is not None])
        for pk, job_id in lost.items():
            if job_id is None:
                _enqueue_on_commit(pk)
    stalled = list(
        BulkJob.objects.filter(
            models.Q(updated_at__lte=limit)
            if forced
            else _abandoned("updated_at", limit) | _lost_in_transit(idle, building=building),
            prepared=False,
        )
    )
    BulkJob.objects.filter(pk__in=[job.pk for job in stalled]).update(worker="", updated_at=now)
    for job in stalled:
        bulk_job_prepare_dispatch(job=job)
    # Jobs whose last message ended but which nobody finished (a crash right after it).
    still_open = OutgoingMessage.objects.filter(
        job_id=models.OuterRef("pk"), state__in=(MessageState.QUEUED, MessageState.SENDING)
    )
    finished = 0
    for job_id in (
        BulkJob.objects.filter(state=JobState.RUNNING, prepared=True)
        .exclude(models.Exists(still_open))
        .values_list("pk", flat=True)
    ):
        finished += bulk_job_finish_if_done(job_id=job_id, at=_last_change(job_id))
    reconciled = sum(
        result or 0 for _receiver, result in sweep_reconcile.send(sender=OutgoingMessage)
    )
    limits.limits_forget_old()
    leases_forget_old()
    return {
        "returned": len(returned),
        "redispatched": len(lost),
        "came_due": len(came_due),
        "restarted_jobs": len(stalled),
        "finished_jobs": finished,
        "reconciled": reconciled,
    }


def _abandoned(since_field: str, limit: datetime) -> models.Q:
    """Held by a worker process whose lease expired, or by no worker and untouched since
    `limit`, or by a live worker for longer than any send takes (LIVE_HOLD_FACTOR ×
    SEND_CLAIM_TIMEOUT: a task that failed without letting go, a hung process).

    The lease is read in the same statement as the rows, and its age by the database's clock
    (as it was written: leases.py), so a worker that started after the sweep began is never
    taken for a dead one, nor a live one on a machine whose clock is behind. A name without a
    lease row (the row was deleted: a test database flushed) counts as dead only once
    `since_field` is older than a lease."""
    lease_seconds = timedelta(seconds=settings.WORKER_LEASE_SECONDS)
    lease = WorkerLease.objects.filter(name=models.OuterRef("worker"))
    expired = lease.filter(beat_at__lt=Now() - lease_seconds)
    held_too_long = timezone.now() - LIVE_HOLD_FACTOR * timedelta(
        seconds=settings.SEND_CLAIM_TIMEOUT
    )
    dead = (
        models.Exists(expired)
        | (
            ~models.Exists(lease)
            & models.Q(**{f"{since_field}__lt": timezone.now() - lease_seconds})
        )
        | models.Q(**{f"{since_field}__lt": held_too_long})
    )
    return (models.Q(worker__gt="") & dead) | models.Q(worker="", **{f"{since_field}__lte": limit})


LIVE_HOLD_FACTOR = 3


def _lane(task: str) -> str:
    """The queue a task goes to (CELERY_TASK_ROUTES, else the default queue)."""
    route = settings.CELERY_TASK_ROUTES.get(task) or {}
    return route.get("queue", settings.CELERY_TASK_DEFAULT_QUEUE)


def _idle_lanes(building: set[str]) -> set[str]:
    """The lanes whose queue in the broker holds no task right now: the sending lanes and
    those of the `building` tasks. A broker that does not answer: none (nothing counts as
    lost in transit then; the claim timeout still holds)."""
    from celery import current_app

    lanes = {_lane(SEND_BATCH), _lane(SEND_MESSAGE)} | {_lane(task) for task in building}
    idle = set()
    try:
        with current_app.connection_for_read() as connection, connection.channel() as channel:
            for lane in sorted(lanes):
                if not channel.queue_declare(queue=lane).message_count:
                    idle.add(lane)
    except Exception as error:
        reason = _CREDENTIALS.sub("***", f"{type(error).__name__}: {error}")[:300]
        logger.warning("sweep: could not count the broker's queues (%s)", reason)
        return set()
    return idle


def _lost_in_transit(idle: set[str], *, building: set[str] | None = None) -> models.Q:
    """Handed to the broker (worker "") more than a lease ago, and its lane's queue is empty
    now, and no worker took it (a worker marks what it takes, outbox_received): the task is
    nowhere. It died with a worker that had popped it and was killed before it could say so
    (Redis hands it back only after its visibility timeout, 1 h), or the broker lost it. A
    mistake here costs one duplicate task, which is harmless: only one claim can succeed.

    `building`: for BulkJob rows built by these tasks (each in its task's lane), else for
    messages (a job's in the bulk lane, any other in the interactive one). A message
    deferred after a try has its retry waiting in a worker's memory (a countdown task, not in
    the queue): lost only once that countdown (retry_delay) has passed too, so no sweep skips
    a retry's backoff."""
    now, lease = timezone.now(), timedelta(seconds=settings.WORKER_LEASE_SECONDS)
    if building is not None:
        lanes = models.Q(prepare_task__in=[task for task in building if _lane(task) in idle])
        return models.Q(worker="", updated_at__lt=now - lease) & lanes
    lanes = models.Q(pk__in=[])
    if _lane(SEND_BATCH) in idle:
        lanes |= models.Q(job__isnull=False)
    if _lane(SEND_MESSAGE) in idle:
        lanes |= models.Q(job__isnull=True)
    last = settings.SEND_MAX_ATTEMPTS
    waited = models.Q(attempts=0, updated_at__lt=now - lease) | models.Q(
        attempts__gte=last, updated_at__lt=now - lease - timedelta(seconds=retry_delay(last))
    )
    for attempt in range(1, last):  # the countdown the retry of each attempt was given
        countdown = timedelta(seconds=retry_delay(attempt))
        waited |= models.Q(attempts=attempt, updated_at__lt=now - lease - countdown)
    return models.Q(worker="") & waited & lanes


# -- bulk jobs ---------------------------------------------------------------------------------
def bulk_job_dispatch(*, job: BulkJob) -> int:
    """Hand the job's queued messages to the workers in batches of BULK_BATCH_SIZE ids."""
    ids = job.messages.filter(state=MessageState.QUEUED).order_by("pk").values_list("pk", flat=True)
    return batches_dispatch(message_ids=list(ids), send_after=job.send_after)


def batches_dispatch(*, message_ids: list[int], send_after: datetime | None = None) -> int:
    """Once the transaction commits, hand these ids to the workers, BULK_BATCH_SIZE a task;
    messages held until `send_after` as _dispatch_options says (an eta, or the sweeper)."""
    from .tasks import send_batch

    options = _dispatch_options(send_after)
    if options is None:
        return 0
    size = settings.BULK_BATCH_SIZE
    batches = [message_ids[i : i + size] for i in range(0, len(message_ids), size)]
    now = timezone.now()
    for batch in batches:  # recorded with the rows: cleared once the broker has the batch
        OutgoingMessage.objects.filter(pk__in=batch, state=MessageState.QUEUED).update(
            worker=UNDISPATCHED, updated_at=now
        )

    def dispatch() -> None:
        fault_point("dispatch.committed")  # the rows committed, their tasks not yet sent
        for batch in batches:
            if not to_broker(
                lambda b=batch: send_batch.apply_async((b,), **options), f"batch of {len(batch)}"
            ):
                return
            _with_broker(batch)

    transaction.on_commit(dispatch, robust=True)
    return len(batches)


def bulk_job_prepare_dispatch(*, job: BulkJob) -> None:
    """Once the transaction commits, start the task that builds the job's messages."""
    from celery import current_app

    BulkJob.objects.filter(pk=job.pk).update(worker=UNDISPATCHED)  # with the job's row

    def dispatch() -> None:
        if to_broker(lambda: current_app.send_task(job.prepare_task, (job.pk,)), f"job {job.pk}"):
            BulkJob.objects.filter(pk=job.pk, worker=UNDISPATCHED).update(
                worker="",
                updated_at=timezone.now(),  # with the broker since now
            )

    transaction.on_commit(dispatch, robust=True)


@transaction.atomic
def bulk_job_cancel(*, job: BulkJob) -> int:
    """Stop a job: its messages not yet claimed are cancelled (a claim of one fails)."""
    BulkJob.objects.filter(pk=job.pk).update(state=JobState.CANCELLED)
    messages = list(job.messages.filter(state=MessageState.QUEUED))
    OutgoingMessage.objects.filter(pk__in=[m.pk for m in messages]).update(
        state=MessageState.CANCELLED, updated_at=timezone.now()
    )
    for message in messages:
        message_state_changed.send(OutgoingMessage, message=message, state=MessageState.CANCELLED)
    return len(messages)


@transaction.atomic
def bulk_job_requeue(*, job: BulkJob, message_ids: list[int]) -> int:
    """Resume a job with the given cancelled messages (the caller chose which may still go)."""
    count = OutgoingMessage.objects.filter(
        job=job, pk__in=message_ids, state=MessageState.CANCELLED
    ).update(state=MessageState.QUEUED, updated_at=timezone.now())
    BulkJob.objects.filter(pk=job.pk).update(state=JobState.RUNNING, finished_at=None)
    job.refresh_from_db()
    bulk_job_dispatch(job=job)
    return count


def bulk_job_finish_if_done(*, job_id: int, at: datetime | None = None) -> bool:
    """Mark the job finished if it is running, fully built and has no message queued or being
    sent: one conditional UPDATE, so any number of workers may call it at once."""
    still_open = OutgoingMessage.objects.filter(
        job_id=models.OuterRef("pk"), state__in=(MessageState.QUEUED, MessageState.SENDING)
    )
    return bool(
        BulkJob.objects.filter(pk=job_id, state=JobState.RUNNING, prepared=True)
        .exclude(models.Exists(still_open))
        .update(state=JobState.FINISHED, finished_at=at or timezone.now())
    )


def _last_change(job_id: int) -> datetime | None:
    """When the job's last message changed state (its end, for a job found finished late)."""
    return OutgoingMessage.objects.filter(job_id=job_id).aggregate(at=models.Max("updated_at"))[
        "at"
    ]


def _seconds_left(remaining: int, rate: float) -> int | None:
    """None while nothing is sent: no rate to tell the time left by ("—", not "0:00")."""
    if not remaining:
        return 0
    return round(remaining / rate) if rate else None


def bulk_job_progress(*, job: BulkJob) -> dict:
    """Counts, rate and time left of a job; marks it finished once nothing is left to send."""
    counts = dict(
        job.messages.values_list("state").annotate(n=models.Count("pk")).values_list("state", "n")
    )
    sent = counts.get(MessageState.SENT, 0)
    failed = counts.get(MessageState.FAILED, 0)
    cancelled = counts.get(MessageState.CANCELLED, 0)
    remaining = counts.get(MessageState.QUEUED, 0) + counts.get(MessageState.SENDING, 0)
    # Messages not built yet (a job being prepared, or stopped before it was): still to go,
    # or cancelled with the job.
    unbuilt = max(job.total - sum(counts.values()), 0)
    if job.state == JobState.CANCELLED:
        cancelled += unbuilt
    else:
        remaining += unbuilt
    # Nothing left, but nobody finished it (a crash after its last message): finish it now, at
    # the time its last message ended, not at this reading.
    if (
        remaining == 0
        and job.state == JobState.RUNNING
        and bulk_job_finish_if_done(job_id=job.pk, at=_last_change(job.pk))
    ):
        job.refresh_from_db(fields=["state", "finished_at"])
    # A job held for later ("send at") starts sending at its time, not at the click.
    started = max(job.created_at, job.send_after) if job.send_after else job.created_at
    elapsed = max(((job.finished_at or timezone.now()) - started).total_seconds(), 0.0)
    rate = (sent + failed) / elapsed if elapsed > 0 else 0.0
    done = sent + failed + cancelled
    return {
        "job": job.pk,
        "state": job.state,
        "total": job.total,
        "sent": sent,
        "failed": failed,
        "cancelled": cancelled,
        "remaining": remaining,
        "percent": round(100 * done / job.total, 1) if job.total else 100.0,
        "rate": round(rate, 1),
        # None: nothing sent yet, so no rate to tell the time left by ("—", not "0:00").
        "seconds_left": round(remaining / rate)
        if rate and remaining
        else (None if remaining else 0),
        "seconds": round(elapsed, 1),
    }
