"""Every mail that reaches the event domain, kept raw with what was made of it (S7.4)."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class IntakeState(models.TextChoices):
    BOUNCED = "bounced", _("bounce recorded")
    DELAYED = "delayed", _("delay recorded")
    AUTO_REPLY = "auto_reply", _("auto-reply, not a bounce")
    COMPLAINT = "complaint", _("complaint (marked as spam), not a bounce")
    UNMATCHED = "unmatched", _("no message of ours found")
    UNREADABLE = "unreadable", _("could not be read")
    REFUSED = "refused", _("refused")


class InboundMail(models.Model):
    """One mail handed to the intake (pipe, SMTP listener or an ESP's webhook), never dropped:
    what could not be read or matched stays here, raw, for an administrator."""

    received_at = models.DateTimeField(_("received"), auto_now_add=True)
    source = models.CharField(_("door"), max_length=20)  # "pipe", "smtp", "webhook:<esp>"
    envelope_sender = models.CharField(_("envelope sender"), max_length=998, blank=True)
    envelope_recipients = models.JSONField(_("envelope recipients"), default=list, blank=True)
    raw = models.BinaryField(_("raw message"), blank=True)
    # Cut at BOUNCE_MAX_BYTES: only the kept part was read.
    truncated = models.BooleanField(_("cut at the size limit"), default=False)
    # Recipients past BOUNCE_MAX_RECIPIENTS in the report, ignored unread.
    recipients_ignored = models.PositiveIntegerField(_("recipients ignored"), default=0)
    subject = models.CharField(_("subject"), max_length=998, blank=True)
    # The bounce's own Message-ID: the same report handed in twice is recorded once.
    report_id = models.CharField(max_length=998, blank=True, db_index=True)
    state = models.CharField(_("state"), max_length=12, choices=IntakeState.choices)
    # Why it was refused or not matched: "forged", "replayed", "not_sent", "too_old",
    # "not_a_recipient", "no_signed_address" (one of our Message-IDs, but no signed VERP),
    # "no_reference", "message_deleted", "parse_error", "internal_error"; or, for a delay that
    # added no Event, "delay_cap".
    reason = models.CharField(_("reason"), max_length=40, blank=True)
    error = models.TextField(blank=True)
    message = models.ForeignKey(
        "outbox.OutgoingMessage",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="inbound_mail",
        verbose_name=_("message"),
    )
    report = models.JSONField(default=dict, blank=True)  # BounceReport as JSON

    class Meta:
        verbose_name = _("inbound mail")
        verbose_name_plural = _("inbound mail")
        ordering = ["-received_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.get_state_display()}: {self.subject or '-'}"
