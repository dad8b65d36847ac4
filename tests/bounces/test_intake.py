"""The bounce intake service (S7.4): a bounce is believed only for a message of ours that went
out, to one of its recipients; it becomes Events on the message, "bounced" on the invoice and
a flag on the customer's address, which later bulk jobs skip unless told otherwise."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.utils import timezone

from bounces.models import InboundMail, IntakeState
from bounces.services import bounce_ingest
from invoices.models import Invoice, SendState
from invoices.services import invoices_job_prepare, invoices_send
from outbox.message import verp_address
from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]
DOMAIN = "event.test"


@pytest.fixture(autouse=True)
def _event_domain(settings):
    settings.EVENT_MAIL_DOMAIN = DOMAIN


@pytest.fixture
def sent_invoice_mail():
    """An invoice mail sent in Reply-To mode (VERP envelope), as the worker leaves it."""
    factories.company()
    user = factories.user("REPLY", email="reply@acme.example")
    factories.profile(user, mode=SenderMode.REPLY_TO)
    customer = invoice_factories.customer("Kowalski", emails=["Jan@Kowalski.example"])
    invoice = invoice_factories.invoice(customer=customer, send_state=SendState.SENT)
    message = outbox_enqueue(
        user=user, to=customer.emails, subject="Invoice", body_text="x", related=invoice
    )
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=MessageState.SENT, sent_at=timezone.now()
    )
    message.refresh_from_db()
    return message


def dsn(
    message: OutgoingMessage,
    *,
    recipient: str = "jan@kowalski.example",
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <jan@kowalski.example>: Recipient address rejected",
    report_id: str = "<dsn-1@mx.test>",
) -> bytes:
    """An RFC 3464 report as Postfix writes it, for `message`."""
    return f"""\
From: MAILER-DAEMON@mx.test (Mail Delivery System)
To: {message.envelope_from}
Subject: Undelivered Mail Returned to Sender
Message-ID: {report_id}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.test

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.kowalski.example
Diagnostic-Code: {diagnostic}

--B
Content-Type: text/rfc822-headers

Message-ID: {message.message_id}
Subject: Invoice

--B--
""".replace("\n", "\r\n").encode()


def _ingest(raw: bytes, message: OutgoingMessage | None = None, **kwargs) -> InboundMail:
    recipients = [message.envelope_from] if message else []
    return bounce_ingest(raw=raw, source="test", envelope_recipients=recipients, **kwargs)


def test_a_hard_bounce_is_an_event_on_the_message_invoice_and_customer(sent_invoice_mail):
    message = sent_invoice_mail

    mail = _ingest(dsn(message), message)

    assert (mail.state, mail.reason, mail.message) == (IntakeState.BOUNCED, "", message)
    [event] = Event.objects.filter(message=message)
    assert (event.kind, event.explanation) == (EventKind.BOUNCED, "recipient_unknown")
    assert event.params["address"] == "jan@kowalski.example"
    assert event.params["status"] == "5.1.1"
    assert "Recipient address rejected" in event.reply
    assert event.user == message.user
    invoice = Invoice.objects.get()
    assert invoice.send_state == SendState.BOUNCED
    assert list(invoice.customer.bounced_emails) == ["jan@kowalski.example"]
    message.refresh_from_db()
    assert message.bounced_at is not None
    assert message.state == MessageState.SENT  # it went out: the bounce is an event, not a state


@pytest.mark.parametrize(
    ("status", "diagnostic", "key", "polish"),
    [
        (
            "5.2.2",
            "smtp; 552 5.2.2 Mailbox full",
            "bounce_mailbox_full",
            "skrzynka pocztowa odbiorcy jest pełna",
        ),
        (
            "5.7.1",
            "smtp; 550 5.7.1 Client host rejected: listed on a block list",
            "bounce_blocked",
            "odrzucił nadawcę",
        ),
        (
            "5.1.2",
            "smtp; 550 5.1.2 Host unknown",
            "bounce_host_unknown",
            "domena adresu nie istnieje",
        ),
    ],
    ids=["mailbox-full", "blocked", "host-unknown"],
)
def test_the_reason_is_explained_in_the_users_language(
    sent_invoice_mail, client, status, diagnostic, key, polish
):
    message = sent_invoice_mail

    _ingest(dsn(message, status=status, diagnostic=diagnostic), message)

    [event] = Event.objects.filter(message=message)
    assert (event.kind, event.explanation) == (EventKind.BOUNCED, key)
    user = message.user
    user.language = "pl"
    user.save()
    client.force_login(user)
    assert polish in client.get("/events/").content.decode()


def _arf(message: OutgoingMessage, complainant: str = "jan@kowalski.example") -> bytes:
    """A mailbox provider's feedback report (RFC 5965) about `message`."""
    return f"""\
From: <fbl@provider.example>
To: <fbl@{DOMAIN}>
Subject: Abuse report
Message-ID: <arf-{message.pk}@provider.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="B"

--B
Content-Type: text/plain

An abuse report.

--B
Content-Type: message/feedback-report

Feedback-Type: abuse
Version: 1
Original-Rcpt-To: <{complainant}>

--B
Content-Type: message/rfc822

Return-Path: <{message.envelope_from}>
Message-ID: {message.message_id}
To: {complainant}
Subject: Invoice

x
--B--
""".replace("\n", "\r\n").encode()


