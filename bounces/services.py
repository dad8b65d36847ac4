"""Writes: the bounce intake (S7.4). Every door (pipe, SMTP listener, ESP webhook) calls
`bounce_ingest`; it keeps the mail, matches it to its message and records what it means.

A bounce is believed only for a message of ours that went out, to one of its recipients:
- only the signed VERP address names the message: `bounces+<pk>-<hmac>@EVENT_MAIL_DOMAIN` as
  the envelope recipient the door hands in (the MTA's RCPT TO, or the VERP the ESP returns in
  the message's metadata, which anymail authenticates). A wrong signature is "forged". The
  report's own headers are the sender's to write: the original Message-ID they quote (which
  every recipient of the mail has seen) may confirm the VERP's message, and one that names
  another message is "forged", but it never finds a message by itself: a report with no signed
  address is kept, unmatched ("no_signed_address" when it quotes one of our Message-IDs,
  "no_reference" otherwise), and changes nothing;
- the same report handed in twice, or a second hard bounce for the same message and address,
  is recorded once ("replayed"); so is one for a message that never went out ("not_sent"),
  or that comes back later than BOUNCE_MAX_AGE_DAYS after sending ("too_old");
- the failed addresses must be the message's recipients ("not_a_recipient");
- delay Events are capped at BOUNCE_MAX_DELAY_EVENTS per message and address: later delay
  reports are kept (reason "delay_cap") and add none.
Auto-replies (out of office) are kept and are not bounces. Nothing here ever raises to the door:
what cannot be read or matched stays raw for an administrator.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from outbox.message import VERP_LOCAL_PART, ascii_domain, verp_message_pk
from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.signals import message_bounced
from smtp_settings.explain import error_from_reply

from .models import InboundMail, IntakeState
from .parse import BounceRecipient, BounceReport, parse_bounce
from .reasons import explanation_key

logger = logging.getLogger(__name__)

# Catalogue keys of smtp_settings.explain that say something true about a recipient's server
# refusing a message; any other refusal is explained as a plain "bounced".
_RECIPIENT_KEYS = frozenset({"recipient_unknown", "message_too_large", "spf_rejected"})
# RFC 5321 §4.5.3.1.8: 100 recipients a transaction; more name no more of our messages.
_MAX_ENVELOPE_RECIPIENTS = 100
_REPLY = re.compile(r"^(?:smtp|x-\w+)?\s*;?\s*([245]\d\d)[ -](.*)$", re.IGNORECASE | re.DOTALL)


def bounce_ingest(
    *,
    raw: bytes,
    source: str,
    envelope_sender: str = "",
    envelope_recipients: Sequence[str] = (),
) -> InboundMail:
    """Keep `raw`, then read and record it. Never raises for what the mail contains."""
    limit = settings.BOUNCE_MAX_BYTES
    truncated = len(raw) > limit
    if truncated:  # the doors hand in at most limit + 1 bytes; only the kept part is read
        raw = raw[:limit]
    envelope_recipients = list(envelope_recipients)[:_MAX_ENVELOPE_RECIPIENTS]
    mail = InboundMail(
        source=source[:20],
        envelope_sender=_clean(envelope_sender)[:998],
        envelope_recipients=[_clean(r)[:998] for r in envelope_recipients],
        raw=b"",  # written apart by _store_raw, once the row exists
        truncated=truncated,
    )
    report = parse_bounce(
        raw,
        envelope_recipients=envelope_recipients,
        max_recipients=settings.BOUNCE_MAX_RECIPIENTS,
    )
    mail.subject = _clean(report.subject)[:998]
    mail.recipients_ignored = report.recipients_ignored
    mail.report = _report_json(report)
    try:
        with transaction.atomic():
            _record(mail, report)
            _store_raw(mail.pk, raw)
    except (OperationalError, InterfaceError):
        raise  # the database is away: the door answers "try later" and the MTA keeps the mail
    except Exception as error:  # the intake must go on: the mail stays, raw, for an admin
        logger.exception("bounce intake: could not record mail from %s", source)
        mail.pk = None
        mail.message = None
        mail.state, mail.reason, mail.error = IntakeState.UNREADABLE, "internal_error", repr(error)
        mail.save()
        _store_raw(mail.pk, raw)
    mail.raw = raw
    logger.info(
        "bounce intake (%s): %s %s message=%s", source, mail.state, mail.reason, mail.message_id
    )
    return mail


def _store_raw(pk: int, raw: bytes) -> None:
    """Write the kept mail into its row. On PostgreSQL as a binary parameter: Django's
    client-side binding turns 10 MB into a 20 MB hex literal inside a 20 MB query string, about
    60 MB of memory for one mail (measured; a bounce_server taking two such mails at a time
    went past its 150 MB bound), where psycopg's binary parameter sends the bytes as they are."""
    if connection.vendor != "postgresql":
        InboundMail.objects.filter(pk=pk).update(raw=raw)
        return
    import psycopg  # only with the PostgreSQL backend

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:  # server-side binding: %b is binary
        cursor.execute(
            f"UPDATE {InboundMail._meta.db_table} SET raw = %b WHERE id = %s",  # noqa: S608
            [raw, pk],
        )


