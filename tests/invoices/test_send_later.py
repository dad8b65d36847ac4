"""Send later (issue 12, item 6), without a worker: "send at" in the composer, the bulk buttons
and `send_document`, read in the user's time zone and refused with a reason when it is past,
too far ahead, garbage or a local time a clock change skips or repeats; the hold on the message
page and in the invoice's history; the owner's cancel; the claim and the sweeper leave a held
message alone. Plain `db`: nothing commits, so no task is ever published.
tests/outbox/test_send_later.py sends for real.
"""

from __future__ import annotations

import io
import zoneinfo
from datetime import datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import formats, timezone, translation

from invoices.models import SendState
from invoices.services import invoice_send_one, invoices_job_prepare
from outbox.models import BulkJob, MessageState, OutgoingMessage
from outbox.services import _dispatch_options, bulk_job_progress, outbox_send, outbox_sweep
from outbox.staff import outbox_message_send_now
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english"), pytest.mark.django_db]

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def _user(code: str = "DORA", **fields):
    factories.company()
    user = factories.user(code, time_zone="America/New_York", **fields)
    factories.profile(user, mode=SenderMode.DEFAULT, security="")
    return user


def _local(moment: datetime, zone=NEW_YORK) -> str:
    """What a datetime-local input sends for `moment` in `zone`."""
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def _compose(**fields) -> dict:
    return {
        "to": "billing@kowalski.example",
        "subject": "Invoice FV/1/2026",
        "body": "Please find the invoice attached.",
        **fields,
    }


def _clock_change(zone: zoneinfo.ZoneInfo) -> str:
    """The next local half hour that `zone` skips or repeats (a DST change), as typed in."""
    moment = timezone.now().astimezone(zone).replace(minute=30, second=0, microsecond=0)
    moment = moment.replace(tzinfo=None)
    for _ in range(24 * 400):
        moment += timedelta(hours=1)
        early, late = (moment.replace(fold=f, tzinfo=zone) for f in (0, 1))
        if early.utcoffset() != late.utcoffset():
            return moment.strftime("%Y-%m-%dT%H:%M")
    raise AssertionError(f"{zone} has no clock change within 400 days")


def _held_invoice_message(user, minutes: int = 30) -> OutgoingMessage:
    invoice = invoice_factories.invoice("FV/7/2026")
    return invoice_send_one(
        user=user,
        invoice=invoice,
        to=["ap@smith.example"],
        subject="Invoice FV/7/2026",
        body="Attached.",
        send_after=timezone.now() + timedelta(minutes=minutes),
    )


# -- the composer ------------------------------------------------------------------------------
def test_the_composer_offers_send_at_in_the_users_time_zone(client):
    invoice = invoice_factories.invoice()
    client.force_login(_user())

    html = client.get(f"/invoices/{invoice.pk}/send/").content.decode()

    assert 'type="datetime-local" name="send_at"' in html
    assert "Your time zone: America/New_York." in html


def test_send_at_is_read_in_the_users_time_zone_and_holds_the_message(client):
    invoice = invoice_factories.invoice("FV/1/2026")
    client.force_login(_user())
    wanted = (timezone.now() + timedelta(hours=3)).replace(second=0, microsecond=0)

    response = client.post(
        f"/invoices/{invoice.pk}/send/", _compose(send_at=_local(wanted)), follow=True
    )

    [message] = OutgoingMessage.objects.all()
    assert message.send_after == wanted  # the same instant, typed as New York time
    assert (message.state, message.is_held) == (MessageState.QUEUED, True)
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.QUEUED
    html = response.content.decode()
    with timezone.override(NEW_YORK):
        when = formats.date_format(timezone.localtime(wanted), "SHORT_DATETIME_FORMAT")
    assert f"Invoice FV/1/2026 will be sent at {when}" in html  # the success line, NY time
    assert f"scheduled for {when}" in html  # the history row


