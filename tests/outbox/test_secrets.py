"""A stored SMTP password leaks nowhere: logs, broker, pages, error reports, commands, database.

Acceptance line: "The password appears in no log line, broker message (read the queued message
itself), page or error report." Two passwords, fresh per test, are stored the ways users store
them: Anna's through the card page (a real form POST), Bob's through `manage.py sender set
--password-stdin`. Both point at the implicit-TLS test server, which knows them, so mail really
goes out with them (and once with a password the server refuses).

"Appears" covers encodings a password takes on its way: plain text (also inside JSON, HTML,
URL-encoding: `factories.secret()` is URL-safe, so those leave it unchanged), base64 of it and
of AUTH PLAIN's "\\0login\\0password", and anything inside base64 blobs (the broker's message
bodies are base64): `_leaks` decodes every base64-looking token, two levels deep. Each check
also asserts something that must be there (the message id in the queued message, the message
number in the worker log…), so a check reading the wrong thing cannot pass by being empty.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import re
import sys
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.core import mail
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.core.signals import got_request_exception
from django.db import OperationalError, connection
from django.test import Client
from django.utils.html import escape
from django.utils.log import AdminEmailHandler
from django.views.debug import ExceptionReporter

from accounts.forms import CardForm
from accounts.models import User
from outbox.catcher import CatcherHandler
from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from outbox.tasks import send_message
from smtp_settings import crypto
from smtp_settings.models import SenderProfile
from tests import factories
from tests.outbox.waiting import settled
from tests.smtp_fixtures import queued_payloads

pytestmark = [pytest.mark.usefixtures("english")]

CARD_URL = "/accounts/card/"
ANNA_LOGIN = "anna@acme.example"
BOB_LOGIN = "bob@acme.example"


# -- finding a secret ----------------------------------------------------------------------------
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")


def _b64_layers(text: str, depth: int = 2) -> list[str]:
    """`text` and what every base64-looking token in it decodes to, `depth` levels down."""
    layers, current = [text], [text]
    for _ in range(depth):
        decoded = []
        for layer in current:
            for token in set(_B64_TOKEN.findall(layer)):
                padded = token.rstrip("=") + "=" * (-len(token.rstrip("=")) % 4)
                for decode in (base64.b64decode, base64.urlsafe_b64decode):
                    try:
                        decoded.append(decode(padded).decode("utf-8", "replace"))
                    except (binascii.Error, ValueError):
                        continue
        layers += decoded
        current = decoded
    return layers


@dataclass
class Secret:
    password: str
    login: str

    @property
    def forms(self) -> dict[str, str]:
        """The password as it may travel: plain, base64 (both alphabets), AUTH PLAIN's blob."""
        raw, plain_auth = self.password.encode(), f"\0{self.login}\0{self.password}".encode()
        return {
            "plain": self.password,
            "base64": base64.b64encode(raw).decode(),
            "base64url": base64.urlsafe_b64encode(raw).decode(),
            "AUTH PLAIN": base64.b64encode(plain_auth).decode(),
            "AUTH PLAIN (no login)": base64.b64encode(b"\0\0" + raw).decode(),
        }

    @property
    def ciphertext(self) -> str:
        return SenderProfile.objects.get(login=self.login).password_encrypted


def _leaks(text: str, *secrets: Secret) -> list[str]:
    """Which forms of which password `text` contains (empty: none)."""
    layers = _b64_layers(text)
    found = []
    for secret in secrets:
        for name, form in secret.forms.items():
            if form.rstrip("=") in text:
                found.append(f"{secret.login}: {name}")
        if any(secret.password in layer for layer in layers[1:]):
            found.append(f"{secret.login}: inside a base64 blob")
    return found


def _assert_no_secret(text: str, world: World, where: str, *, ciphertext: bool = False) -> None:
    secrets = (world.anna_secret, world.bob_secret, *world.more_secrets)
    assert not _leaks(text, *secrets), where
    if ciphertext:
        for secret in (world.anna_secret, world.bob_secret):
            assert secret.ciphertext not in text, f"{where}: the ciphertext of {secret.login}"