def _record(mail: InboundMail, report: BounceReport) -> None:
    mail.report_id = _clean(report.report_id)[:998]
    if report.error and report.kind == "unknown":
        mail.state, mail.reason = IntakeState.UNREADABLE, "parse_error"
        mail.error = _clean(report.error)
        mail.save()
        return
    message, reason, why = _find_message(mail.envelope_recipients, report)
    mail.message = message
    mail.error = why
    if report.kind == "complaint" and not reason:
        _complaint(mail, message, report)
        return
    if report.kind == "auto_reply" and reason != "forged":
        mail.state, mail.reason = IntakeState.AUTO_REPLY, reason if message is None else ""
        mail.save()
        return
    if reason:
        state = IntakeState.REFUSED if reason == "forged" else IntakeState.UNMATCHED
        mail.state, mail.reason = state, reason
        mail.save()
        return
    # One intake at a time per message: the replay check and the delay cap count what the
    # previous report recorded (PostgreSQL; SQLite writes one at a time anyway).
    message = OutgoingMessage.objects.select_for_update().get(pk=message.pk)
    recipients = _their_recipients(message, report)
    refused = _refusal(mail, message, recipients)
    if refused:
        mail.state, mail.reason = IntakeState.REFUSED, refused
        mail.save()
        return
    permanent = [r for r in recipients if r.permanent]
    delays = [r for r in recipients if not r.permanent and _delays_below_cap(message, r)]
    mail.state = IntakeState.BOUNCED if permanent else IntakeState.DELAYED
    if not permanent and not delays:
        mail.reason = "delay_cap"
    mail.save()
    for recipient in [*permanent, *delays]:
        _event(message, recipient)
    if permanent:
        OutgoingMessage.objects.filter(pk=message.pk).update(bounced_at=timezone.now())
        message_bounced.send(
            OutgoingMessage, message=message, addresses=[r.address for r in permanent]
        )


def _find_message(
    envelope_recipients: Sequence[str], report: BounceReport
) -> tuple[OutgoingMessage | None, str, str]:
    """The message the signed VERP envelope recipient names, or why there is none: (message,
    reason, a sentence for an administrator)."""
    domain = settings.EVENT_MAIL_DOMAIN.lower()
    named: set[int] = set()
    for address in envelope_recipients:
        address = address.strip().strip("<>").lower()  # a VERP token is lower-case
        local, _, at = address.rpartition("@")
        if at != domain or not local.startswith(f"{VERP_LOCAL_PART}+"):
            continue
        pk = verp_message_pk(address, settings.EVENT_MAIL_DOMAIN)
        if pk is None:
            return None, "forged", f"{address}: the signature does not fit"
        named.add(pk)
    if not named:
        if report.original_message_id and (
            OutgoingMessage.objects.filter(message_id=report.original_message_id).exists()
        ):
            return None, "no_signed_address", "no signed bounce address; the Message-ID alone"
        return None, "no_reference", ""
    if len(named) > 1:  # one report is about one message: which would it be?
        return None, "forged", "the envelope names more than one message"
    message = OutgoingMessage.objects.filter(pk=named.pop()).first()
    if message is None:
        return None, "message_deleted", ""
    original = report.original_message_id
    if original and original.lower() != message.message_id.lower():
        # A VERP from one mail on a report about another: someone who holds one of our mails
        # (its Return-Path shows the VERP) is trying it on someone else's.
        return None, "forged", "the original Message-ID is not the VERP's message"
    return message, "", ""


def _delays_below_cap(message: OutgoingMessage, recipient: BounceRecipient) -> bool:
    """Whether another delay Event for this message and address is still kept."""
    kept = Event.objects.filter(
        message=message, kind=EventKind.DELIVERY_DELAYED, params__address=recipient.address
    ).count()
    return kept < settings.BOUNCE_MAX_DELAY_EVENTS


