"""Pages: Events (own, or everyone's for staff), a message's status, the test e-mail button, and
the local mail catcher of development.

The test e-mail goes through the real worker to the platform relay (smtp_servers.plain, as the
worker's EMAIL_URL): those tests commit (`transactional_db`). The others use plain `db`, where
the worker is never scheduled (on_commit callbacks are dropped with the test's transaction).
"""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from django.utils.html import escape

from outbox.catcher import CatcherHandler
from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.models import Security
from tests import factories
from tests.smtp_fixtures import HOST, free_port

pytestmark = [pytest.mark.usefixtures("english")]

REFRESH = '<meta http-equiv="refresh"'
NO_EMAIL = "Enter your e-mail on the card first: the test e-mail is sent there."
NO_PASSWORD = "A login is set but no password. Enter the password, or clear the login."


def _html(response) -> str:
    return response.content.decode()


def _message(user, subject: str = "Faktura 1/2026") -> OutgoingMessage:
    """A queued message of `user` (default mode: the relay); the worker never sees it."""
    return outbox_enqueue(user=user, to=["client@example.com"], subject=subject, body_text="Hej")


def _event(user, reply: str) -> Event:
    return Event.objects.create(
        user=user,
        message=_message(user, subject=f"Subject of {reply}"),
        kind=EventKind.SEND_FAILED,
        explanation="recipient_unknown",
        params={},
        reply=reply,
    )


# -- Events -----------------------------------------------------------------------------------


@pytest.fixture
def people(db):
    anna = factories.user("ANNA", email="anna@acme.example")
    piotr = factories.user("PIOTR", email="piotr@acme.example")
    staff = factories.user("ADMIN", email="admin@acme.example", is_staff=True)
    _event(anna, "550 5.1.1 anna-reply")
    _event(piotr, "550 5.1.1 piotr-reply")
    return anna, piotr, staff


def test_a_user_sees_only_own_events(client, people):
    anna, _piotr, _staff = people
    client.force_login(anna)

    html = _html(client.get("/events/"))

    assert "anna-reply" in html and "Subject of 550 5.1.1 anna-reply" in html
    assert "piotr-reply" not in html
    assert "The recipient&#x27;s address does not exist." in html
    assert 'name="user"' not in html  # no filter for non-staff
    # Nor can the filter be forced through the query string.
    forced = _html(client.get("/events/?user=PIOTR"))
    assert "anna-reply" in forced and "piotr-reply" not in forced


def test_a_user_without_events_is_told_so(client, db):
    client.force_login(factories.user("EWA"))

    html = _html(client.get("/events/"))

    assert "No events: nothing has gone wrong with your mail." in html


def test_staff_see_all_events_and_filter_by_user_code(client, people):
    _anna, _piotr, staff = people
    client.force_login(staff)

    everything = _html(client.get("/events/"))
    assert "anna-reply" in everything and "piotr-reply" in everything
    assert "<td>ANNA</td>" in everything and "<td>PIOTR</td>" in everything

    only_piotr = _html(client.get("/events/", {"user": "PIOTR"}))
    assert "piotr-reply" in only_piotr and "anna-reply" not in only_piotr
    assert 'value="PIOTR"' in only_piotr

    nobody = _html(client.get("/events/", {"user": "NOBODY"}))
    assert "anna-reply" not in nobody and "piotr-reply" not in nobody


def test_the_events_pages_keep_the_user_filter(client, people):
    anna, _piotr, staff = people
    for n in range(50):  # 51 of ANNA's: two pages of 50
        Event.objects.create(
            user=anna, kind=EventKind.SEND_FAILED, explanation="generic", reply=f"r{n}"
        )
    client.force_login(staff)

    first = _html(client.get("/events/", {"user": "ANNA"}))
    second = _html(client.get("/events/", {"user": "ANNA", "page": "2"}))

    assert 'href="?page=2&amp;user=ANNA"' in first
    assert 'href="?page=1&amp;user=ANNA"' in second
    assert "piotr-reply" not in first + second


