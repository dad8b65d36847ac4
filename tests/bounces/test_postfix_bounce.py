"""Done when (S7.4): an invoice mail sent in Reply-To mode through a real MTA (the private Postfix
of tests/postfix_fixtures.py) to an address that is refused comes back as Postfix's DSN, reaches
the bounce listener (bounces/listener.py) and becomes an Event on the right message, "bounced"
on the invoice and a flag on the customer's address. A forged VERP address and an out-of-office
reply come through the same way and change nothing.

The mail is sent in-process (outbox_send), so the relay and EVENT_MAIL_DOMAIN are this process's
settings: the relay is Postfix, and Postfix routes EVENT_MAIL_DOMAIN to the listener.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from django.utils import timezone, translation
from django.utils.html import escape

from bounces.listener import BounceController
from bounces.models import InboundMail, IntakeState
from invoices.models import Customer, Invoice, SendState
from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue, outbox_send
from smtp_settings.explain import explain
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.postfix_fixtures import PostfixInstance
from tests.smtp_fixtures import HOST, free_port

pytestmark = pytest.mark.django_db(transaction=True)  # the listener writes from its own thread

EVENT_DOMAIN = "event.test"  # routed to the listener (tests/test_postfix_fixtures.py uses it too)
REJECTING_DOMAIN = "refuses.bounces.test"  # a recipient's server answering 550 5.1.1
REFUSED = f"jan@{REJECTING_DOMAIN}"


@pytest.fixture
def listener(settings, postfix: PostfixInstance) -> Iterator[BounceController]:
    """The bounce listener on a free port, as Postfix's route for the event domain."""
    settings.EVENT_MAIL_DOMAIN = EVENT_DOMAIN
    controller = BounceController(hostname=HOST, port=free_port())
    controller.start()
    postfix.set_routes({EVENT_DOMAIN: f"smtp:[{HOST}]:{controller.port}"})
    yield controller
    controller.stop()