def test_the_detector_finds_every_form_it_claims_to():
    """_leaks itself: a check that can never fail would prove nothing."""
    secret = Secret(factories.secret(), "anna@acme.example")
    plain_auth = secret.forms["AUTH PLAIN"]
    body = base64.b64encode(json.dumps({"args": ["x", plain_auth]}).encode()).decode()
    for text in (
        f"pw={secret.password}&x=1",
        f"AUTH PLAIN {plain_auth}",
        f'{{"body": "{body}"}}',  # base64 inside base64, as a broker stores a body
        f"334 VXNlcm5hbWU6 {base64.b64encode(secret.password.encode()).decode()}",
    ):
        assert _leaks(text, secret), text
    other = base64.b64encode(b"\0a\0other").decode()
    assert not _leaks(f"AUTH PLAIN {other}", secret)


# -- the two users and their stored passwords ----------------------------------------------------
@dataclass
class World:
    anna: User
    bob: User
    staff: User
    anna_secret: Secret
    bob_secret: Secret
    server: object  # the implicit-TLS SMTPTestServer
    client: Client  # logged in as Anna
    staff_client: Client
    more_secrets: list[Secret] = field(default_factory=list)  # typed later, maybe never stored

    @property
    def server_field(self) -> str:
        return f"{self.server.host}:{self.server.port}"


def _card_data(world_server: str, **fields) -> dict:
    data = {
        "name": "Anna Kowalska",
        "office_phone": "",
        "phone": "",
        "email": ANNA_LOGIN,
        "bcc": "",
        "reply_to": "",
        "signature": "Anna",
        "mode": "smtp",
        "server": world_server,
        "security": "ssl",
        "login": ANNA_LOGIN,
        "password": "",
    }
    data.update(fields)
    return data


def _sender_command(*args: str, stdin: str = "") -> str:
    """`manage.py sender ARGS` in-process; stdout (also when the command fails)."""
    out = io.StringIO()
    old_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command("sender", *args, stdout=out, stderr=io.StringIO())
    except CommandError as error:
        out.write(f"\nCommandError: {error}")
    finally:
        sys.stdin = old_stdin
    return out.getvalue()


@pytest.fixture
def world(client, smtp_servers) -> World:
    server = smtp_servers.implicit_tls
    anna = factories.user("ANNA", name="Anna Kowalska", email=ANNA_LOGIN)
    bob = factories.user("BOB", name="Bob Nowak", email=BOB_LOGIN)
    staff = factories.user("ADMIN", is_staff=True, is_superuser=True)
    anna_secret = Secret(factories.secret(), ANNA_LOGIN)
    bob_secret = Secret(factories.secret(), BOB_LOGIN)
    server.users.update({ANNA_LOGIN: anna_secret.password, BOB_LOGIN: bob_secret.password})
    server_field = f"{server.host}:{server.port}"

    # Anna: the card page, as a browser posts it.
    client.force_login(anna)
    response = client.post(CARD_URL, _card_data(server_field, password=anna_secret.password))
    assert response.status_code == 302, response.content.decode()[:2000]
    # Bob: the command line, the password on standard input.
    out = _sender_command(
        "set",
        "BOB",
        "--mode=smtp",
        f"--server={server_field}",
        "--security=ssl",
        f"--login={BOB_LOGIN}",
        "--password-stdin",
        stdin=bob_secret.password + "\n",
    )
    assert "Saved the sender of BOB." in out, out
    for secret in (anna_secret, bob_secret):
        assert crypto.decrypt(secret.ciphertext) == secret.password  # really stored
    factories.mail_sending_user(anna)  # the system settings page then shows her sender
    for user in (anna, staff):  # a connection test is rate-limited per user (in the cache)
        cache.delete(f"connection-test:{user.pk}")
    staff_client = Client()
    staff_client.force_login(staff)
    return World(anna, bob, staff, anna_secret, bob_secret, server, client, staff_client)


def _mail(user: User, subject: str = "Faktura 1/2026") -> OutgoingMessage:
    return outbox_enqueue(user=user, to=["client@example.com"], subject=subject, body_text="Hej.")