def test_a_complaint_is_an_event_and_no_bounce(sent_invoice_mail, client):
    message = sent_invoice_mail

    mail = _ingest(_arf(message), message)
    again = _ingest(_arf(message), message)

    assert (mail.state, mail.message) == (IntakeState.COMPLAINT, message)
    assert again.state == IntakeState.COMPLAINT
    [event] = Event.objects.filter(message=message)  # once, though reported twice
    assert (event.kind, event.explanation) == (EventKind.COMPLAINT, "complaint")
    assert event.params["address"] == "jan@kowalski.example"
    invoice = Invoice.objects.get()
    assert invoice.send_state == SendState.SENT  # not bounced
    assert invoice.customer.bounced_emails == {}  # the address is not flagged
    message.refresh_from_db()
    assert message.bounced_at is None
    client.force_login(message.user)
    assert "The recipient marked the message as spam." in client.get("/events/").content.decode()


def test_a_complaint_without_our_signed_address_changes_nothing(sent_invoice_mail):
    mail = _ingest(_arf(sent_invoice_mail).replace(b"Return-Path", b"X-Was-Return-Path"))
    assert mail.state == IntakeState.UNMATCHED
    assert not Event.objects.exists()


def test_a_delay_is_shown_and_not_counted_as_a_failure(sent_invoice_mail):
    message = sent_invoice_mail

    mail = _ingest(dsn(message, action="delayed", status="4.4.1", diagnostic=""), message)

    assert mail.state == IntakeState.DELAYED
    [event] = Event.objects.filter(message=message)
    assert (event.kind, event.explanation) == (EventKind.DELIVERY_DELAYED, "bounce_delayed")
    assert Invoice.objects.get().send_state == SendState.SENT
    assert Invoice.objects.get().customer.bounced_emails == {}


def test_a_forged_verp_address_is_refused(sent_invoice_mail):
    message = sent_invoice_mail
    pk = message.pk
    forged = f"bounces+{pk}-0123456789abcdef@{DOMAIN}"

    mail = bounce_ingest(raw=dsn(message), source="test", envelope_recipients=[forged])

    assert (mail.state, mail.reason) == (IntakeState.REFUSED, "forged")
    assert not Event.objects.exists()
    assert Invoice.objects.get().send_state == SendState.SENT


