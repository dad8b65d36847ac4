"""Staff's inbound mail pages (issue 12, item 5) and the read-only admin of the outbox and the
intake: matched or not and why, the raw mail as escaped text or an attachment, staff only."""

from __future__ import annotations

import pytest
from django.test import Client

from bounces.models import InboundMail, IntakeState
from outbox.services import outbox_enqueue
from tests import factories

pytestmark = [pytest.mark.usefixtures("english")]

RAW = b"Subject: Undelivered\r\n\r\n<script>alert('raw')</script>\r\n\xff bytes\r\n"


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def intake(db):
    anna = factories.user("ANNA")
    message = outbox_enqueue(user=anna, to=["x@example.com"], subject="FV 9", body_text="B")
    matched = InboundMail.objects.create(
        source="smtp",
        raw=RAW,
        subject="Undelivered Mail",
        state=IntakeState.BOUNCED,
        message=message,
    )
    lost = InboundMail.objects.create(
        source="pipe",
        raw=b"Subject: Out of office\r\n\r\nAway",
        subject="Out of office",
        state=IntakeState.UNMATCHED,
        reason="no_reference",
        envelope_sender="boss@example.com",
    )
    return anna, factories.user("STAFF", is_staff=True), matched, lost


def test_the_list_shows_matched_and_unmatched_mail_with_why(intake):
    _anna, staff, _matched, _lost = intake
    client = _client(staff)

    def shown(query: str) -> set[str]:
        html = client.get(f"/staff/inbound/?{query}").content.decode()
        return {s for s in ("Undelivered Mail", "Out of office") if s in html}

    assert shown("") == {"Undelivered Mail", "Out of office"}
    assert "no_reference" in client.get("/staff/inbound/").content.decode()
    assert shown("matched=yes") == {"Undelivered Mail"}
    assert shown("matched=no") == {"Out of office"}
    assert shown("state=unmatched") == {"Out of office"}
    assert shown("text=boss%40") == {"Out of office"}
    bad = client.get("/staff/inbound/?state=nope&matched=maybe")
    assert bad.status_code == 200 and "Select a valid choice." in bad.content.decode()


def test_the_raw_mail_is_shown_as_text_and_downloaded_as_an_attachment(intake):
    _anna, staff, matched, _lost = intake
    client = _client(staff)

    html = client.get(f"/staff/inbound/{matched.pk}/").content.decode()
    assert "<script>alert(" not in html
    assert "&lt;script&gt;alert(&#x27;raw&#x27;)&lt;/script&gt;" in html
    assert f"/staff/outbox/{matched.message_id}/" in html  # the linked message
    raw = client.get(f"/staff/inbound/{matched.pk}/raw/")
    assert raw.content == RAW  # byte for byte, undecodable bytes included
    assert raw["Content-Type"] == "message/rfc822"
    assert raw["Content-Disposition"] == f'attachment; filename="inbound-{matched.pk}.eml"'
    assert raw["X-Content-Type-Options"] == "nosniff"


def test_non_staff_read_no_inbound_mail(intake):
    anna, _staff, matched, _lost = intake
    client = _client(anna)  # the matched bounce is about her own message: still staff only
    for url in (
        "/staff/inbound/",
        f"/staff/inbound/{matched.pk}/",
        f"/staff/inbound/{matched.pk}/raw/",
    ):
        response = client.get(url)
        assert response.status_code == 403 and b"alert" not in response.content
    assert Client().get(f"/staff/inbound/{matched.pk}/raw/").status_code == 302


def test_the_admin_lists_messages_events_and_inbound_mail_read_only(intake):
    _anna, _staff, matched, _lost = intake
    root = _client(factories.user("ROOT", is_staff=True, is_superuser=True))
    for model in ("outbox/outgoingmessage", "outbox/event", "bounces/inboundmail"):
        assert root.get(f"/admin/{model}/").status_code == 200
        assert root.get(f"/admin/{model}/add/").status_code == 403
    page = root.get(f"/admin/bounces/inboundmail/{matched.pk}/change/")
    assert page.status_code == 200
    assert b"&lt;script&gt;alert(" in page.content and b"<script>alert(" not in page.content
    root.post(f"/admin/bounces/inboundmail/{matched.pk}/change/", {"subject": "changed"})
    root.post(f"/admin/bounces/inboundmail/{matched.pk}/delete/", {"post": "yes"})
    matched.refresh_from_db()
    assert matched.subject == "Undelivered Mail"
    message = matched.message
    root.post(f"/admin/outbox/outgoingmessage/{message.pk}/delete/", {"post": "yes"})
    message.refresh_from_db()
