"""`manage.py send_document`: one invoice through the real worker, and refusals that change
nothing (issue 12, item 8)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from invoices.models import SendState
from outbox.models import OutgoingMessage
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories


def _send_document(*args: str) -> str:
    out = io.StringIO()
    call_command("send_document", *args, stdout=out)
    return out.getvalue()


@pytest.mark.usefixtures("english", "celery_worker")
def test_a_default_user_sends_one_invoice_and_waits_for_sent(transactional_db, smtp_servers):
    factories.company()
    user = factories.user("DORA")
    factories.profile(user, mode=SenderMode.DEFAULT, security="")
    customer = invoice_factories.customer("Smith", emails=["ap@smith.example"], language="en")
    invoice_factories.invoice("FV/20/2026", customer=customer)

    result = json.loads(
        _send_document("--user", "DORA", "--invoice", "FV/20/2026", "--wait", "--json")
    )

    assert (result["state"], result["invoice_state"], result["to"]) == (
        "sent",
        SendState.SENT,
        ["ap@smith.example"],
    )
    assert result["last_reply"].startswith("250")
    [mail] = smtp_servers.plain.wait_for(1)
    assert mail.message["Subject"] == "Invoice FV/20/2026"
    [pdf] = list(mail.message.iter_attachments())
    assert pdf.get_filename() == "FV-20-2026.pdf"


@pytest.mark.usefixtures("english")
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--user", "NOBODY", "--invoice", "FV/21/2026"], "There is no user"),
        (["--user", "DORA", "--invoice", "FV/0/0"], "Unknown invoices: FV/0/0"),
        (["--user", "DORA", "--invoice", "FV/21/2026", "--to", "x\r\nBcc: v@x.example"], "valid"),
        (["--user", "DORA", "--invoice", "FV/21/2026", "--to", "not-an-address"], "valid"),
    ],
)
def test_refusals_are_explained_and_send_nothing(db, args, error):
    factories.company()
    user = factories.user("DORA")
    factories.profile(user, mode=SenderMode.DEFAULT, security="")
    invoice = invoice_factories.invoice("FV/21/2026")

    with pytest.raises(CommandError, match=error):
        _send_document(*args)

    assert not OutgoingMessage.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.UNSENT


@pytest.mark.usefixtures("english")
def test_too_many_recipients_from_the_shell_are_refused(db, settings):
    settings.MAX_RECIPIENTS_PER_MESSAGE = 2
    factories.company()
    user = factories.user("DORA")
    factories.profile(user, mode=SenderMode.DEFAULT, security="")
    invoice_factories.invoice("FV/22/2026")
    to = [arg for n in range(3) for arg in ("--to", f"r{n}@smith.example")]

    with pytest.raises(CommandError, match="recipients"):
        _send_document("--user", "DORA", "--invoice", "FV/22/2026", *to)
    assert not OutgoingMessage.objects.exists()