def test_another_messages_verp_signature_does_not_fit(sent_invoice_mail):
    """The signature names one message: moving it to another id is a forgery."""
    other_signature = verp_address(sent_invoice_mail.pk + 1, DOMAIN).split("-")[1]
    forged = f"bounces+{sent_invoice_mail.pk}-{other_signature}"

    mail = bounce_ingest(raw=b"Subject: x\n\nx", source="test", envelope_recipients=[forged])

    assert (mail.state, mail.reason) == (IntakeState.REFUSED, "forged")


def test_the_same_report_twice_is_recorded_once(sent_invoice_mail):
    message = sent_invoice_mail
    _ingest(dsn(message), message)

    again = _ingest(dsn(message), message)
    other_copy = _ingest(dsn(message, report_id="<dsn-2@mx.test>"), message)

    assert (again.state, again.reason) == (IntakeState.REFUSED, "replayed")
    assert (other_copy.state, other_copy.reason) == (IntakeState.REFUSED, "replayed")
    assert Event.objects.filter(kind=EventKind.BOUNCED).count() == 1


def test_the_same_delay_report_twice_is_recorded_once(sent_invoice_mail):
    """Only the report's own Message-ID tells a repeated delay notice from a new one."""
    message = sent_invoice_mail
    delayed = dsn(message, action="delayed", status="4.4.1", diagnostic="")
    _ingest(delayed, message)

    again = _ingest(delayed, message)
    later = _ingest(
        dsn(message, action="delayed", status="4.4.1", diagnostic="", report_id="<dsn-9@mx.test>"),
        message,
    )

    assert (again.state, again.reason) == (IntakeState.REFUSED, "replayed")
    assert later.state == IntakeState.DELAYED
    assert Event.objects.filter(kind=EventKind.DELIVERY_DELAYED).count() == 2


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"state": MessageState.QUEUED, "sent_at": None}, "not_sent"),
        ({"state": MessageState.FAILED, "sent_at": None}, "not_sent"),
        ({"sent_at": timezone.now() - timedelta(days=31)}, "too_old"),
    ],
)
def test_a_bounce_for_a_message_that_did_not_just_go_out_is_refused(
    sent_invoice_mail, change, reason
):
    OutgoingMessage.objects.filter(pk=sent_invoice_mail.pk).update(**change)

    mail = _ingest(dsn(sent_invoice_mail), sent_invoice_mail)

    assert (mail.state, mail.reason) == (IntakeState.REFUSED, reason)
    assert not Event.objects.exists()


def test_a_bounce_for_someone_the_message_was_not_sent_to_is_refused(sent_invoice_mail):
    mail = _ingest(dsn(sent_invoice_mail, recipient="boss@acme.example"), sent_invoice_mail)

    assert (mail.state, mail.reason) == (IntakeState.REFUSED, "not_a_recipient")
    assert not Event.objects.exists()


def test_an_out_of_office_reply_is_no_bounce(sent_invoice_mail):
    reply = EmailMessage()
    reply["From"] = "jan@kowalski.example"
    reply["To"] = sent_invoice_mail.envelope_from
    reply["Subject"] = "Automatyczna odpowiedź: Invoice"
    reply["Auto-Submitted"] = "auto-replied"
    reply.set_content("Jestem na urlopie do 3 grudnia.")

    mail = _ingest(reply.as_bytes(), sent_invoice_mail)

    assert (mail.state, mail.message) == (IntakeState.AUTO_REPLY, sent_invoice_mail)
    assert not Event.objects.exists()
    assert Invoice.objects.get().send_state == SendState.SENT


@pytest.mark.parametrize(
    ("raw", "state", "reason"),
    [
        (b"", IntakeState.UNMATCHED, "no_reference"),
        (b"\x00\xff garbage \r\n\r\n\xfe", IntakeState.UNMATCHED, "no_reference"),
        (b"From: a@b.c\nSubject: hello\n\nnot a bounce", IntakeState.UNMATCHED, "no_reference"),
    ],
)
def test_what_cannot_be_matched_is_kept_raw(raw, state, reason):
    mail = bounce_ingest(raw=raw, source="test")

    mail.refresh_from_db()
    assert (mail.state, mail.reason) == (state, reason)
    assert bytes(mail.raw) == raw