def _send_all(world: World) -> dict[str, OutgoingMessage]:
    """Through the worker: Anna's test e-mail (the card's button), Bob's mail, then Anna's mail
    once the server stops accepting her password (AUTH refused: 535)."""
    response = world.client.post("/outbox/test-email/")
    assert response.status_code == 302
    test_email = OutgoingMessage.objects.get(pk=int(response.url.rstrip("/").rsplit("/", 1)[1]))
    bobs = _mail(world.bob)
    sent = {"anna_test": settled(test_email), "bob": settled(bobs)}
    for message in sent.values():
        assert message.state == MessageState.SENT, message.last_reply
    assert {m.auth_login for m in world.server.wait_for(2)} == {ANNA_LOGIN, BOB_LOGIN}

    world.server.users[ANNA_LOGIN] = "changed-" + factories.secret()
    refused = settled(_mail(world.anna, "Faktura 2/2026"))
    assert refused.state == MessageState.FAILED
    assert refused.explanation == "auth_failed", refused.last_reply
    assert Event.objects.filter(message=refused, kind=EventKind.SEND_FAILED).exists()
    world.server.users[ANNA_LOGIN] = world.anna_secret.password
    return {**sent, "anna_refused": refused}


# -- (a) the broker ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_queued_message_carries_the_message_id_and_no_secret(
    world, monkeypatch, django_capture_on_commit_callbacks
):
    """The task message as the broker holds it, caught before any worker can take it.

    outbox_enqueue publishes with `send_message.apply_async((pk,))` on commit; here it
    publishes the same message to a queue of this test's own, which no worker consumes.
    """
    queue = f"secrets-probe-{uuid.uuid4().hex}"
    publish = send_message.apply_async
    monkeypatch.setattr(
        send_message,
        "apply_async",
        lambda args=None, kwargs=None, **options: publish(
            args, kwargs, **{**options, "queue": queue}
        ),
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = world.client.post("/outbox/test-email/")  # Anna's button on the card
    assert response.status_code == 302
    with django_capture_on_commit_callbacks(execute=True):
        bobs = _mail(world.bob)
    annas = OutgoingMessage.objects.get(user=world.anna)

    payloads = queued_payloads(queue, forget_queue=True)

    assert len(payloads) == 2
    for raw, message in zip(payloads, (annas, bobs), strict=True):
        text = raw.decode()
        _assert_no_secret(text, world, f"queued message of {message.pk}", ciphertext=True)
        envelope = json.loads(text)
        body = json.loads(base64.b64decode(envelope["body"]))
        assert envelope["headers"]["task"] == "outbox.tasks.send_message"
        assert body[0] == [message.pk]  # the id, and nothing else, is the payload
        assert body[1] == {}
        assert envelope["headers"]["argsrepr"] == f"({message.pk},)"
        for value in message.sender.values():  # not even the sender's details travel
            if isinstance(value, str) and "@" in value:
                assert value not in text


# -- (b) logs ------------------------------------------------------------------------------------
@pytest.fixture
def all_loggers_at_debug(caplog):
    """Every logger of this process at DEBUG, SQL statements with their parameters too.

    Requested before `world`, so storing the passwords is logged as well.
    """
    for name in ["", *logging.root.manager.loggerDict]:
        caplog.set_level(logging.DEBUG, logger=name)
    debug_cursor, connection.force_debug_cursor = connection.force_debug_cursor, True
    yield caplog
    connection.force_debug_cursor = debug_cursor


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_no_log_line_has_the_password(all_loggers_at_debug, world, celery_worker, capfd):
    """The worker's log, and every logger of this process at DEBUG (SQL with its parameters too).

    The test SMTP servers run in this process and log under "mail.log" (aiosmtpd): their
    records are checked too, and show that the AUTH conversation itself was captured.
    """
    caplog = all_loggers_at_debug
    messages = _send_all(world)
    # The card's connection test, in-process, with the right and a refused password.
    world.client.post(CARD_URL, {"action": "test_connection", "to": "client@example.com"})
    world.server.users[ANNA_LOGIN] = "changed"
    world.client.post(CARD_URL, {"action": "test_connection", "to": "client@example.com"})

    worker_log = celery_worker.log_text()
    for key in ("anna_test", "bob"):
        assert f"message {messages[key].pk} sent: 250" in worker_log
    assert f"message {messages['anna_refused'].pk} failed (auth_failed): 535" in worker_log
    _assert_no_secret(worker_log, world, "the worker's log")

    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    assert any(r.name == "django.db.backends" for r in records)  # DEBUG SQL was captured
    assert any("sender profile saved: owner=ANNA" in r.getMessage() for r in records)
    assert any("AUTH PLAIN" in r.getMessage() for r in records if r.name == "mail.log")
    for record in records:
        where = f"log record {record.name}:{record.lineno}"
        _assert_no_secret(record.getMessage(), world, where)
        _assert_no_secret(repr(record.__dict__), world, where)
        # As a handler formats it: traceback and stack included.
        _assert_no_secret(caplog.handler.format(record), world, f"formatted {where}")
    out, err = capfd.readouterr()
    _assert_no_secret(out + err, world, "the test process's stdout/stderr")


# -- (c) pages -----------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_no_page_shows_the_password_or_its_ciphertext(world, settings, tmp_path):
    messages = _send_all(world)
    anna, staff = world.client, world.staff_client
    pages: dict[str, object] = {
        "card": anna.get(CARD_URL),
        "card, refused POST with a password": anna.post(
            CARD_URL,
            _card_data(world.server_field, email="not-an-address", password=factories.secret()),
        ),
        "card, connection test": anna.post(CARD_URL, {"action": "test_connection"}),
        "events": anna.get("/events/"),
        "staff: events": staff.get("/events/"),
        "staff: Anna's card": staff.get("/accounts/card/ANNA/"),
        "staff: Bob's card": staff.get("/accounts/card/BOB/"),
        "staff: system settings": staff.get("/settings/system/"),
        "admin: sender profiles": staff.get("/admin/smtp_settings/senderprofile/"),
        "admin: system settings": staff.get("/admin/smtp_settings/systemsettings/1/change/"),
        "admin: Anna": staff.get(f"/admin/accounts/user/{world.anna.pk}/change/"),
    }
    for profile in SenderProfile.objects.exclude(user=None):
        url = f"/admin/smtp_settings/senderprofile/{profile.pk}/change/"
        pages[f"admin: profile of {profile.user.code}"] = staff.get(url)
    for key, message in messages.items():
        if message.user == world.anna:
            pages[f"message {key}"] = anna.get(f"/outbox/{message.pk}/")
        pages[f"staff: message {key}"] = staff.get(f"/outbox/{message.pk}/")
    # The local mail catcher (DEBUG only) holding what the server received.
    settings.DEBUG = True
    settings.MAIL_CATCHER_DIR = tmp_path
    keep = CatcherHandler(tmp_path)
    for received in world.server.messages:
        envelope = SimpleNamespace(
            mail_from=received.mail_from,
            rcpt_tos=received.rcpt_tos,
            original_content=received.content,
        )
        asyncio.run(keep.handle_DATA(None, None, envelope))
    pages["mail catcher"] = staff.get("/dev/mail/")  # staff only

    for where, response in pages.items():
        assert response.status_code == 200, where
        _assert_no_secret(response.content.decode(), world, where, ciphertext=True)
    # Each page is the one meant (a login page or an empty list would pass the check too).
    assert "A password is stored." in pages["card"].content.decode()
    assert "Authentication successful" in pages["card, connection test"].content.decode()
    assert "Faktura 2/2026" in pages["events"].content.decode()
    assert "ANNA" in pages["staff: system settings"].content.decode()
    assert BOB_LOGIN in pages["admin: profile of BOB"].content.decode()
    assert "Test e-mail" in pages["mail catcher"].content.decode()
    assert escape(messages["bob"].message_id) in pages["staff: message bob"].content.decode()


# -- (d) error reports ---------------------------------------------------------------------------
def _error_reports(world: World, settings, caplog) -> dict[str, str]:
    """POST a new password on the card while saving fails; every report Django makes of it.

    DEBUG=False, as in production: the technical report built from the request the view saw
    (text and HTML, as ExceptionReporter gives them to error trackers), the e-mail Django's
    own `mail_admins` handler sends, the same with its HTML part, the 500 page, the log line.
    """
    settings.DEBUG = False
    settings.ADMINS = [("Ops", "ops@acme.example")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # into mail.outbox
    seen = []

    def keep(sender, request, **kwargs):
        seen.append((request, sys.exc_info()))

    new_password = Secret(factories.secret(), ANNA_LOGIN)
    world.more_secrets.append(new_password)
    client = Client(raise_request_exception=False)
    client.force_login(world.anna)
    mail.outbox.clear()
    got_request_exception.connect(keep)
    try:
        with caplog.at_level(logging.ERROR, logger="django.request"):
            response = client.post(
                CARD_URL, _card_data(world.server_field, password=new_password.password)
            )
    finally:
        got_request_exception.disconnect(keep)
    assert response.status_code == 500
    [(request, exc_info)] = seen
    assert request.POST["password"] == new_password.password  # the request the view saw
    assert list(request.sensitive_post_parameters) == ["password"]
    reporter = ExceptionReporter(request, *exc_info)
    [record] = [r for r in caplog.records if r.name == "django.request"]
    [django_email] = mail.outbox  # DEFAULT_LOGGING's mail_admins (DEBUG=False, ADMINS set)
    AdminEmailHandler(include_html=True).emit(record)
    html_email = mail.outbox[-1]
    reports = {
        "traceback text": reporter.get_traceback_text(),
        "traceback HTML": reporter.get_traceback_html(),
        "e-mail to ADMINS": django_email.body,
        "e-mail to ADMINS with HTML, text part": html_email.body,
        "e-mail to ADMINS with HTML, HTML part": html_email.alternatives[0][0],
        "500 page": response.content.decode(),
        "log line": caplog.text,
    }
    assert "database is locked" in reports["traceback text"]
    assert "database is locked" in reports["e-mail to ADMINS"]
    assert "OperationalError" in reports["traceback HTML"]
    return reports


@pytest.mark.django_db
def test_an_error_report_of_a_card_post_hides_the_password(world, monkeypatch, settings, caplog):
    """Saving the card fails in the view: the POST data is in every report, but masked."""

    def locked(self, *args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(CardForm, "save", locked)

    reports = _error_reports(world, settings, caplog)

    for where, text in reports.items():
        _assert_no_secret(text, world, where, ciphertext=True)
    assert "*****" in reports["traceback text"]  # the POST was shown, the password masked
    assert ANNA_LOGIN in reports["traceback text"]


@pytest.mark.django_db
def test_an_error_report_of_a_failure_while_storing_the_password_hides_it(
    world, monkeypatch, settings, caplog
):
    """Saving the profile fails (the database is locked) inside profile_update."""

    def locked(self, *args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(SenderProfile, "save", locked)

    reports = _error_reports(world, settings, caplog)

    for where, text in reports.items():
        _assert_no_secret(text, world, where, ciphertext=True)


# -- (e) the command line ------------------------------------------------------------------------
@pytest.mark.django_db
def test_sender_show_and_test_print_no_secret(world):
    outputs = {}
    for code in ("ANNA", "BOB"):
        outputs[f"show {code}"] = _sender_command("show", code, "--json")
        outputs[f"show {code}, text"] = _sender_command("show", code)
        outputs[f"test {code}"] = _sender_command("test", code, "--json")
    world.server.users[ANNA_LOGIN] = "changed"  # now AUTH refuses Anna's stored password
    outputs["test ANNA, refused"] = _sender_command("test", "ANNA", "--json")
    outputs["test ANNA, refused, text"] = _sender_command("test", "ANNA")

    for where, out in outputs.items():
        _assert_no_secret(out, world, where, ciphertext=True)
    for code, login in (("ANNA", ANNA_LOGIN), ("BOB", BOB_LOGIN)):
        shown = json.loads(outputs[f"show {code}"])
        assert (shown["login"], shown["password_set"]) == (login, True)
        assert json.loads(outputs[f"test {code}"])["passed"] is True
    refused = outputs["test ANNA, refused"]
    steps = json.loads(refused[: refused.rindex("}") + 1])["steps"]
    [auth] = [step for step in steps if step["step"] == "auth"]
    assert auth["outcome"] == "failed"
    assert auth["reply"].startswith("535")


# -- (f) the database ----------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_the_database_holds_the_ciphertext_only_in_its_column(world):
    _send_all(world)
    ciphertexts = {s.login: s.ciphertext for s in (world.anna_secret, world.bob_secret)}

    found_ciphertext = []
    for model in apps.get_models(include_auto_created=True):
        rows = list(model._base_manager.values())
        dump = repr(rows)
        _assert_no_secret(dump, world, f"table {model._meta.db_table}")
        for row in rows:
            for column, value in row.items():
                if any(c in str(value) for c in ciphertexts.values()):
                    found_ciphertext.append((model._meta.label, column))
    assert sorted(found_ciphertext) == [
        ("smtp_settings.SenderProfile", "password_encrypted"),
        ("smtp_settings.SenderProfile", "password_encrypted"),
    ]
    assert OutgoingMessage.objects.count() == 3  # the dump had the mail in it
    for secret in (world.anna_secret, world.bob_secret):
        assert secret.password not in secret.ciphertext
        assert crypto.decrypt(secret.ciphertext) == secret.password
