"""Attacks on "Send by e-mail" (issue 12): what a logged-in user tries with the composer, and
that the goal fails.

- **Mail an extra victim through the composer's fields.** A Default user (the platform relay)
  puts a line break and a `Bcc:` header into To, Cc, Bcc and the subject (raw and RFC 2047
  encoded), hoping the relay delivers the invoice, with its body, to a victim. Counted: mails
  the server (the real aiosmtpd behind the real worker) received for the victim. The control:
  the same user naming the victim plainly in Bcc, which the detector sees arrive.
- **Read who another user mails.** B opens an invoice that A sent to a private address: the
  history must not show B the address, the server's reply or a link to A's message. The
  control: A, on the same page, sees all three.
"""

from __future__ import annotations

import time

import pytest
from django.test import Client

from outbox.models import OutgoingMessage
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english")]

VICTIM = "victim@target.example"
PAYLOADS = [
    {"to": f"ap@smith.example\r\nBcc: {VICTIM}"},
    {"to": f"ap@smith.example\nBcc: {VICTIM}"},
    {"cc": f"copy@smith.example\r\nBcc: {VICTIM}"},
    {"bcc": f"<{VICTIM}>\r\nX-Injected: 1"},
    {"to": f'"ap@smith.example\r\nBcc: {VICTIM}" <ap@smith.example>'},
    {"subject": f"Invoice\r\nBcc: {VICTIM}"},
    {"subject": f"Invoice\u2028Bcc: {VICTIM}"},
    {"subject": "=?utf-8?q?Invoice=0D=0ABcc:_" + VICTIM.replace("@", "=40") + "?="},
]


def _default_user(code: str):
    factories.company()
    user = factories.user(code)
    factories.profile(user, mode=SenderMode.DEFAULT, security="")
    return user


def _compose(**fields) -> dict:
    return {"to": "ap@smith.example", "subject": "Invoice", "body": "Attached.", **fields}


def _victim_mails(server) -> int:
    return sum(VICTIM in [r.lower() for r in m.rcpt_tos] for m in server.messages)


@pytest.mark.usefixtures("celery_worker")
def test_no_field_of_the_composer_mails_an_extra_victim(transactional_db, smtp_servers, figures):
    server = smtp_servers.plain
    client = Client()
    client.force_login(_default_user("MALLORY"))
    refused = 0
    for payload in PAYLOADS:
        invoice = invoice_factories.invoice()
        response = client.post(f"/invoices/{invoice.pk}/send/", _compose(**payload))
        assert response.status_code in (200, 302), (payload, response.status_code)
        refused += response.status_code == 200 and "has-error" in response.content.decode()
    # The control: a legitimate send, and then one naming the victim plainly in Bcc.
    clean = invoice_factories.invoice()
    assert client.post(f"/invoices/{clean.pk}/send/", _compose()).status_code == 302
    control = invoice_factories.invoice()
    assert client.post(f"/invoices/{control.pk}/send/", _compose(bcc=VICTIM)).status_code == 302
    sent = OutgoingMessage.objects.count()
    server.wait_for(sent)
    time.sleep(0.3)  # anything injected would arrive with them
    control_reached = _victim_mails(server)
    injected = control_reached - 1  # the control's own mail is the one expected

    figures.add("attacks", "composer payloads that mailed an extra victim", injected, "= 0")
    assert control_reached >= 1, "the detector must see the control's mail to the victim"
    assert injected == 0
    assert refused == len(PAYLOADS)  # each refused on its field, nothing queued for it
    assert sent == 2


def test_the_history_does_not_show_who_another_user_mailed(db, figures):
    a, b = _default_user("ALICE"), factories.user("BOB")
    invoice = invoice_factories.invoice()
    from outbox.services import outbox_enqueue

    message = outbox_enqueue(
        user=a,
        to=["private-partner@alice.example"],
        subject="Invoice",
        body_text="x",
        related=invoice,
    )
    OutgoingMessage.objects.filter(pk=message.pk).update(last_reply="250 2.0.0 queued as SECRET1")
    secrets = ["private-partner@alice.example", "SECRET1", f"/outbox/{message.pk}/"]

    def shown(user) -> int:
        client = Client()
        client.force_login(user)
        html = client.get(f"/invoices/{invoice.pk}/").content.decode()
        return sum(secret in html for secret in secrets)

    leaked, control = shown(b), shown(a)
    figures.add("attacks", "another user's recipients or replies shown in a history", leaked, "= 0")
    assert control == len(secrets)  # the owner sees them: the detector works
    assert leaked == 0