def _nothing_changed(message: OutgoingMessage) -> None:
    assert not Event.objects.exists()
    message.refresh_from_db()
    assert message.bounced_at is None
    invoice = Invoice.objects.get()
    assert invoice.send_state == SendState.SENT
    assert invoice.customer.bounced_emails == {}


@pytest.mark.parametrize(
    "envelope", [[], [f"bounces@{DOMAIN}"], ["someone@elsewhere.example"]], ids=str
)
def test_the_message_id_alone_decides_nothing(sent_invoice_mail, envelope):
    """Every recipient of the invoice has seen its Message-ID: a report that carries only that
    (issue 11: it used to mark the invoice bounced) is kept, unmatched, and changes nothing."""
    mail = bounce_ingest(raw=dsn(sent_invoice_mail), source="test", envelope_recipients=envelope)

    mail.refresh_from_db()
    assert (mail.state, mail.reason, mail.message) == (
        IntakeState.UNMATCHED,
        "no_signed_address",
        None,
    )
    assert "no signed bounce address" in mail.error
    _nothing_changed(sent_invoice_mail)


def test_a_verp_in_the_reports_headers_only_decides_nothing(sent_invoice_mail):
    """The signed address counts as the envelope recipient the door hands in, not as text the
    report's writer put in its To or Return-Path (dsn() writes the VERP in To:)."""
    raw = dsn(sent_invoice_mail).replace(
        b"Subject: Invoice\r\n",
        f"Subject: Invoice\r\nReturn-Path: <{sent_invoice_mail.envelope_from}>\r\n".encode(),
    )
    assert sent_invoice_mail.envelope_from.encode() in raw

    mail = bounce_ingest(raw=raw, source="test", envelope_recipients=[f"bounces@{DOMAIN}"])

    assert (mail.state, mail.reason) == (IntakeState.UNMATCHED, "no_signed_address")
    _nothing_changed(sent_invoice_mail)


def test_a_message_id_of_another_message_is_refused_as_forged(sent_invoice_mail):
    """The VERP of a mail the attacker received, on a report quoting another mail's
    Message-ID: the Message-ID may confirm the VERP, never contradict it."""
    other = outbox_enqueue(
        user=sent_invoice_mail.user, to=["jan@kowalski.example"], subject="Other", body_text="x"
    )
    OutgoingMessage.objects.filter(pk=other.pk).update(
        state=MessageState.SENT, sent_at=timezone.now()
    )
    raw = dsn(sent_invoice_mail).replace(
        sent_invoice_mail.message_id.encode(), other.message_id.encode()
    )

    mail = _ingest(raw, sent_invoice_mail)

    assert (mail.state, mail.reason, mail.message) == (IntakeState.REFUSED, "forged", None)
    _nothing_changed(sent_invoice_mail)


def test_the_message_id_confirms_whatever_its_case(sent_invoice_mail):
    raw = dsn(sent_invoice_mail).replace(
        sent_invoice_mail.message_id.encode(), sent_invoice_mail.message_id.upper().encode()
    )

    assert _ingest(raw, sent_invoice_mail).state == IntakeState.BOUNCED


def test_two_messages_in_one_envelope_are_refused(sent_invoice_mail):
    envelope = [sent_invoice_mail.envelope_from, verp_address(sent_invoice_mail.pk + 1, DOMAIN)]

    mail = bounce_ingest(raw=dsn(sent_invoice_mail), source="test", envelope_recipients=envelope)

    assert (mail.state, mail.reason) == (IntakeState.REFUSED, "forged")
    _nothing_changed(sent_invoice_mail)


