"""Live status without reloading (issue 12, item 9), in Chromium: the message page and the mail
catcher change in place when the message settles or a mail arrives (static/js/live.js under the
strict CSP), and the page is never reloaded: a mark set on `window` survives the update."""

from __future__ import annotations

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.utils import timezone

from outbox.models import MessageState, OutgoingMessage
from tests import factories
from tests.outbox.test_pages import _catch, catcher  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.usefixtures("english", "transactional_db")]


def _page(chromium, user, base_url: str):
    client = Client()
    client.force_login(user)
    assert client.session[SESSION_KEY] == str(user.pk)
    context = chromium.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base_url}]
    )
    return context, context.new_page()


def _queued(user) -> OutgoingMessage:
    """Queued and left alone (no task is scheduled for a plain ORM row): the test plays the
    worker's part."""
    return OutgoingMessage.objects.create(
        user=user,
        sender={},
        to=["client@example.com"],
        subject="Faktura 3/2026",
        body_text="B",
        message_id=f"<live-{user.code}@acme.example>",
        envelope_from="anna@acme.example",
    )


def test_the_message_page_shows_the_outcome_without_a_reload(chromium, live_server):
    anna = factories.user("ANNA")
    message = _queued(anna)
    context, page = _page(chromium, anna, live_server.url)
    try:
        page.goto(f"{live_server.url}/outbox/{message.pk}/")
        assert "Sending…" in page.inner_text("#message-status")
        page.evaluate("() => { window.__notReloaded = true; }")

        OutgoingMessage.objects.filter(pk=message.pk).update(
            state=MessageState.SENT,
            sent_at=timezone.now(),
            last_reply="250 2.0.0 queued as LIVE1",
            updated_at=timezone.now(),
        )

        page.wait_for_selector("#message-status .ok")
        assert "Accepted by the server" in page.inner_text("#message-status")
        assert "250 2.0.0 queued as LIVE1" in page.inner_text("#message-details")
        assert page.evaluate("() => window.__notReloaded") is True
    finally:
        context.close()
    assert not chromium.csp.violations()


def test_the_catcher_page_shows_a_new_mail_without_a_reload(
    chromium,
    live_server,
    settings,
    catcher,  # noqa: F811
):
    settings.DEBUG = True
    staff = factories.user("ADA", is_staff=True)
    context, page = _page(chromium, staff, live_server.url)
    try:
        page.goto(f"{live_server.url}/dev/mail/")
        assert "Nothing has arrived yet." in page.inner_text("#caught")
        page.evaluate("() => { window.__notReloaded = true; }")

        _catch(catcher, Subject="Arrived while watching")

        page.wait_for_selector("#caught details.caught")
        assert "Arrived while watching" in page.inner_text("#caught")
        assert page.evaluate("() => window.__notReloaded") is True
    finally:
        context.close()
    assert not chromium.csp.violations()


def test_control_without_the_script_nothing_changes_in_place(chromium, live_server, settings):
    """The detector can fail: with live.js not served, the page stays as it was loaded."""
    anna = factories.user("ANNA")
    message = _queued(anna)
    context, page = _page(chromium, anna, live_server.url)
    try:
        page.route("**/static/js/live.js", lambda route: route.abort())
        page.goto(f"{live_server.url}/outbox/{message.pk}/")
        assert "Sending…" in page.inner_text("#message-status")
        OutgoingMessage.objects.filter(pk=message.pk).update(
            state=MessageState.SENT, sent_at=timezone.now(), updated_at=timezone.now()
        )
        page.wait_for_timeout(3500)
        assert "Sending…" in page.inner_text("#message-status")
    finally:
        context.close()
