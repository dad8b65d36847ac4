"""Limits on the relay and on test mail (issue 11, item 4), in one process.

Across two web processes and two workers: tests/reliability/test_attacks_relay.py.
"""

from __future__ import annotations

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.html import escape

from invoices.demo import seed_invoices
from invoices.models import Customer
from invoices.services import invoices_job_prepare, invoices_send
from outbox import limits
from outbox.limits import Limit, LimitReached, TooManyRecipients, limits_take
from outbox.models import LimitCounter, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.explain import explain
from smtp_settings.models import Security
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


@pytest.fixture(autouse=True)
def _mid_window(monkeypatch):
    """A fixed clock in the middle of an hour: no test crosses a window's edge by chance."""
    now = datetime.datetime(2026, 12, 7, 10, 30, 20, tzinfo=datetime.UTC)
    monkeypatch.setattr(limits.timezone, "now", lambda: now)


def _send(user, to=("client@example.com",), **kwargs):
    return outbox_enqueue(user=user, to=list(to), subject="Hi", body_text="Hi", **kwargs)


def test_a_limit_gives_its_slots_then_refuses():
    limit = Limit(limits.TEST_EMAILS, "t", "hour", 3)
    for _ in range(3):
        limits_take([limit])
    with pytest.raises(LimitReached) as refused:
        limits_take([limit])
    assert refused.value.code == limits.TEST_EMAILS
    assert "3 test e-mails this hour" in refused.value.explanation
    assert LimitCounter.objects.get().count == 3


def test_limits_are_taken_all_or_none():
    roomy, full = Limit(limits.RELAY_USER, "a", "hour", 10), Limit(limits.RELAY_USER, "b", "day", 1)
    limits_take([full])
    with pytest.raises(LimitReached):
        limits_take([roomy, full])
    assert not LimitCounter.objects.filter(key="a:hour", count__gt=0).exists()  # given back


def test_an_amount_larger_than_the_limit_is_refused_whole():
    with pytest.raises(LimitReached):
        limits_take([Limit(limits.RELAY_USER, "a", "hour", 2)], amount=3)
    assert not LimitCounter.objects.filter(count__gt=0).exists()


def test_a_new_window_starts_empty(monkeypatch):
    limit = Limit(limits.TEST_EMAILS, "t", "hour", 1)
    limits_take([limit])
    later = datetime.datetime(2026, 12, 7, 11, 0, 1, tzinfo=datetime.UTC)
    monkeypatch.setattr(limits.timezone, "now", lambda: later)
    limits_take([limit])
    assert LimitCounter.objects.count() == 2


def test_old_counters_are_forgotten():
    limits_take([Limit(limits.TEST_EMAILS, "t", "hour", 1)])
    assert limits.limits_forget_old(now=timezone.now() + datetime.timedelta(days=3)) == 1


def test_relay_mail_counts_every_recipient_the_card_bcc_included(settings):
    settings.RELAY_LIMIT_USER_HOUR = 4
    user = factories.user("ANNA", bcc="archive@acme.example")
    _send(user, to=["a@example.com", "b@example.com"])  # + the card's BCC: 3
    with pytest.raises(LimitReached) as refused:
        _send(user, to=["c@example.com"])  # + BCC: 2 more, over 4
    assert "limit of 4 recipients an hour for one user" in refused.value.explanation
    assert OutgoingMessage.objects.count() == 1
    assert LimitCounter.objects.get(key=f"relay:user:{user.pk}:hour").count == 3


def test_the_company_limit_counts_every_user(settings):
    settings.RELAY_LIMIT_COMPANY_DAY = 2
    _send(factories.user("ANNA"))
    _send(factories.user("BOB"))
    with pytest.raises(LimitReached) as refused:
        _send(factories.user("EWA"))
    assert "your company has reached" in refused.value.explanation
    assert "2 recipients a day" in refused.value.explanation


def test_own_servers_are_not_counted_by_the_relay_limits(settings, smtp_servers):
    settings.RELAY_LIMIT_USER_HOUR = 1
    user = factories.user("ANNA")
    server = smtp_servers.plain
    factories.profile(user, host=server.host, port=server.port, security=Security.NONE)
    for _ in range(3):
        _send(user)
    assert OutgoingMessage.objects.count() == 3