def test_an_auto_reply_without_the_signed_address_names_no_message(sent_invoice_mail):
    reply = EmailMessage()
    reply["To"] = f"bounces@{DOMAIN}"
    reply["Subject"] = "Out of office: Invoice"
    reply["In-Reply-To"] = sent_invoice_mail.message_id
    reply.set_content("Away.")

    mail = bounce_ingest(raw=reply.as_bytes(), source="test")

    assert (mail.state, mail.reason, mail.message) == (
        IntakeState.AUTO_REPLY,
        "no_signed_address",
        None,
    )


def test_delay_events_are_capped_per_message_and_address(sent_invoice_mail, settings):
    """Each delay notice has its own report Message-ID, so none is a replay; past the cap they
    are kept and add no Event (issue 11: each one added an Event)."""
    settings.BOUNCE_MAX_DELAY_EVENTS = 3
    message = sent_invoice_mail

    kept = [
        _ingest(
            dsn(
                message,
                action="delayed",
                status="4.4.1",
                diagnostic="",
                report_id=f"<delay-{n}@mx.test>",
            ),
            message,
        )
        for n in range(10)
    ]

    assert [m.state for m in kept] == [IntakeState.DELAYED] * 10
    assert [m.reason for m in kept] == [""] * 3 + ["delay_cap"] * 7
    assert Event.objects.filter(kind=EventKind.DELIVERY_DELAYED).count() == 3
    assert InboundMail.objects.count() == 10
    # The cap is for delays only: the final bounce still counts.
    assert _ingest(dsn(message, report_id="<final@mx.test>"), message).state == (
        IntakeState.BOUNCED
    )
    assert Invoice.objects.get().send_state == SendState.BOUNCED


def test_recipients_past_the_limit_are_ignored_and_counted(sent_invoice_mail, settings):
    settings.BOUNCE_MAX_RECIPIENTS = 5
    raw = dsn(sent_invoice_mail).replace(
        b"Final-Recipient: rfc822; jan@kowalski.example",
        b"".join(
            b"Final-Recipient: rfc822; other%d@kowalski.example\r\nAction: failed\r\n"
            b"Status: 5.1.1\r\n\r\n" % n
            for n in range(50)
        )
        + b"Final-Recipient: rfc822; jan@kowalski.example",
    )

    mail = _ingest(raw, sent_invoice_mail)

    mail.refresh_from_db()
    assert mail.recipients_ignored == 46
    assert len(mail.report["recipients"]) == 5
    # jan@ came after the limit: not read, so not a bounce of this message's recipient.
    assert (mail.state, mail.reason) == (IntakeState.REFUSED, "not_a_recipient")
    assert not Event.objects.exists()


def test_an_internal_error_keeps_the_mail_and_the_intake_goes_on(sent_invoice_mail, monkeypatch):
    import bounces.services

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(bounces.services, "_event", broken)
    mail = _ingest(dsn(sent_invoice_mail), sent_invoice_mail)

    assert (mail.state, mail.reason) == (IntakeState.UNREADABLE, "internal_error")
    assert InboundMail.objects.get().raw
    assert not Event.objects.exists()  # the half-done record was rolled back


def test_a_mail_over_the_size_limit_is_kept_cut(settings):
    settings.BOUNCE_MAX_BYTES = 100

    mail = bounce_ingest(raw=b"Subject: big\n\n" + b"x" * 500, source="test")

    mail.refresh_from_db()
    assert (len(bytes(mail.raw)), mail.truncated) == (100, True)


def test_a_cut_bounce_is_read_as_far_as_it_was_kept(sent_invoice_mail, settings):
    """The report comes first and the returned message last: cut in the returned message, the
    bounce still counts, and is marked cut."""
    raw = dsn(sent_invoice_mail) + b"x" * 1000
    settings.BOUNCE_MAX_BYTES = len(raw) - 500

    mail = _ingest(raw, sent_invoice_mail)

    assert (mail.state, mail.truncated, len(bytes(mail.raw))) == (
        IntakeState.BOUNCED,
        True,
        len(raw) - 500,
    )


