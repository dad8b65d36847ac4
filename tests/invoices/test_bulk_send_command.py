"""`manage.py bulk_send`: a job through the real worker, and refusals that change nothing."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from invoices.demo import seed_invoices
from invoices.models import Invoice, SendState
from outbox.models import BulkJob
from tests import factories


def _bulk_send(*args: str) -> str:
    out = io.StringIO()
    call_command("bulk_send", *args, stdout=out)
    return out.getvalue()


@pytest.mark.usefixtures("english", "celery_worker")
def test_send_all_unsent_and_wait(transactional_db, smtp_servers):
    server = smtp_servers.plain
    user = factories.user("PIOTR", email="piotr@acme.example")
    factories.profile(user, host=server.host, port=server.port, security="none")
    assert seed_invoices(customers=2, invoices=5) == 5

    result = json.loads(
        _bulk_send("--user", "PIOTR", "--unsent", "--wait", "--timeout", "60", "--json")
    )

    assert (result["state"], result["total"], result["sent"], result["failed"]) == (
        "finished",
        5,
        5,
        0,
    )
    received = server.wait_for(5)
    assert len({m.message["Subject"] for m in received}) == 5
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.SENT}
    again = json.loads(_bulk_send("--user", "PIOTR", "--unsent", "--json"))
    assert again["total"] == 0  # nothing goes twice


@pytest.mark.django_db
@pytest.mark.usefixtures("english")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "NOBODY", "--unsent"], "There is no user with the code “NOBODY”."),
        (["--user", "ANNA", "--unsent"], "Mass mailing needs your own mail server"),
        (["--user", "PIOTR", "--invoices", "{first},FV/999/1999"], "Unknown invoices: FV/999/1999"),
    ],
)
def test_refusals_change_nothing(args, message):
    factories.user("ANNA")  # Default: the platform relay
    piotr = factories.user("PIOTR")
    factories.profile(piotr, host="smtp.acme.example", port=587, security="starttls")
    seed_invoices(customers=1, invoices=2)

    first = Invoice.objects.order_by("pk").first().number
    with pytest.raises(CommandError, match=message):
        _bulk_send(*[arg.format(first=first) for arg in args])

    assert not BulkJob.objects.exists()
    assert set(Invoice.objects.values_list("send_state", flat=True)) == {SendState.UNSENT}


def test_a_user_code_with_a_nul_is_just_unknown(db):
    """PostgreSQL refuses NUL in a query: the command says "no such user" instead."""
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="There is no user with the code"):
        call_command("bulk_send", "--user", "AN\x00NA", "--unsent")
