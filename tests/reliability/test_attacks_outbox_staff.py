"""Attacks on staff's outbox and inbound mail (issue 12, item 5).

What an abuser (or an unlucky staff user) would try, and the goal that must fail:
- send a customer the same mail twice: click Retry and Send now again and again (double
  submits, two tabs) while the real worker is sending; the goal is a second copy at the server;
- read another user's mail as a non-staff user: the staff list, message page, raw .eml and the
  raw bounces; the goal is any byte of the victim's private text;
- make a download run as a page of this site: the goal is an .eml or raw bounce served as
  something a browser renders (not an attachment, or a renderable type).
Each scenario has a control showing its detector sees the bad outcome.
"""

from __future__ import annotations

import secrets

import pytest
from django.test import Client

from bounces.models import InboundMail, IntakeState
from outbox.models import MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from tests import factories
from tests.outbox.waiting import settled

pytestmark = [pytest.mark.usefixtures("english", "transactional_db")]


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _smtp_user(server, code: str):
    user = factories.user(code, email=f"{code.lower()}@acme.example")
    factories.profile(user, host=server.host, port=server.port, security="none")
    return user


@pytest.mark.usefixtures("celery_worker")
def test_retry_and_send_now_clicked_again_and_again_deliver_once(smtp_servers, figures):
    server = smtp_servers.plain
    anna = _smtp_user(server, "ANNA")
    staff = _client(factories.user("STAFF", is_staff=True))
    server.script("MAIL", "550 5.7.1 refused for now", 1)
    message = settled(
        outbox_enqueue(user=anna, to=["client@example.com"], subject="FV 1", body_text="B")
    )
    assert message.state == MessageState.FAILED

    for _ in range(5):  # a double submit, a second tab, an impatient user
        staff.post(f"/staff/outbox/{message.pk}/retry/")
        staff.post(f"/staff/outbox/{message.pk}/send_now/")
        staff.post(f"/staff/outbox/{message.pk}/retry/")
    message = settled(message)
    server.wait_for(1)
    extra = server.times_accepted(message.message_id) - 1

    figures.add(
        "attacks", "extra copies delivered by repeated staff retry / send now", extra, "= 0"
    )
    assert message.state == MessageState.SENT
    assert extra == 0


@pytest.mark.usefixtures("celery_worker")
def test_control_the_copy_counter_sees_a_second_delivery(smtp_servers, figures):
    """Put the sent message back in the queue by hand (what a missing state check would do):
    Send now then delivers it again, and the same counter sees the second copy."""
    server = smtp_servers.plain
    anna = _smtp_user(server, "ANNA")
    staff = _client(factories.user("STAFF", is_staff=True))
    message = settled(outbox_enqueue(user=anna, to=["c@example.com"], subject="S", body_text="B"))
    OutgoingMessage.objects.filter(pk=message.pk).update(state=MessageState.QUEUED)

    staff.post(f"/staff/outbox/{message.pk}/send_now/")
    settled(message)
    server.wait_for(2)
    extra = server.times_accepted(message.message_id) - 1

    figures.add("attacks", "control: extra copies seen when a sent message is queued again", extra)
    assert extra == 1


def _victims_mail(marker: str):
    anna = factories.user("ANNA")
    message = outbox_enqueue(
        user=anna, to=[f"{marker}@customer.example"], subject=f"Private {marker}", body_text=marker
    )
    inbound = InboundMail.objects.create(
        source="smtp",
        raw=f"Subject: bounce {marker}\r\n\r\n<script>x()</script>{marker}\r\n".encode(),
        subject=f"bounce {marker}",
        state=IntakeState.BOUNCED,
        message=message,
    )
    urls = [
        "/staff/outbox/",
        f"/staff/outbox/?text={marker}",
        f"/staff/outbox/{message.pk}/",
        f"/staff/outbox/{message.pk}/eml/",
        "/staff/inbound/",
        f"/staff/inbound/{inbound.pk}/",
        f"/staff/inbound/{inbound.pk}/raw/",
    ]
    return urls, [f"/staff/outbox/{message.pk}/eml/", f"/staff/inbound/{inbound.pk}/raw/"]


def _leaks(client: Client, urls: list[str], marker: str) -> list[str]:
    return [url for url in urls if marker.encode() in client.get(url).content]


def test_no_other_user_reads_a_message_eml_or_bounce_and_no_download_renders(figures):
    marker = f"mark{secrets.token_hex(6)}"
    urls, downloads = _victims_mail(marker)
    bob = _client(factories.user("BOB"))
    leaked = _leaks(bob, urls, marker) + _leaks(Client(), urls, marker)
    staff = _client(factories.user("STAFF", is_staff=True))
    rendered = []
    for url in downloads:
        response = staff.get(url)
        if (
            not response["Content-Disposition"].startswith("attachment;")
            or response["Content-Type"].split(";")[0] in ("text/html", "image/svg+xml")
            or response.get("X-Content-Type-Options") != "nosniff"
        ):
            rendered.append(url)

    figures.add(
        "attacks",
        "staff outbox / inbound pages leaking others' mail to non-staff",
        len(leaked),
        "= 0",
    )
    figures.add("attacks", "mail downloads a browser would render as a page", len(rendered), "= 0")
    assert not leaked
    assert not rendered


def test_control_the_leak_detector_sees_the_mail_where_it_is_shown(figures):
    """Staff do see it on every one of those URLs: the marker search finds it when it is there."""
    marker = f"mark{secrets.token_hex(6)}"
    urls, _downloads = _victims_mail(marker)
    seen = _leaks(_client(factories.user("STAFF", is_staff=True)), urls, marker)
    figures.add("attacks", "control: staff URLs where the marker search finds the mail", len(seen))
    assert seen == urls