# -- later bulk jobs skip a bounced address ------------------------------------------------------
def test_later_jobs_skip_a_bounced_address_unless_told(smtp_servers):
    user = invoice_factories.smtp_sender("ANNA", smtp_servers.plain)
    customer = invoice_factories.customer("Nowak", emails=["a@nowak.example", "b@nowak.example"])
    customer.bounced_emails = {"a@nowak.example": "2026-11-27"}
    customer.save()
    only_bounced = invoice_factories.customer("Zielinski", emails=["z@zielinski.example"])
    only_bounced.bounced_emails = {"z@zielinski.example": "2026-11-27"}
    only_bounced.save()
    partly = invoice_factories.invoice(customer=customer)
    wholly = invoice_factories.invoice(customer=only_bounced)

    job = invoices_send(user=user, unsent=True)
    invoices_job_prepare(job_id=job.pk)

    assert job.messages.get(related_id=str(partly.pk)).to == ["b@nowak.example"]
    skipped = job.messages.get(related_id=str(wholly.pk))
    assert (skipped.state, skipped.explanation) == (MessageState.FAILED, "address_bounced")

    Invoice.objects.filter(pk=wholly.pk).update(send_state=SendState.UNSENT)
    job = invoices_send(user=user, invoice_ids=[wholly.pk], include_bounced=True)
    invoices_job_prepare(job_id=job.pk)
    assert job.messages.get().to == ["z@zielinski.example"]


def test_correcting_the_address_clears_its_flag():
    customer = invoice_factories.customer("Nowak", emails=["a@nowak.example"])
    customer.bounced_emails = {"a@nowak.example": "2026-11-27"}
    customer.save()

    customer.emails = ["anna@nowak.example"]
    customer.save()

    assert customer.bounced_emails == {}


def test_events_show_the_bounce_with_its_invoice_and_customer(client, sent_invoice_mail):
    message = sent_invoice_mail
    _ingest(dsn(message), message)
    client.force_login(message.user)

    html = client.get("/events/").content.decode()

    assert "Came back undelivered: The recipient&#x27;s address does not exist." in html
    assert "Invoice FV/" in html
    assert "Customer Kowalski" in html
    assert "Recipient address rejected" in html
    detail = client.get(f"/outbox/{message.pk}/").content.decode()
    assert "It came back undelivered" in detail
    assert "Customer Kowalski" in detail
    invoices = client.get("/invoices/").content.decode()
    assert '<span class="state-bounced">bounced</span>' in invoices
    assert "The recipient&#x27;s address does not exist." in invoices
    assert '<s class="bounced-address"' in invoices


# -- the real bounces of flufl.bounce's sdist, through the whole intake ------------------------
CORPUS = sorted((Path(__file__).parent / "data").glob("*.txt"))


def test_every_real_bounce_goes_through_the_intake_and_is_kept():
    """No crash, every one kept raw, and what the report lists agrees with the library's own
    expectations (file by file: each expected address with the expected permanence)."""
    import json

    expectations = json.loads((Path(__file__).parent / "data" / "expectations.json").read_text())
    assert len(CORPUS) >= 100

    kept = {path.name: bounce_ingest(raw=path.read_bytes(), source="test") for path in CORPUS}

    assert InboundMail.objects.count() == len(CORPUS)
    assert not InboundMail.objects.filter(reason="internal_error").exists()
    checked = 0
    for expected in expectations["expectations"]:
        if expected.get("scope") != "detector" or not expected.get("addresses"):
            continue
        report = kept[expected["file"]].report
        found = {r["address"].lower(): r["permanent"] for r in report["recipients"]}
        for address in expected["addresses"]:
            assert found.get(address.lower()) is (not expected["temporary"]), (expected, found)
            checked += 1
    assert checked >= 100
