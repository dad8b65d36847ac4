"""Outgoing messages and their states, their attachments, and Events ("Zdarzenia", S7.4).

The database is the truth: a message row is claimed (queued → sending) before its SMTP
transaction and marked sent with the server's reply after it; the broker carries ids only.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext


class MessageState(models.TextChoices):
    QUEUED = "queued", _("queued")
    SENDING = "sending", _("sending")
    SENT = "sent", _("sent")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")


class JobState(models.TextChoices):
    RUNNING = "running", _("running")
    CANCELLED = "cancelled", _("cancelled")
    FINISHED = "finished", _("finished")


class BulkJob(models.Model):
    """A mass mailing (S1.2): many messages from one user, sent in batches, followed live."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bulk_jobs"
    )
    kind = models.CharField(_("kind"), max_length=20)  # "invoices", "letters"
    description = models.CharField(_("description"), max_length=200, blank=True)
    state = models.CharField(
        _("state"), max_length=10, choices=JobState.choices, default=JobState.RUNNING
    )
    total = models.PositiveIntegerField(_("messages"), default=0)
    # A job whose messages are built by a task (`prepare_task`, chunk by chunk) is `prepared`
    # once that task has gone through all of them; the sweeper restarts a task that died.
    prepared = models.BooleanField(default=True)
    prepare_task = models.CharField(max_length=100, blank=True)
    # The resolved sender at the click (SenderConfig.to_snapshot(): never a secret).
    sender = models.JSONField(null=True, blank=True)
    options = models.JSONField(default=dict, blank=True)  # the kind's choices at the click
    # "Send at" (issue 12, item 6): every message of the job is held until then.
    send_after = models.DateTimeField(_("scheduled for"), null=True, blank=True)
    created_at = models.DateTimeField(_("started"), auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    # The worker process building its messages (WorkerLease.name), "" when none.
    worker = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        verbose_name = _("bulk job")
        verbose_name_plural = _("bulk jobs")
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"

    @property
    def title(self) -> str:
        """What the job is, in the language of whoever looks (issue 14, item 5); the stored
        `description` is in the language of whoever started it."""
        if self.kind == "invoices":
            return ngettext("%(count)s invoice", "%(count)s invoices", self.total) % {
                "count": self.total
            }
        subject = (self.options or {}).get("subject")
        if self.kind == "letters" and subject:
            return ngettext(
                "Letter “%(subject)s” to %(count)s customer",
                "Letter “%(subject)s” to %(count)s customers",
                self.total,
            ) % {"subject": subject, "count": self.total}
        return self.description

    @property
    def is_held(self) -> bool:
        """Running and waiting for its "send at" time."""
        return (
            self.state == JobState.RUNNING
            and self.send_after is not None
            and self.send_after > timezone.now()
        )


class OutgoingMessage(models.Model):
    """One mail, as the user asked for it, with the sender it was resolved to (no secrets)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="outgoing_messages",
        verbose_name=_("user"),
    )
    # SenderConfig as JSON (smtp_settings.snapshot): server, From, Reply-To, envelope… never a
    # secret, only a reference to where it is stored.
    sender = models.JSONField(_("sender"))
    to = models.JSONField(_("to"), default=list)
    cc = models.JSONField(_("cc"), default=list, blank=True)
    bcc = models.JSONField(_("bcc"), default=list, blank=True)
    subject = models.CharField(_("subject"), max_length=998)
    body_text = models.TextField(_("plain-text body"))
    body_html = models.TextField(_("HTML body"), blank=True)
    # Headers of this one message beyond those build_message makes, e.g. a letter's
    # List-Unsubscribe (RFC 8058): names from message.EXTRA_HEADERS only, checked there.
    extra_headers = models.JSONField(_("extra headers"), default=dict, blank=True)
    message_id = models.CharField(_("Message-ID"), max_length=255, unique=True)
    envelope_from = models.CharField(_("envelope sender"), max_length=320)

    state = models.CharField(
        _("state"), max_length=10, choices=MessageState.choices, default=MessageState.QUEUED
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    last_reply = models.TextField(_("server's last reply"), blank=True)
    explanation = models.CharField(_("explanation"), max_length=60, blank=True)
    explanation_params = models.JSONField(default=dict, blank=True)
    possibly_duplicated = models.BooleanField(_("possibly sent twice"), default=False)
    # "Send at" (issue 12, item 6): the worker's claim refuses the message before this time, so
    # no task, sweep or second worker can send it early (outbox.services._deliver).
    send_after = models.DateTimeField(_("scheduled for"), null=True, blank=True)

    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    claimed_at = models.DateTimeField(_("picked up for sending"), null=True, blank=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    # A bounce came back for it (bounces.services): it went out, but not to everyone.
    bounced_at = models.DateTimeField(_("bounced"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    # The business object the mail is about (an invoice, a letter…).
    related_type = models.ForeignKey(
        ContentType, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    related_id = models.CharField(max_length=64, blank=True)
    related = GenericForeignKey("related_type", "related_id")
    job = models.ForeignKey(
        BulkJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    # The worker process (WorkerLease.name) that holds it: its task while queued, its claim
    # while sending; "" when none, or held by a process without a lease (the web, a command).
    # A holder whose lease expired is dead: the sweep takes the message back at once.
    worker = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        verbose_name = _("outgoing message")
        verbose_name_plural = _("outgoing messages")
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["state", "claimed_at"]),
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["related_type", "related_id"]),
            models.Index(fields=["job", "state"]),
            models.Index(fields=["state", "send_after"]),
        ]

    def __str__(self) -> str:
        return f"{self.subject} → {', '.join(self.to)}"

    @property
    def related_labels(self) -> list[str]:
        """What the message is about, e.g. ["Invoice FV/1/2026", "Customer Kowalski"] (S7.4)."""
        related = self.related
        if related is None:
            return []
        labels = [f"{capfirst(related._meta.verbose_name)} {related}"]
        customer = getattr(related, "customer", None)
        if isinstance(customer, models.Model):
            labels.append(f"{capfirst(customer._meta.verbose_name)} {customer}")
        return labels

    @property
    def is_held(self) -> bool:
        """Queued and waiting for its "send at" time."""
        return (
            self.state == MessageState.QUEUED
            and self.send_after is not None
            and self.send_after > timezone.now()
        )

    @property
    def is_final(self) -> bool:
        return self.state in (MessageState.SENT, MessageState.FAILED, MessageState.CANCELLED)


class Attachment(models.Model):
    message = models.ForeignKey(
        OutgoingMessage, on_delete=models.CASCADE, related_name="attachments"
    )
    file = models.FileField(upload_to="outbox/%Y/%m/")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100, default="application/octet-stream")

    def __str__(self) -> str:
        return self.filename


class EventKind(models.TextChoices):
    SEND_FAILED = "send_failed", _("Sending failed")
    SEND_RETRYING = "send_retrying", _("Sending delayed, will retry")
    SEND_DUPLICATE_RISK = "send_duplicate_risk", _("Possibly sent twice")
    MICROSOFT365_RECONNECT = "m365_reconnect", _("Microsoft 365 must be authenticated again")
    GOOGLE_RECONNECT = "google_reconnect", _("Google must be signed in again")
    BOUNCED = "bounced", _("Came back undelivered")
    DELIVERY_DELAYED = "delivery_delayed", _("Delivery delayed")
    COMPLAINT = "complaint", _("Marked as spam by the recipient")
    PASSWORD_REENTRY = "password_reentry", _("Password must be entered again")


class Event(models.Model):
    """Something the user must know about their mail (the Events module, "Zdarzenia").

    The explanation is stored as a catalogue key with its parameters and rendered in the
    reader's language (smtp_settings.explain); the server's raw reply is kept beside it.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="events"
    )
    message = models.ForeignKey(
        OutgoingMessage, on_delete=models.CASCADE, null=True, blank=True, related_name="events"
    )
    kind = models.CharField(_("kind"), max_length=30, choices=EventKind.choices)
    explanation = models.CharField(_("explanation"), max_length=60)
    params = models.JSONField(default=dict, blank=True)
    reply = models.TextField(_("server's reply"), blank=True)
    created_at = models.DateTimeField(_("time"), auto_now_add=True)

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.explanation}"