@pytest.fixture
def relay_is_postfix(settings, postfix: PostfixInstance) -> None:
    """The platform relay (Reply-To mode sends through it) is the private Postfix."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = postfix.host, postfix.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""


@pytest.fixture
def rejecting_mx(postfix: PostfixInstance, smtp_listener):
    server = smtp_listener("rejecting_mx")
    server.script("RCPT", f"550 5.1.1 <{REFUSED}>: Recipient address rejected", times=None)
    postfix.set_routes({REJECTING_DOMAIN: f"smtp:[{HOST}]:{server.port}"})
    return server


@pytest.fixture
def reply_to_user(monkeypatch):
    # No send task for the session's broker: this test sends itself, and a later test's worker
    # would otherwise pick the task up.
    monkeypatch.setattr("outbox.services._enqueue_on_commit", lambda pk: None)
    factories.company()
    user = factories.user("REPLY", email="anna@acme.example")
    factories.profile(user, mode=SenderMode.REPLY_TO)
    return user


def _invoice_mail(user, address: str) -> tuple[OutgoingMessage, Invoice]:
    customer = invoice_factories.customer("Kowalski", emails=[address])
    invoice = invoice_factories.invoice(customer=customer)
    message = outbox_enqueue(
        user=user,
        to=customer.emails,
        subject=f"Invoice {invoice.number}",
        body_text="Please find the invoice attached.",
        related=invoice,
    )
    return message, invoice


def _mark_sent(message: OutgoingMessage) -> None:
    """As the worker leaves a message that went out (without handing it to Postfix)."""
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=MessageState.SENT, sent_at=timezone.now()
    )
    Invoice.objects.filter(pk=message.related_id).update(send_state=SendState.SENT)


def _copy(message: OutgoingMessage) -> EmailMessage:
    """The message as its recipient saw it (what Postfix returns the headers of)."""
    mime = EmailMessage()
    mime["From"] = f"acme@{EVENT_DOMAIN}"
    mime["To"] = ", ".join(message.to)
    mime["Subject"] = message.subject
    mime["Message-ID"] = message.message_id
    mime.set_content(message.body_text)
    return mime


def _wait_for_inbound(count: int = 1, timeout: float = 10.0) -> list[InboundMail]:
    """The kept mail, once the listener has ingested `count` of them."""
    deadline = time.monotonic() + timeout
    while len(found := list(InboundMail.objects.order_by("pk"))) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} inbound mail(s), not {count}, after {timeout} s")
        time.sleep(0.05)
    return found


def test_a_refused_invoice_mail_comes_back_as_an_event_on_message_invoice_and_customer(
    postfix, listener, relay_is_postfix, rejecting_mx, reply_to_user
):
    message, invoice = _invoice_mail(reply_to_user, REFUSED)

    assert outbox_send(message_id=message.pk) == MessageState.SENT
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.SENT  # Postfix took it; the refusal comes later

    [mail] = _wait_for_inbound()
    message.refresh_from_db()
    assert message.envelope_from.startswith(f"bounces+{message.pk}-")
    assert (mail.source, mail.envelope_sender, mail.envelope_recipients) == (
        "smtp",
        "",  # Postfix sends its DSN from the null sender
        [message.envelope_from],
    )
    assert (mail.state, mail.reason, mail.message) == (IntakeState.BOUNCED, "", message)
    [event] = Event.objects.filter(message=message, kind=EventKind.BOUNCED)
    assert (event.params["address"], event.params["status"]) == (REFUSED, "5.1.1")
    assert event.explanation == "recipient_unknown"
    assert "Recipient address rejected" in event.reply
    assert message.bounced_at is not None
    assert message.state == MessageState.SENT
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.BOUNCED
    assert list(Customer.objects.get(pk=invoice.customer_id).bounced_emails) == [REFUSED]
    assert rejecting_mx.messages == []


def test_a_bounce_to_a_forged_verp_address_through_postfix_is_refused(
    postfix, listener, reply_to_user
):
    message, invoice = _invoice_mail(reply_to_user, "jan@bad.test")
    _mark_sent(message)
    signature = message.envelope_from.split("@")[0].rsplit("-", 1)[1]
    forged = message.envelope_from.replace(signature, "0" * len(signature))

    # bad.test: Postfix bounces it itself (5.1.1), to the forged envelope sender.
    assert postfix.send(_copy(message), forged, ["jan@bad.test"]) == {}

    [mail] = _wait_for_inbound()
    assert mail.envelope_recipients == [forged]
    assert (mail.state, mail.reason, mail.message) == (IntakeState.REFUSED, "forged", None)
    assert message.message_id.encode() in bytes(mail.raw)  # the Message-ID does not overrule it
    assert not Event.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.SENT
    assert invoice.customer.bounced_emails == {}


def test_an_out_of_office_reply_through_postfix_is_kept_and_is_no_bounce(
    postfix, listener, reply_to_user
):
    message, invoice = _invoice_mail(reply_to_user, "jan@kowalski.example")
    _mark_sent(message)
    reply = EmailMessage()
    reply["From"] = "Jan Kowalski <jan@kowalski.example>"
    reply["To"] = message.envelope_from
    reply["Subject"] = f"Automatic reply: {message.subject}"
    reply["Auto-Submitted"] = "auto-replied"
    reply["In-Reply-To"] = message.message_id
    reply.set_content("I am out of the office until Monday.\n")

    assert postfix.send(reply, "", [message.envelope_from]) == {}

    [mail] = _wait_for_inbound()
    assert (mail.state, mail.message) == (IntakeState.AUTO_REPLY, message)
    assert not Event.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.SENT
    assert invoice.customer.bounced_emails == {}


def test_a_single_invoice_sent_with_the_composer_in_reply_to_mode_bounces_onto_that_invoice(
    postfix, listener, relay_is_postfix, rejecting_mx, reply_to_user, client
):
    """Issue 12, item 4: the composer's invoice carries the signed VERP; Postfix's DSN for the
    refused address marks that invoice bounced and flags its customer's address, and the
    invoice's history shows it with the reason."""
    from outbox.message import verp_address, verp_message_pk

    customer = invoice_factories.customer("Kowalski", emails=[REFUSED], language="en")
    invoice = invoice_factories.invoice(customer=customer)
    other = invoice_factories.invoice(customer=customer)  # same customer, never sent
    client.force_login(reply_to_user)
    response = client.post(
        f"/invoices/{invoice.pk}/send/",
        {"to": REFUSED, "subject": f"Invoice {invoice.number}", "body": "Attached."},
    )
    assert response.status_code == 302, response.content
    [message] = OutgoingMessage.objects.all()
    assert message.envelope_from == verp_address(message.pk, EVENT_DOMAIN)
    assert verp_message_pk(message.envelope_from, EVENT_DOMAIN) == message.pk

    assert outbox_send(message_id=message.pk) == MessageState.SENT
    [mail] = _wait_for_inbound()

    assert (mail.state, mail.message) == (IntakeState.BOUNCED, message)
    invoice.refresh_from_db()
    other.refresh_from_db()
    assert invoice.send_state == SendState.BOUNCED
    assert other.send_state == SendState.UNSENT
    assert list(Customer.objects.get(pk=customer.pk).bounced_emails) == [REFUSED]
    page = client.get(f"/invoices/{invoice.pk}/")
    html = page.content.decode()
    assert '<span class="state-bounced">' in html
    with translation.override(page["Content-Language"]):  # the reason, in the reader's language
        assert escape(explain("recipient_unknown")["title"]) in html
    [event] = Event.objects.filter(message=message, kind=EventKind.BOUNCED)
    assert event.explanation == "recipient_unknown"
    assert rejecting_mx.messages == []


