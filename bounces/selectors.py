"""Reads: staff's list of inbound mail (bounces, auto-replies, what could not be matched)."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import InboundMail


def inbound_mail_filtered(
    *, state: str = "", matched: str = "", text: str = ""
) -> QuerySet[InboundMail]:
    """Newest first; `matched` is "yes" (linked to one of our messages), "no", or "" (both);
    `text` matches the subject, the envelope sender or the reason."""
    mails = InboundMail.objects.select_related("message", "message__user").defer("raw")
    if state:
        mails = mails.filter(state=state)
    if matched == "yes":
        mails = mails.filter(message__isnull=False)
    elif matched == "no":
        mails = mails.filter(message__isnull=True)
    if text:
        mails = mails.filter(
            Q(subject__icontains=text)
            | Q(envelope_sender__icontains=text)
            | Q(reason__icontains=text)
        )
    return mails


def inbound_mail_raw_text(mail: InboundMail) -> str:
    """The raw mail as text for display: undecodable bytes shown as �, never interpreted."""
    return bytes(mail.raw or b"").decode("utf-8", errors="replace")