@pytest.mark.parametrize("url", ["/events/", "/outbox/1/", "/dev/mail/"])
def test_anonymous_visitors_are_sent_to_log_in(client, db, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert f"next={url}" in response["Location"].replace("%2F", "/")


# -- a message's page -----------------------------------------------------------------------------


def test_the_message_page_is_for_its_sender_and_staff(client, people):
    anna, piotr, staff = people
    message = _message(anna, subject="Faktura dla klienta")
    url = f"/outbox/{message.pk}/"

    client.force_login(anna)
    own = client.get(url)
    assert own.status_code == 200
    assert "Faktura dla klienta" in _html(own)

    client.force_login(piotr)
    assert client.get(url).status_code == 404
    assert client.get("/outbox/999999/").status_code == 404

    client.force_login(staff)
    assert client.get(url).status_code == 200


@pytest.mark.parametrize(
    ("state", "follows", "shown"),
    [
        (MessageState.QUEUED, True, "Sending…"),
        (MessageState.SENDING, True, "Sending…"),
        (MessageState.SENT, False, "Accepted by the server"),
        (MessageState.FAILED, False, "The message could not be sent."),
    ],
)
def test_the_message_page_follows_the_message_live_only_until_final(
    client, db, state, follows, shown
):
    """No <meta refresh> (issue 12, item 9): static/js/live.js polls the status JSON until the
    message is final; without JavaScript a plain reload link is offered while it is not."""
    user = factories.user("ANNA")
    message = _message(user)
    OutgoingMessage.objects.filter(pk=message.pk).update(state=state)
    client.force_login(user)

    html = _html(client.get(f"/outbox/{message.pk}/"))

    assert REFRESH not in html
    assert f'data-live-url="/outbox/{message.pk}/status/"' in html
    assert f'data-live-final="{str(not follows).lower()}"' in html
    assert (f'<a href="/outbox/{message.pk}/">Reload</a>' in html) is follows
    assert shown in html
    status = client.get(f"/outbox/{message.pk}/status/").json()
    assert status["state"] == state and status["final"] is not follows
    assert status["version"].startswith(f"{state}:")


def test_the_status_json_is_the_owners_or_staffs_only(client, db):
    anna, piotr = factories.user("ANNA"), factories.user("PIOTR")
    message = _message(anna, subject="Private subject")
    client.force_login(piotr)
    response = client.get(f"/outbox/{message.pk}/status/")
    assert response.status_code == 404 and b"queued" not in response.content


def test_a_failed_message_shows_its_explanation(client, db):
    user = factories.user("ANNA")
    message = _message(user)
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=MessageState.FAILED,
        explanation="recipient_unknown",
        last_reply="550 5.1.1 no such user",
    )
    client.force_login(user)

    html = _html(client.get(f"/outbox/{message.pk}/"))

    assert "The recipient&#x27;s address does not exist." in html
    assert "550 5.1.1 no such user" in html


# -- the test e-mail button ----------------------------------------------------------------------


def _page_until(client, url: str, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        html = _html(client.get(url))
        if text in html:
            return html
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} on {url} after {timeout} s:\n{html}")
        time.sleep(0.1)


@pytest.mark.usefixtures("transactional_db")
def test_the_test_email_goes_through_the_worker_to_the_relay(client, celery_worker, smtp_servers):
    relay = smtp_servers.plain  # the worker's EMAIL_URL
    user = factories.user("ANNA", name="Anna Kowalska", email="anna@acme.example")
    client.force_login(user)

    response = client.post("/outbox/test-email/")

    message = OutgoingMessage.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/outbox/{message.pk}/"
    html = _page_until(client, response["Location"], "Accepted by the server")
    assert REFRESH not in html
    message.refresh_from_db()
    assert message.state == MessageState.SENT
    assert message.to == ["anna@acme.example"]
    [received] = relay.wait_for(1)
    assert received.message["From"] == "Anna Kowalska <anna@acme.example>"
    assert received.rcpt_tos == ["anna@acme.example"]
    assert received.message["Subject"] == "Test e-mail: your mail sender works"
    assert received.message["Message-ID"] == message.message_id
    assert "If you can read it, your mail sender works." in received.message.get_content()
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_the_test_email_is_written_in_the_users_language(client):
    user = factories.user("ANNA", email="anna@acme.example", language="pl")
    client.force_login(user)

    client.post("/outbox/test-email/")

    message = OutgoingMessage.objects.get()
    assert message.subject == "Wiadomość testowa: nadawca wiadomości e-mail działa"


@pytest.mark.django_db
def test_the_test_email_needs_a_card_email(client):
    user = factories.user("ANNA", email="")
    client.force_login(user)

    response = client.post("/outbox/test-email/", follow=True)

    assert response.redirect_chain == [("/accounts/card/", 302)]
    assert f'<p class="message error" role="alert">{escape(NO_EMAIL)}</p>' in _html(response)
    assert not OutgoingMessage.objects.exists()


@pytest.mark.django_db
def test_the_test_email_explains_a_configuration_that_cannot_send(client, smtp_servers):
    server = smtp_servers.implicit_tls
    user = factories.user("ANNA", email="anna@acme.example")
    # A login without a password, written directly: the card form would refuse it.
    factories.profile(
        user, host=server.host, port=server.port, security=Security.SSL, login="anna@acme.example"
    )
    client.force_login(user)

    response = client.post("/outbox/test-email/", follow=True)

    assert response.redirect_chain == [("/accounts/card/", 302)]
    assert f'<p class="message error" role="alert">{escape(NO_PASSWORD)}</p>' in _html(response)
    assert not OutgoingMessage.objects.exists()
    assert server.auth_attempts == [] and server.messages == []