def test_an_empty_send_at_sends_now(client):
    invoice = invoice_factories.invoice()
    client.force_login(_user())

    client.post(f"/invoices/{invoice.pk}/send/", _compose(send_at=""))

    [message] = OutgoingMessage.objects.all()
    assert message.send_after is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("garbage", "Enter a valid date/time."),
        ("2026-02-30T10:00", "Enter a valid date/time."),
        ("99999-01-01T00:00", "Enter a valid date/time."),
        ("2020-01-01T10:00", "This time has already passed."),
        ("0001-01-01T00:00", "This time has already passed."),
        ("9999-12-31T23:59", "A message can be held for at most 90 days."),
        ("9999-12-31T23:59:59-12:00", "A message can be held for at most 90 days."),  # forged
        ("clock change", "it may be ambiguous or it may not exist"),
    ],
)
def test_a_bad_send_at_is_a_form_error_and_queues_nothing(client, value, error):
    invoice = invoice_factories.invoice()
    client.force_login(_user())
    if value == "clock change":
        value = _clock_change(NEW_YORK)

    response = client.post(f"/invoices/{invoice.pk}/send/", _compose(send_at=value))

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not OutgoingMessage.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.UNSENT


def test_a_past_send_at_is_explained_in_the_users_language(client):
    invoice = invoice_factories.invoice()
    client.force_login(_user(language="pl"))

    response = client.post(f"/invoices/{invoice.pk}/send/", _compose(send_at="2020-01-01T10:00"))

    assert "Ten czas już minął" in response.content.decode()
    assert not OutgoingMessage.objects.exists()


def test_a_minute_late_is_now(client):
    invoice = invoice_factories.invoice()
    client.force_login(_user())

    client.post(f"/invoices/{invoice.pk}/send/", _compose(send_at=_local(timezone.now())))

    [message] = OutgoingMessage.objects.all()
    assert message.send_after is None


# -- the message page, the owner's cancel -----------------------------------------------------
def test_the_message_page_shows_the_hold_in_the_users_time_zone_and_a_cancel(client):
    user = _user()
    message = _held_invoice_message(user)
    client.force_login(user)

    html = client.get(f"/outbox/{message.pk}/").content.decode()

    with timezone.override(NEW_YORK):
        when = formats.date_format(timezone.localtime(message.send_after), "SHORT_DATETIME_FORMAT")
    assert f"Scheduled for {when}" in html
    assert f'action="/outbox/{message.pk}/cancel/"' in html


def test_the_owner_cancels_a_held_invoice_message_and_gets_the_invoice_back(client):
    user = _user()
    message = _held_invoice_message(user)
    client.force_login(user)

    response = client.post(f"/outbox/{message.pk}/cancel/", follow=True)

    assert "The message was cancelled; it will not be sent." in response.content.decode()
    message.refresh_from_db()
    assert message.state == MessageState.CANCELLED
    assert message.related.send_state == SendState.UNSENT
    again = client.post(f"/outbox/{message.pk}/cancel/", follow=True)
    assert "Only a queued message can be cancelled." in again.content.decode()


def test_another_user_cannot_cancel_my_held_message_nor_see_it(client):
    message = _held_invoice_message(_user())
    intruder = factories.user("MALLORY")
    client.force_login(intruder)

    assert client.post(f"/outbox/{message.pk}/cancel/").status_code == 404
    assert client.get(f"/outbox/{message.pk}/").status_code == 404
    staff = factories.user("STAFF", is_staff=True)
    client.force_login(staff)  # staff cancel from the staff outbox, not as its owner
    assert client.post(f"/outbox/{message.pk}/cancel/").status_code == 404
    assert "/cancel/" not in client.get(f"/outbox/{message.pk}/").content.decode()

    message.refresh_from_db()
    assert (message.state, message.is_held) == (MessageState.QUEUED, True)


def test_cancel_is_a_post_with_csrf(client):
    user = _user()
    message = _held_invoice_message(user)
    client.force_login(user)
    assert client.get(f"/outbox/{message.pk}/cancel/").status_code == 405

    from django.test import Client

    guarded = Client(enforce_csrf_checks=True)
    guarded.force_login(user)
    assert guarded.post(f"/outbox/{message.pk}/cancel/").status_code == 403
    message.refresh_from_db()
    assert message.state == MessageState.QUEUED