class SendingWindow(models.Model):
    """How many mails one sender sent in the current window, shared by every worker (the
    database serves as the shared counter on every setup, SQLite included)."""

    key = models.CharField(max_length=400, unique=True)
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)
    # After a "slow down" reply (421, 4.7.x) nothing goes to this sender before this time.
    paused_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.count}"


class LimitCounter(models.Model):
    """How much of one limit was used in one fixed window (outbox.limits), shared by every web
    process and worker: a conditional UPDATE takes a slot, so two processes cannot both take
    the last one."""

    key = models.CharField(max_length=200)  # e.g. "relay:user:12:hour"
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "window_start"], name="limit_counter_window")
        ]

    def __str__(self) -> str:
        return f"{self.key} @ {self.window_start:%Y-%m-%d %H:%M}: {self.count}"


class WorkerLease(models.Model):
    """A live worker process: a thread renews `beat_at` every WORKER_BEAT_SECONDS
    (outbox.leases). Past WORKER_LEASE_SECONDS without a beat the process is dead, and what it
    held (OutgoingMessage.worker, BulkJob.worker) is taken back by the sweep at once, instead of
    after SEND_CLAIM_TIMEOUT; a live one is never taken, however long it waits."""

    name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    beat_at = models.DateTimeField()

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")

    def __str__(self) -> str:
        return self.name