@pytest.mark.django_db
def test_the_test_email_wants_post_and_a_login(client):
    assert client.get("/outbox/test-email/").status_code == 405
    anonymous = client.post("/outbox/test-email/")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")
    assert not OutgoingMessage.objects.exists()


# -- the local mail catcher ----------------------------------------------------------------------


@pytest.fixture
def catcher(tmp_path, settings):
    """CatcherHandler behind a real aiosmtpd server on 127.0.0.1, keeping files in tmp_path."""
    settings.MAIL_CATCHER_DIR = tmp_path
    controller = Controller(
        CatcherHandler(tmp_path), hostname=HOST, port=free_port(), server_hostname="localhost"
    )
    controller.start()
    yield controller
    controller.stop()


def _catch(controller, **headers) -> None:
    mime = EmailMessage()
    mime["From"] = headers.get("From", "Anna Kowalska <anna@acme.example>")
    mime["To"] = "client@example.com"
    mime["Reply-To"] = headers.get("Reply-To", "office@acme.example")
    mime["Subject"] = headers.get("Subject", "Faktura 5/2026 — zażółć")
    mime.set_content(headers.get("body", "Dzień dobry,\nw załączeniu faktura.\n"))
    with smtplib.SMTP(controller.hostname, controller.port, timeout=5) as client:
        client.send_message(mime, from_addr="bounces@acme.example")


@pytest.mark.django_db
def test_the_catcher_page_shows_what_was_caught(client, settings, catcher):
    settings.DEBUG = True
    _catch(catcher)
    [kept] = list(settings.MAIL_CATCHER_DIR.glob("*.eml"))
    assert kept.read_bytes().startswith(b"X-Envelope-From: bounces@acme.example\r\n")
    client.force_login(factories.user("ANNA", is_staff=True))

    response = client.get("/dev/mail/")

    assert response.status_code == 200
    html = _html(response)
    assert "Faktura 5/2026 — zażółć" in html
    assert escape("Anna Kowalska <anna@acme.example>") in html
    assert "office@acme.example" in html
    assert "bounces@acme.example" in html and "client@example.com" in html
    assert "Dzień dobry,\nw załączeniu faktura." in html.replace("\r\n", "\n")  # CRLF as kept


@pytest.mark.django_db
def test_the_catcher_page_is_for_staff_only(client, settings, catcher):
    """It shows everyone's mail (issue 11, item 8): a user gets 403 and no link to it."""
    settings.DEBUG = True
    _catch(catcher, Subject="Someone else's invoice")
    client.force_login(factories.user("BOB"))

    response = client.get("/dev/mail/")

    assert response.status_code == 403
    assert "Someone else" not in response.content.decode()
    assert "/dev/mail/" not in _html(client.get("/events/"))
    client.force_login(factories.user("ADA", is_staff=True))
    assert "/dev/mail/" in _html(client.get("/events/"))


@pytest.mark.django_db
def test_the_catcher_page_lists_the_newest_first(client, settings, catcher):
    settings.DEBUG = True
    _catch(catcher, Subject="First of two")
    _catch(catcher, Subject="Second of two")
    client.force_login(factories.user("ANNA", is_staff=True))

    html = _html(client.get("/dev/mail/"))

    assert html.index("Second of two") < html.index("First of two")


@pytest.mark.django_db
def test_the_catcher_page_is_empty_without_mail(client, settings, tmp_path):
    settings.DEBUG = True
    settings.MAIL_CATCHER_DIR = tmp_path / "missing"
    client.force_login(factories.user("ANNA", is_staff=True))

    assert "Nothing has arrived yet." in _html(client.get("/dev/mail/"))


@pytest.mark.django_db
def test_the_catcher_page_is_404_outside_debug(client, settings, catcher):
    settings.DEBUG = False
    _catch(catcher)
    client.force_login(factories.user("ANNA", is_staff=True))  # even staff

    response = client.get("/dev/mail/")

    assert response.status_code == 404
    assert "Faktura 5/2026" not in _html(response)


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [True, False])
def test_the_catcher_link_is_in_the_menu_only_in_debug(client, settings, debug):
    settings.DEBUG = debug
    client.force_login(factories.user("ANNA", is_staff=True))  # staff only: see above

    html = _html(client.get("/events/"))

    assert ('href="/dev/mail/"' in html) is debug
    assert ("Local mail catcher" in html) is debug