# -- the claim and the sweeper -----------------------------------------------------------------
def test_no_worker_can_claim_a_held_message_before_its_time():
    message = _held_invoice_message(_user())

    assert outbox_send(message_id=message.pk) == "skipped"  # a duplicate task, a 2nd worker

    message.refresh_from_db()
    assert (message.state, message.attempts, message.claimed_at) == (MessageState.QUEUED, 0, None)


def test_the_sweeper_leaves_a_held_message_alone_and_dispatches_it_once_when_due():
    message = _held_invoice_message(_user())
    OutgoingMessage.objects.filter(pk=message.pk).update(
        updated_at=timezone.now() - timedelta(hours=1)  # long untouched: not "lost" while held
    )

    assert outbox_sweep(stuck_after=timedelta(0))["redispatched"] == 0

    OutgoingMessage.objects.filter(pk=message.pk).update(
        send_after=timezone.now() - timedelta(seconds=1)
    )
    first = outbox_sweep()
    assert (first["came_due"], first["redispatched"]) == (1, 1)
    second = outbox_sweep()  # dispatched once; a later sweep treats it as any queued message
    assert (second["came_due"], second["redispatched"]) == (0, 0)


def test_short_holds_get_an_eta_and_long_ones_wait_for_the_sweeper(settings):
    settings.SEND_LATER_ETA_MAX_SECONDS = 900
    soon = timezone.now() + timedelta(seconds=30)
    assert _dispatch_options(None) == {}
    assert _dispatch_options(timezone.now() - timedelta(seconds=1)) == {}
    assert _dispatch_options(soon) == {"eta": soon}
    assert _dispatch_options(timezone.now() + timedelta(hours=2)) is None


def test_staff_send_now_clears_the_hold():
    message = _held_invoice_message(_user())

    outbox_message_send_now(message=message)

    message.refresh_from_db()
    assert message.send_after is None and message.state == MessageState.QUEUED


# -- bulk jobs ---------------------------------------------------------------------------------
def test_an_invoice_job_takes_send_at_and_its_page_says_so(client):
    factories.company()
    user = invoice_factories.smtp_user_without_server("PIOTR")
    user.time_zone = "America/New_York"
    user.save()
    invoices = invoice_factories.invoices(2)
    client.force_login(user)
    wanted = (timezone.now() + timedelta(hours=2)).replace(second=0, microsecond=0)

    response = client.post(
        "/invoices/send/",
        {"action": "selected", "invoice": [i.pk for i in invoices], "send_at": _local(wanted)},
        follow=True,
    )

    job = BulkJob.objects.get()
    assert job.send_after == wanted
    invoices_job_prepare(job_id=job.pk)  # what the prepare task does
    assert {m.send_after for m in job.messages.all()} == {wanted}
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    with timezone.override(NEW_YORK):
        when = formats.date_format(timezone.localtime(wanted), "SHORT_DATETIME_FORMAT")
    assert f"Scheduled for {when}" in html
    assert response.status_code == 200


def test_an_invoice_job_with_a_bad_send_at_starts_nothing(client):
    factories.company()
    user = invoice_factories.smtp_user_without_server("PIOTR")
    invoices = invoice_factories.invoices(2)
    client.force_login(user)

    response = client.post(
        "/invoices/send/",
        {"action": "selected", "invoice": [i.pk for i in invoices], "send_at": "9999-01-01T00:00"},
        follow=True,
    )

    assert "Nothing was sent: A message can be held for at most 90 days." in (
        response.content.decode()
    )
    assert not BulkJob.objects.exists()
    assert {i.send_state for i in invoices} == {SendState.UNSENT}


def test_a_letter_job_takes_send_at(client):
    from invoices.models import Letter

    factories.company()
    user = invoice_factories.smtp_user_without_server("PIOTR")
    customer = invoice_factories.customer("Smith", emails=["ap@smith.example"])
    letter = Letter.objects.create(subject="News", body="Hello", created_by=user)
    client.force_login(user)
    wanted = (timezone.now() + timedelta(hours=1)).replace(second=0, microsecond=0)

    client.post(
        f"/letters/{letter.pk}/send/",
        {"customer": [customer.pk], "send_at": _local(wanted, timezone.get_default_timezone())},
    )

    job = BulkJob.objects.get()
    assert job.send_after == wanted  # the card's default time zone: settings.TIME_ZONE
    assert [m.send_after for m in job.messages.all()] == [wanted]
    assert (
        client.post(
            f"/letters/{letter.pk}/send/", {"customer": [customer.pk], "send_at": "x"}
        ).status_code
        == 302
    )
    assert BulkJob.objects.count() == 1


