"""The ESP door of the bounce intake: anymail's tracking webhooks (S7.4).

When the platform relay is an ESP (smtp_settings.transports.EspTransport), bounces come back as
webhook calls, not mail. anymail's views (anymail.urls) verify and normalise them and send the
`anymail.signals.tracking` signal; the receiver here turns a bounce or a delay into a minimal
RFC 3464 report and hands it to `bounce_ingest`, so it is kept, matched and recorded exactly
like a bounce that came by mail (and a retried webhook is recorded once: "replayed").

Contract with the sending side: the message's anymail `metadata` carries
    {"verp": <the message's envelope sender, its signed VERP address in Reply-To mode>,
     "message_id": <the message's Message-ID header, "<...@...>">}
ESPs return metadata with every tracking event, and anymail has authenticated the call (its
WEBHOOK_SECRET) before the signal fires. The VERP address is the only reference that names a
message (it is signed), handed to the intake as the envelope recipient; the Message-ID may
confirm it, never replace it, as for mail bounces: an event without the VERP is kept,
unmatched. The ESP's own id (`event.message_id`) is not ours and is not used to match.

Event types: "bounced" and "rejected" are permanent failures, "deferred" a delay. "complained"
(a recipient marked the mail as spam) is no bounce: it becomes an RFC 5965 feedback report and
goes through the same intake as one that comes by mail (a complaint Event on the message, once;
neither message nor invoice bounced). Others are ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from email import policy
from email.message import EmailMessage, Message
from email.utils import formatdate

from anymail.signals import AnymailTrackingEvent, tracking
from django.dispatch import receiver

from .models import InboundMail
from .services import bounce_ingest

FAILED_EVENTS = frozenset({"bounced", "rejected"})
DELAYED_EVENTS = frozenset({"deferred"})
COMPLAINT_EVENTS = frozenset({"complained"})

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"^[245]\d\d[ -]")
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,900}>")
_ESP_EVENT_LIMIT = 64 * 1024


@receiver(tracking, dispatch_uid="bounces.webhooks.tracking_received")
def tracking_received(
    sender, *, event: AnymailTrackingEvent, esp_name: str, **kwargs
) -> InboundMail | None:
    """anymail's tracking signal. Database errors propagate: anymail answers the ESP with an
    error and the ESP sends the event again later."""
    return webhook_ingest(event, esp_name=esp_name)


def webhook_ingest(event: AnymailTrackingEvent, *, esp_name: str) -> InboundMail | None:
    """Keep and record one tracking event; None for the event types that are no bounce."""
    source = f"webhook:{esp_name}"[:20]
    if event.event_type in COMPLAINT_EVENTS:
        return _keep_complaint(event, esp_name, source)
    if event.event_type not in FAILED_EVENTS | DELAYED_EVENTS:
        return None
    verp = _metadata(event, "verp")
    return bounce_ingest(
        raw=dsn_from_event(event, esp_name=esp_name),
        source=source,
        envelope_recipients=[verp] if verp else [],
    )


def dsn_from_event(event: AnymailTrackingEvent, *, esp_name: str) -> bytes:
    """A minimal RFC 3464 delivery status notification saying what the ESP reported."""
    failed = event.event_type in FAILED_EVENTS
    action = "failed" if failed else "delayed"
    response = _one_line(event.mta_response)
    description = _one_line(event.description)
    recipient = _one_line(event.recipient) or "unknown@invalid"
    found = _STATUS.search(response)
    # The reply's own status when it agrees with the ESP's verdict (a 4.x.x reply for a mail
    # the ESP gave up on is still a failure for us).
    status = found.group(0) if found and found.group(1) == ("5" if failed else "4") else ""
    status = status or ("5.0.0" if failed else "4.0.0")
    if response:
        diagnostic = f"smtp; {response}" if _REPLY_CODE.match(response) else f"X-ESP; {response}"
    else:
        diagnostic = f"X-ESP; {description or event.event_type}"

    report = _report(
        event,
        esp_name,
        subject="Delivery Status Notification (" + ("Failure)" if failed else "Delay)"),
        report_type="delivery-status",
        text=(
            f"{esp_name} reported the message to {recipient} as {event.event_type}.\n"
            f"{description}\n{response}\n"
        ),
    )
    status_part = Message()
    status_part["Content-Type"] = "message/delivery-status"
    per_message = Message()
    per_message["Reporting-MTA"] = f"X-ESP; {_one_line(esp_name)}"
    per_recipient = Message()
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = diagnostic[:900]
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    _attach_original_headers(report, event)
    _attach_esp_event(report, event)
    return report.as_bytes(policy=policy.SMTP)


def _keep_complaint(event: AnymailTrackingEvent, esp_name: str, source: str) -> InboundMail:
    """An abuse report (RFC 5965 shape), kept raw and recorded as a complaint: no bounce."""
    report = _report(
        event,
        esp_name,
        subject="Complaint",
        report_type="feedback-report",
        text=f"{esp_name} reported a complaint from {_one_line(event.recipient)}.\n",
    )
    feedback = Message()
    feedback["Content-Type"] = "message/feedback-report"
    feedback.set_payload(
        f"Feedback-Type: abuse\r\nUser-Agent: {_one_line(esp_name)}\r\nVersion: 1\r\n"
        f"Original-Rcpt-To: {_one_line(event.recipient)}\r\n"
    )
    report.attach(feedback)
    _attach_original_headers(report, event)
    _attach_esp_event(report, event)
    raw = report.as_bytes(policy=policy.SMTP)
    report_id = str(report["Message-ID"])
    verp = _metadata(event, "verp")
    # The ESP sends an event again when our answer was lost: keep it once.
    kept = InboundMail.objects.filter(report_id=report_id, source=source).first()
    if kept is not None:
        return kept
    # Through the same intake as a mailbox provider's ARF report: a complaint Event on the
    # message its signed VERP names (once per message), no bounce.
    return bounce_ingest(raw=raw, source=source, envelope_recipients=[verp] if verp else [])


def _report(
    event: AnymailTrackingEvent, esp_name: str, *, subject: str, report_type: str, text: str
) -> EmailMessage:
    report = EmailMessage(policy=policy.SMTP)
    report["From"] = "Mail Delivery System <mailer-daemon@invalid>"
    verp = _metadata(event, "verp")
    if verp:
        report["To"] = verp
    report["Subject"] = subject
    report["Date"] = formatdate(
        event.timestamp.timestamp() if event.timestamp else None, localtime=False, usegmt=True
    )
    # Derived from the ESP's event: the same event sent twice is the same report (replay check).
    report["Message-ID"] = f"<{_event_key(event, esp_name)}@{_domain(esp_name)}.webhook.invalid>"
    report["Auto-Submitted"] = "auto-replied"
    report.set_content(text)
    report.make_mixed()
    report.replace_header("Content-Type", f'multipart/report; report-type="{report_type}"')
    report.set_boundary(f"report-{_event_key(event, esp_name)[:32]}")
    return report


def _attach_original_headers(report: EmailMessage, event: AnymailTrackingEvent) -> None:
    """The original's Message-ID and envelope sender, as a returned header (RFC 3462 §2)."""
    lines = []
    message_id = _MESSAGE_ID.search(_metadata(event, "message_id"))
    if message_id:
        lines.append(f"Message-ID: {message_id.group(0)}")
    verp = _metadata(event, "verp")
    if verp:
        lines.append(f"Return-Path: <{verp}>")
    if event.message_id:  # the ESP's id, for an administrator looking it up at the ESP
        lines.append(f"X-ESP-Message-ID: {_one_line(event.message_id)[:200]}")
    headers = Message()
    headers["Content-Type"] = "text/rfc822-headers"
    headers.set_payload("".join(f"{line}\r\n" for line in lines))
    report.attach(headers)