def _refusal(mail: InboundMail, message: OutgoingMessage, recipients: list[BounceRecipient]) -> str:
    """Why the bounce is not believed for `message` ("" when it is); `recipients` are the
    report's addresses that the message was sent to."""
    if message.state != MessageState.SENT or message.sent_at is None:
        return "not_sent"
    if timezone.now() - message.sent_at > timedelta(days=settings.BOUNCE_MAX_AGE_DAYS):
        return "too_old"
    if not recipients:
        return "not_a_recipient"
    if (
        mail.report_id
        and InboundMail.objects.filter(
            report_id=mail.report_id,
            state__in=[IntakeState.BOUNCED, IntakeState.DELAYED],
        ).exists()
    ):
        return "replayed"
    if all(r.permanent for r in recipients) and all(
        Event.objects.filter(
            message=message, kind=EventKind.BOUNCED, params__address=r.address
        ).exists()
        for r in recipients
    ):
        return "replayed"
    return ""


def _their_recipients(message: OutgoingMessage, report: BounceReport) -> list[BounceRecipient]:
    """The report's failed or delayed addresses that the message was sent to (once each)."""
    # An international domain went out in IDNA form (outbox.message.envelope_for): a report
    # may name either form.
    sent_to = {ascii_domain(a.lower()): a.lower() for a in [*message.to, *message.cc, *message.bcc]}
    found: dict[str, BounceRecipient] = {}
    for recipient in report.recipients:
        address = sent_to.get(ascii_domain(recipient.address.lower()))
        if address and (address not in found or recipient.permanent):
            found[address] = dataclasses.replace(recipient, address=address)
    return list(found.values())


def _complaint(mail: InboundMail, message: OutgoingMessage, report: BounceReport) -> None:
    """An ARF report about a message of ours (RFC 5965): an Event for the sender, kept apart
    from bounces (no address flagged, the message not bounced). Once per report."""
    mail.state = IntakeState.COMPLAINT
    mail.save()
    sent_to = {a.lower() for a in [*message.to, *message.cc, *message.bcc]}
    theirs = [a for a in report.complainants if a.lower() in sent_to]
    if Event.objects.filter(message=message, kind=EventKind.COMPLAINT).exists():
        return  # the same complaint again (an ESP and the mailbox provider both report it)
    Event.objects.create(
        user=message.user,
        message=message,
        kind=EventKind.COMPLAINT,
        explanation="complaint",
        params={"address": theirs[0] if theirs else "", "feedback_type": report.feedback_type},
        reply="",
    )


def _event(message: OutgoingMessage, recipient: BounceRecipient) -> None:
    params = {
        "address": recipient.address,
        "status": _clean(recipient.status),
        "remote_mta": _clean(recipient.remote_mta)[:200],
    }
    if recipient.permanent:
        kind, key = EventKind.BOUNCED, _explanation(recipient)
    else:
        kind, key = EventKind.DELIVERY_DELAYED, "bounce_delayed"
    Event.objects.create(
        user=message.user,
        message=message,
        kind=kind,
        explanation=key,
        params=params,
        reply=_clean(recipient.diagnostic)[:2000],
    )


def _explanation(recipient: BounceRecipient) -> str:
    """A plain-language key for the receiving server's refusal: from its reply where the
    sending catalogue knows it, else from the recipient's reason (bounces/reasons.py)."""
    from_reply = ""
    match = _REPLY.match(recipient.diagnostic.strip())
    if match:
        key = error_from_reply(int(match[1]), match[2], stage="rcpt").explanation
        from_reply = key if key in _RECIPIENT_KEYS else ""
    if from_reply in ("spf_rejected", "message_too_large"):
        return from_reply  # the sending catalogue's own words for these
    if recipient.reason not in ("user_unknown", "rejected"):
        return explanation_key(recipient.reason)  # mailbox full, host unknown, …: more exact
    return from_reply or explanation_key(recipient.reason)


def _report_json(report: BounceReport) -> dict:
    return _clean_json(dataclasses.asdict(report))


def _clean_json(value):
    """`_clean` on every string, however deep (the recipients' fields too)."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {key: _clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(item) for item in value]
    return value


def _clean(text: str) -> str:
    """No NUL (PostgreSQL text refuses it), no other control character but tab/newline, and no
    lone surrogate (no database stores one)."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return "".join(c for c in text if c >= " " or c in "\t\n")