@pytest.mark.parametrize("transport", ["relay", "smtp"])
def test_at_most_n_recipients_a_message_on_every_transport(settings, smtp_servers, transport):
    settings.MAX_RECIPIENTS_PER_MESSAGE = 3
    user = factories.user("ANNA", bcc="archive@acme.example")
    if transport == "smtp":
        server = smtp_servers.plain
        factories.profile(user, host=server.host, port=server.port, security=Security.NONE)
    _send(user, to=["a@example.com"], cc=["b@example.com"])  # 3 with the card's BCC
    with pytest.raises(TooManyRecipients) as refused:
        _send(user, to=["a@example.com"], cc=["b@example.com"], bcc=["c@example.com"])
    assert isinstance(refused.value, ValidationError)
    assert "This message has 4 recipients" in refused.value.messages[0]
    assert "at most 3 are allowed" in refused.value.messages[0]
    assert OutgoingMessage.objects.count() == 1


def test_the_same_address_twice_is_one_recipient(settings):
    settings.MAX_RECIPIENTS_PER_MESSAGE = 1
    user = factories.user("ANNA", bcc="")
    _send(user, to=["a@example.com"], cc=["A@example.com"])
    assert OutgoingMessage.objects.count() == 1


def test_test_emails_are_limited_on_the_page_in_the_users_language(client, settings):
    settings.TEST_EMAILS_PER_HOUR = 2
    user = factories.user("ANNA", language="pl")
    client.force_login(user)
    for _ in range(2):
        assert client.post("/outbox/test-email/").status_code == 302
    response = client.post("/outbox/test-email/", follow=True)
    assert response.status_code == 200
    html = response.content.decode()
    assert escape("Nic nie wysłano: w tej godzinie wysłano już 2 wiadomości testowych") in html
    assert OutgoingMessage.objects.count() == 2


def test_the_relay_refusal_reaches_the_test_email_page(client, settings):
    settings.RELAY_LIMIT_USER_HOUR = 1
    user = factories.user("ANNA", bcc="boss@acme.example")  # 2 recipients: over at once
    client.force_login(user)
    response = client.post("/outbox/test-email/", follow=True)
    assert response.status_code == 200
    assert escape("the platform relay's limit of 1 recipients an hour") in response.content.decode()
    assert not OutgoingMessage.objects.exists()


def test_a_refused_test_email_takes_no_slot_of_the_test_limit(client, settings):
    settings.RELAY_LIMIT_USER_HOUR = 0
    user = factories.user("ANNA")
    client.force_login(user)
    client.post("/outbox/test-email/")
    assert not LimitCounter.objects.filter(count__gt=0).exists()


def test_connection_tests_are_counted_in_the_database(settings):
    from smtp_settings.services import connection_test_refusal

    settings.CONNECTION_TESTS_PER_MINUTE = 2
    user = factories.user("ANNA")
    assert [connection_test_refusal(user=user) is None for _ in range(3)] == [True, True, False]
    assert LimitCounter.objects.get(key=f"connection-test:user:{user.pk}:minute").count == 2


def test_connection_tests_have_an_hourly_cap_too(settings):
    """5 a minute alone would let one user open 7,200 connections a day from the platform."""
    from smtp_settings.services import connection_test_refusal

    settings.CONNECTION_TESTS_PER_MINUTE = 100
    settings.CONNECTION_TESTS_PER_HOUR = 3
    user = factories.user("ANNA")
    assert [connection_test_refusal(user=user) is None for _ in range(3)] == [True, True, True]
    assert "3 times this hour" in connection_test_refusal(user=user)
    assert LimitCounter.objects.get(key=f"connection-test:user:{user.pk}:hour").count == 3
    # A refusal takes nothing from the other window.
    assert LimitCounter.objects.get(key=f"connection-test:user:{user.pk}:minute").count == 3


def test_an_invoice_to_too_many_addresses_is_recorded_with_its_reason(settings, smtp_servers):
    settings.MAX_RECIPIENTS_PER_MESSAGE = 2
    user = factories.user("ANNA", bcc="")
    server = smtp_servers.plain
    factories.profile(user, host=server.host, port=server.port, security=Security.NONE)
    seed_invoices(customers=1, invoices=1)
    Customer.objects.update(emails=["a@example.com", "b@example.com", "c@example.com"])
    job = invoices_send(user=user, unsent=True)
    invoices_job_prepare(job_id=job.pk)  # what the worker's task does
    message = OutgoingMessage.objects.get()
    assert message.explanation == limits.TOO_MANY_RECIPIENTS
    assert "more recipients than one message may have" in explain(message.explanation)["title"]


def test_nothing_to_take_costs_no_query(django_assert_num_queries):
    """An own server's bulk mail takes no limit: no savepoint per message of a 20,000 job."""
    with django_assert_num_queries(0):
        limits.limits_take_amounts([])