@pytest.mark.browser
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
def test_in_the_browser_a_reply_to_invoice_sent_with_the_composer_turns_bounced_with_the_reason(
    postfix, listener, relay_is_postfix, rejecting_mx, reply_to_user, chromium, live_server
):
    """Issue 12, done when, as a user sees it: a Directo-Reply-to user opens the invoice in
    Chromium, sends it with the composer to an address its server refuses, and after Postfix's
    DSN came back the same invoice page says "bounced" with the reason in their language. The
    send itself runs in this process (as above), so the relay and the event domain are ours."""
    from tests.test_browser import TIMEOUT_MS, _login

    customer = invoice_factories.customer("Kowalski", emails=[REFUSED], language="en")
    invoice = invoice_factories.invoice("FV/77/2026", customer=customer)
    context = chromium.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        _login(page, live_server.url, reply_to_user.code)
        page.goto(f"{live_server.url}/invoices/{invoice.pk}/")
        with page.expect_navigation():
            page.get_by_role("link", name="Send by e-mail").click()
        assert page.get_by_label("To", exact=True).input_value() == REFUSED
        with page.expect_navigation():
            page.get_by_role("button", name="Send").click()
        [message] = OutgoingMessage.objects.all()
        assert outbox_send(message_id=message.pk) == MessageState.SENT
        page.reload()
        assert page.locator("tr.history-row .message-state").first.inner_text().startswith("sent")

        [mail] = _wait_for_inbound()
        assert (mail.state, mail.message) == (IntakeState.BOUNCED, message)
        page.reload()
        state = page.locator("tr.history-row .message-state").first
        assert state.locator(".state-bounced").inner_text() == "bounced"
        with translation.override("en"):
            reason = explain("recipient_unknown")["title"]
        assert reason in page.locator("body").inner_text()
        assert page.locator("dd.send-state").inner_text().startswith("bounced")
    finally:
        context.close()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.BOUNCED
    assert list(Customer.objects.get(pk=customer.pk).bounced_emails) == [REFUSED]
    assert rejecting_mx.messages == []