# -- the user card's time zone -----------------------------------------------------------------
def test_the_card_sets_the_time_zone_and_refuses_a_made_up_one(client):
    user = factories.user("DORA")
    factories.profile(user, mode=SenderMode.DEFAULT)  # as the card stores it
    client.force_login(user)
    html = client.get("/accounts/card/").content.decode()
    assert '<option value="Europe/Tallinn">Europe/Tallinn</option>' in html
    card = {"name": "Dora", "email": user.email, "mode": "default", "security": ""}

    client.post("/accounts/card/", {**card, "time_zone": "Europe/Tallinn"})
    user.refresh_from_db()
    assert user.time_zone == "Europe/Tallinn"

    response = client.post("/accounts/card/", {**card, "time_zone": "Mars/Olympus_Mons"})
    assert "Select a valid choice." in response.content.decode()
    client.post("/accounts/card/", card)  # an older form without the field keeps it
    user.refresh_from_db()
    assert user.time_zone == "Europe/Tallinn"


def test_a_new_user_has_the_installations_time_zone(settings):
    assert factories.user("NEW").time_zone == settings.TIME_ZONE


# -- send_document --send-at -------------------------------------------------------------------
def _send_document(*args: str) -> str:
    out = io.StringIO()
    call_command("send_document", *args, stdout=out)
    return out.getvalue()


def test_send_document_send_at_without_offset_is_in_the_users_time_zone():
    _user()
    invoice_factories.invoice("FV/30/2026")
    wanted = (timezone.now() + timedelta(hours=5)).replace(second=0, microsecond=0)
    local = wanted.astimezone(NEW_YORK).replace(tzinfo=None).isoformat()

    _send_document("--user", "DORA", "--invoice", "FV/30/2026", "--send-at", local)

    assert OutgoingMessage.objects.get().send_after == wanted


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("tomorrow", "is not a date and time"),
        ("2026-02-30T10:00", "is not a date and time"),
        ("2020-01-01T10:00", "This time has already passed"),
        ("2999-01-01T10:00+00:00", "at most 90 days"),
        ("clock change", "does not exist or is ambiguous in the time zone America/New_York"),
    ],
)
def test_send_document_refuses_a_bad_send_at_and_sends_nothing(value, error):
    _user()
    invoice = invoice_factories.invoice("FV/31/2026")
    if value == "clock change":
        value = _clock_change(NEW_YORK)

    with pytest.raises(CommandError, match=error):
        _send_document("--user", "DORA", "--invoice", "FV/31/2026", "--send-at", value)

    assert not OutgoingMessage.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.UNSENT


def test_translations_of_the_new_strings_exist():
    with translation.override("et"):
        assert translation.gettext("Send at") != "Send at"
    with translation.override("pl"):
        assert translation.gettext("Send at") != "Send at"


def test_the_users_time_zone_holds_for_their_request_only(client, settings):
    client.force_login(_user())
    client.get("/invoices/")
    assert timezone.get_current_timezone_name() == settings.TIME_ZONE  # nothing leaked


def test_a_held_jobs_progress_counts_from_its_time(client):
    factories.company()
    user = invoice_factories.smtp_user_without_server("PIOTR")
    user.time_zone = "America/New_York"
    user.save()
    invoice_factories.invoices(2)
    client.force_login(user)
    client.post(
        "/invoices/send/",
        {"action": "unsent", "send_at": _local(timezone.now() + timedelta(hours=1))},
    )
    job = BulkJob.objects.get()
    invoices_job_prepare(job_id=job.pk)

    progress = bulk_job_progress(job=job)
    assert (progress["state"], progress["remaining"], progress["rate"]) == ("running", 2, 0.0)
    assert progress["seconds"] == 0.0 and job.is_held