def _attach_esp_event(report: EmailMessage, event: AnymailTrackingEvent) -> None:
    """The ESP's raw event, for an administrator (cut at 64 KiB)."""
    try:
        data = json.dumps(event.esp_event, default=str, ensure_ascii=True, indent=1)
    except (TypeError, ValueError):
        data = json.dumps(repr(event.esp_event))
    part = Message()
    part["Content-Type"] = "application/json"
    part["Content-Disposition"] = 'attachment; filename="esp_event.json"'
    part.set_payload(data[:_ESP_EVENT_LIMIT])
    report.attach(part)


def _metadata(event: AnymailTrackingEvent, key: str) -> str:
    value = (event.metadata or {}).get(key)
    return _one_line(value).strip("<>") if key == "verp" else _one_line(value)


def _event_key(event: AnymailTrackingEvent, esp_name: str) -> str:
    """A stable, header-safe name for the event: its id, else what identifies it."""
    parts = [esp_name, event.event_type]
    if event.event_id:
        parts.append(str(event.event_id))
    else:
        timestamp = event.timestamp.isoformat() if event.timestamp else ""
        parts += [str(event.message_id or ""), str(event.recipient or ""), timestamp]
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:40]


def _domain(esp_name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", esp_name.lower()) or "esp"


def _one_line(value: object) -> str:
    """Text that is safe in a header: one line, no control characters, a sane length."""
    if value is None:
        return ""
    return " ".join("".join(c if c >= " " else " " for c in str(value)).split())[:1000]
