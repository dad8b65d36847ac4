"""Secrets (issue 7, point 3): after a full run, no password or token used in it is found in the
database, the logs, the broker's messages, any page, an error report or a command's output; and
`rotate_keys` leaves every secret readable once the old key is gone.

The run, with the real worker and the local test servers, every secret fresh
(`factories.secret()` or issued by the local OpenID provider):
- A logs in through the login form (a fresh login password), saves an SMTP password on the card
  page (implicit TLS, AUTH PLAIN), sends the card's test e-mail, mass-mails three invoices, fails
  once with a password the server refuses (an Event), tests the connection from the card;
- M connects Microsoft 365 through the real sign-in flow (its access and refresh tokens are
  searched), sends a test e-mail with XOAUTH2 and tests the connection;
- a server error while A saves a new password (the password is a local of profile_update);
- `sender show` and `sender test` of both.

Where: `dumpdata` and a raw SELECT of every table (BinaryField included); the worker's log, every
logger of this process at DEBUG with SQL parameters, this process's stdout/stderr; every raw
message any process published to the broker (kombu's `basic_publish`, patched in-process and in
the worker through a sitecustomize on a restart) and whatever the broker still holds; every page
each actor can GET (the resolver's URLs with the run's objects, the admin's pages of every
object); Django's error reports (text, HTML, the ADMINS mail in text and HTML, the 500 page, the
log line); the commands' output. Forms searched: plain, base64 (both alphabets), URL-quoted,
AUTH PLAIN's and XOAUTH2's base64 blobs, and anything inside base64 blobs two levels deep
(`_b64_layers` of tests/outbox/test_secrets.py).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.conf import settings as django_settings
from django.contrib import admin
from django.core import mail
from django.core.management import CommandError, call_command
from django.core.signals import got_request_exception
from django.db import OperationalError, connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils.log import AdminEmailHandler
from django.views.debug import ExceptionReporter

from accounts.models import User
from bounces.models import InboundMail
from directo_mail.celery import app as celery_app
from invoices.models import Customer, Invoice
from invoices.unsubscribe import unsubscribe_token
from mail_templates.models import MailTemplateKind
from outbox.models import BulkJob, Event, EventKind, MessageState, OutgoingMessage
from smtp_settings import crypto
from smtp_settings.models import OAuthConnection, SenderMode, SenderProfile
from smtp_settings.services import encrypted_fields
from smtp_settings.verification import verification_token
from tests import factories
from tests.invoices import factories as invoice_factories
from tests.outbox.test_secrets import _b64_layers
from tests.outbox.waiting import settled

pytestmark = [pytest.mark.usefixtures("english")]

A_LOGIN = "anna@acme.example"
M_ADDRESS = "mark@contoso.test"


# -- what a secret looks like on its way -----------------------------------------------------------
@dataclass
class Secret:
    name: str
    value: str
    login: str = ""

    def forms(self) -> dict[str, str]:
        raw = self.value.encode()
        forms = {
            "plain": self.value,
            "URL-quoted": quote(self.value, safe=""),
            "URL-quoted+": quote_plus(self.value),
            "base64": base64.b64encode(raw).decode(),
            "base64url": base64.urlsafe_b64encode(raw).decode(),
            "AUTH PLAIN": base64.b64encode(f"\0{self.login}\0{self.value}".encode()).decode(),
            "AUTH PLAIN (no login)": base64.b64encode(b"\0\0" + raw).decode(),
            "XOAUTH2": base64.b64encode(
                f"user={self.login}\x01auth=Bearer {self.value}\x01\x01".encode()
            ).decode(),
        }
        return {name: form.rstrip("=") for name, form in forms.items()}


def hits(text: str, secrets: list[Secret]) -> list[str]:
    layers = _b64_layers(text)
    found = []
    for secret in secrets:
        for name, form in secret.forms().items():
            if form in text:
                found.append(f"{secret.name}: {name}")
        if any(secret.value in layer for layer in layers[1:]):
            found.append(f"{secret.name}: inside a base64 blob")
    return found


def test_the_detector_finds_each_form():
    secret = Secret("s", factories.secret(), A_LOGIN)
    for form in secret.forms().values():
        assert hits(f"x {form} y", [secret])
    wrapped = base64.b64encode(json.dumps({"a": secret.forms()["base64"]}).encode()).decode()
    assert hits(wrapped, [secret])
    assert not hits("nothing here " + factories.secret(), [secret])


# -- catching every raw broker message, in every process -------------------------------------------
SITECUSTOMIZE = """
import os
_capture = os.environ.get("RELIABILITY_BROKER_CAPTURE")
if _capture:
    import uuid
    from kombu.transport.virtual import base as _base
    from kombu.utils.json import dumps as _dumps

    _publish = _base.Channel.basic_publish

    def basic_publish(self, message, exchange, routing_key, **kwargs):
        result = _publish(self, message, exchange, routing_key, **kwargs)
        path = os.path.join(_capture, f"{os.getpid()}-{uuid.uuid4()}.json")
        with open(path, "w") as out:
            out.write(_dumps(message))  # what _put writes to the queue
        return result

    _base.Channel.basic_publish = basic_publish
"""


@pytest.fixture
def broker_capture(celery_worker, tmp_path, monkeypatch):
    """A folder receiving every raw message this process and the worker publish."""
    folder = tmp_path / "published"
    folder.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    before = dict(celery_worker.env)
    celery_worker.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), before.get("PYTHONPATH", "")) if p
    )
    celery_worker.env["RELIABILITY_BROKER_CAPTURE"] = str(folder)
    celery_worker.restart()
    monkeypatch.setenv("RELIABILITY_BROKER_CAPTURE", str(folder))
    from kombu.transport.virtual import base

    original = base.Channel.basic_publish
    exec(compile(SITECUSTOMIZE, "sitecustomize", "exec"), {})  # noqa: S102  (patches the class)
    patched, base.Channel.basic_publish = base.Channel.basic_publish, original
    monkeypatch.setattr(base.Channel, "basic_publish", patched)  # undone after the test
    try:
        yield folder
    finally:
        celery_worker.env.clear()
        celery_worker.env.update(before)
        celery_worker.restart()


def _broker_leftovers() -> dict[str, str]:
    """Everything the broker still holds: files of the filesystem broker, or every Redis key."""
    url = celery_app.conf.broker_url
    found = {}
    if url.startswith("filesystem://"):
        options = celery_app.conf.broker_transport_options
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            folder = Path(options.get(key, ""))
            if folder.is_dir():
                for path in folder.rglob("*"):
                    if path.is_file():
                        found[f"broker file {path.name}"] = path.read_bytes().decode("latin-1")
        return found
    if url.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(url)
        try:
            for key in client.scan_iter():
                kind = client.type(key).decode()
                value = {
                    "list": lambda k: client.lrange(k, 0, -1),
                    "string": client.get,
                    "hash": client.hgetall,
                    "set": client.smembers,
                    "zset": lambda k: client.zrange(k, 0, -1),
                }.get(kind, lambda k: b"")(key)
                found[f"redis {key!r}"] = repr(value)
        finally:
            client.close()
        return found
    pytest.fail(f"no reader for the broker {url}: add one, do not skip")


# -- the run ---------------------------------------------------------------------------------------
def _card(server, **fields) -> dict:
    data = {
        "name": "Anna Kowalska",
        "email": A_LOGIN,
        "signature": "Anna",
        "mode": "smtp",
        "server": f"{server.host}:{server.port}",
        "security": "ssl",
        "login": A_LOGIN,
        "password": "",
    }
    return data | fields


def _command(*args: str) -> str:
    out = io.StringIO()
    try:
        call_command("sender", *args, stdout=out, stderr=out)
    except CommandError as error:
        out.write(f"\nCommandError: {error}")
    return out.getvalue()


def _message_from(response) -> OutgoingMessage:
    assert response.status_code == 302, response.status_code
    return OutgoingMessage.objects.get(pk=int(response.url.rstrip("/").rsplit("/", 1)[1]))


def _wait_job(job: BulkJob, timeout: float = 20.0) -> list[OutgoingMessage]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = list(job.messages.all())
        if len(messages) == job.total and all(m.is_final for m in messages):
            return messages
        time.sleep(0.1)
    raise AssertionError(f"job {job.pk} not done: {[m.state for m in job.messages.all()]}")


# The stand-ins for Microsoft (the OpenID provider runs in this process) log the tokens they
# issue: that is Microsoft's side, not the app's. Everything else goes to DEBUG.
STAND_INS = ("authlib", "oidc_provider_mock", "werkzeug", "flask")


@pytest.fixture
def all_loggers_at_debug(caplog):
    for name in STAND_INS:  # first: set_level sets the capturing handler's level too
        caplog.set_level(logging.WARNING, logger=name)
    for name in ["", *logging.root.manager.loggerDict]:
        if not name.startswith(STAND_INS):
            caplog.set_level(logging.DEBUG, logger=name)
    debug_cursor, connection.force_debug_cursor = connection.force_debug_cursor, True
    yield caplog
    connection.force_debug_cursor = debug_cursor


def _error_reports(client_user: User, server, settings, caplog, secret: Secret):
    """A server error while the card stores a new password; every report Django makes of it."""

    def locked(self, *args, **kwargs):
        raise OperationalError("database is locked")

    patch = pytest.MonkeyPatch()
    patch.setattr(SenderProfile, "save", locked)
    settings.DEBUG = False
    settings.ADMINS = [("Ops", "ops@acme.example")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    seen = []

    def keep(sender, request, **kwargs):
        seen.append((request, sys.exc_info()))

    client = Client(raise_request_exception=False)
    client.force_login(client_user)
    mail.outbox.clear()
    got_request_exception.connect(keep)
    try:
        with caplog.at_level(logging.ERROR, logger="django.request"):
            response = client.post("/accounts/card/", _card(server, password=secret.value))
    finally:
        got_request_exception.disconnect(keep)
        patch.undo()
    assert response.status_code == 500
    [(request, exc_info)] = seen
    assert request.POST["password"] == secret.value  # the report had it to hide
    reporter = ExceptionReporter(request, *exc_info)
    [record] = [r for r in caplog.records if r.name == "django.request" and r.levelno >= 40]
    [django_email] = mail.outbox
    AdminEmailHandler(include_html=True).emit(record)
    reports = {
        "error report: traceback text": reporter.get_traceback_text(),
        "error report: traceback HTML": reporter.get_traceback_html(),
        "error report: mail to ADMINS": django_email.body,
        "error report: mail to ADMINS (HTML), text": mail.outbox[-1].body,
        "error report: mail to ADMINS (HTML), HTML": mail.outbox[-1].alternatives[0][0],
        "error report: 500 page": response.content.decode(),
    }
    assert "database is locked" in reports["error report: traceback text"]
    assert "profile_update" in reports["error report: traceback text"]  # the frame with it
    return reports


# -- pages -----------------------------------------------------------------------------------------
def _routes(patterns, prefix="", namespace=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            ns = ":".join(x for x in (namespace, pattern.namespace or "") if x)
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern), ns)
        elif isinstance(pattern, URLPattern) and pattern.name:
            name = f"{namespace}:{pattern.name}" if namespace else pattern.name
            yield name, prefix + str(pattern.pattern)


def _every_page_url() -> list[str]:
    """Every GET-able URL of the app with every object of the run, and the admin's pages."""
    params = {
        "code": list(User.objects.values_list("code", flat=True)),
        "outbox": list(OutgoingMessage.objects.values_list("pk", flat=True)),
        "jobs": list(BulkJob.objects.values_list("pk", flat=True)),
        "letters": [],
        "invoices": list(Invoice.objects.values_list("pk", flat=True)),
        "customers": list(Customer.objects.values_list("pk", flat=True)),
        "staff/outbox": list(OutgoingMessage.objects.values_list("pk", flat=True)),
        "staff/inbound": list(InboundMail.objects.values_list("pk", flat=True)),
    }
    urls = []
    for name, route in _routes(get_resolver().url_patterns):
        if name.startswith(("admin:", "anymail:")):
            continue
        if "<code>" in route.replace("<str:code>", "<code>"):
            urls += [reverse(name, kwargs={"code": code}) for code in params["code"]]
        elif name == "invoices:unsubscribe":  # a letter's unsubscribe link, for each customer
            urls += [
                reverse(name, kwargs={"token": unsubscribe_token(customer_id=pk, letter_id=0)})
                for pk in Customer.objects.values_list("pk", flat=True)
            ] + [reverse(name, kwargs={"token": "forged"})]
        elif "<str:token>" in route:  # the card e-mail's verification link, for each user
            users = User.objects.all()
            urls += [reverse(name, kwargs={"token": verification_token(u)}) for u in users]
        elif "<str:kind>/<str:lang>" in route:  # staff's mail templates: every kind × language
            for kind in MailTemplateKind.values:
                for language, _name in django_settings.LANGUAGES:
                    urls.append(reverse(name, kwargs={"kind": kind, "lang": language}))
        elif "<str:action>" in route:  # the staff outbox's POST-only actions: nothing to read
            continue
        elif "<int:pk>" in route:
            first, second = route.split("/")[:2]
            for pk in params[f"{first}/{second}" if first == "staff" else first]:
                urls.append(reverse(name, kwargs={"pk": pk}))
        else:
            urls.append(reverse(name))
    urls.append("/accounts/microsoft365/connect/?popup=1")
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        for pk in model._base_manager.values_list("pk", flat=True):
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[pk]))
            urls.append(reverse("admin:{}_{}_history".format(*info), args=[pk]))
    return urls


# -- the test --------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_no_secret_anywhere_after_a_full_run(
    all_loggers_at_debug,
    broker_capture,
    celery_worker,
    smtp_servers,
    m365_settings,
    google_settings,
    settings,
    monkeypatch,
    capfd,
    figures,
):
    caplog = all_loggers_at_debug
    worker_log_start = celery_worker.log_position()
    server, provider = smtp_servers.implicit_tls, m365_settings.provider
    secrets: list[Secret] = []

    def fresh(name: str, login: str = "") -> Secret:
        secret = Secret(name, factories.secret(), login)
        secrets.append(secret)
        return secret

    smtp_password = fresh("A's SMTP password", A_LOGIN)
    login_password = fresh("A's login password", "AUSER")
    refused_password = fresh("the password the server wants instead", A_LOGIN)
    error_password = fresh("the password of the failed save", A_LOGIN)
    secrets.append(Secret("M365 client secret", settings.M365_CLIENT_SECRET, M_ADDRESS))
    secrets.append(Secret("Google client secret", settings.GOOGLE_CLIENT_SECRET, ""))
    server.users[A_LOGIN] = smtp_password.value

    a = factories.user("AUSER", name="Anna Kowalska", email=A_LOGIN)
    a.set_password(login_password.value)
    a.save()
    m = factories.user("MUSER", name="Mark", email=M_ADDRESS)
    factories.profile(m, mode=SenderMode.MICROSOFT365, login=M_ADDRESS)
    staff = factories.user("STAFF", is_staff=True)
    root = factories.user("ROOT", is_staff=True, is_superuser=True)
    invoice_factories.invoices(3)

    # A: the login form, then the card with the SMTP password.
    anna = Client()
    response = anna.post(
        "/accounts/login/", {"username": "AUSER", "password": login_password.value}
    )
    assert response.status_code == 302, "login refused"
    response = anna.post("/accounts/card/", _card(server, password=smtp_password.value))
    assert response.status_code == 302, response.content.decode()[:1000]
    assert crypto.decrypt(SenderProfile.objects.get(user=a).password_encrypted) == (
        smtp_password.value
    )

    # M: Microsoft 365 through the real sign-in flow; its tokens are secrets too.
    mark = Client()
    mark.force_login(m)
    provider.add_user("mark", M_ADDRESS)
    started = mark.get("/accounts/microsoft365/connect/")
    assert (
        mark.get(
            "/accounts/microsoft365/callback/", provider.sign_in(started["Location"], "mark")
        ).status_code
        == 302
    )
    cache = json.loads(crypto.decrypt(OAuthConnection.objects.get(user=m).token_encrypted))
    tokens = [
        entry["secret"]
        for kind in ("AccessToken", "RefreshToken", "IdToken")
        for entry in cache.get(kind, {}).values()
    ]
    assert len(tokens) >= 2, cache.keys()
    for n, token in enumerate(tokens):
        secrets.append(Secret(f"M365 token {n}", token, M_ADDRESS))

    # Through the worker: test e-mails, a mass mailing, a refused password.
    sent = [
        settled(_message_from(anna.post("/outbox/test-email/"))),
        settled(_message_from(mark.post("/outbox/test-email/"))),
    ]
    # Mass mailing through her own server unlocks after a passed connection test (issue 14):
    # one more place her password travels (AUTH), and nowhere else.
    assert anna.post("/accounts/card/", {"action": "test_connection"}).status_code == 200
    assert SenderProfile.objects.get(user=a).tested_at is not None
    response = anna.post("/invoices/send/", {"action": "unsent"})
    assert response.status_code == 302 and "/jobs/" in response.url, response.url
    job = BulkJob.objects.get(user=a)
    sent += _wait_job(job)
    assert [msg.state for msg in sent] == [MessageState.SENT] * 5, [m.last_reply for m in sent]
    assert {msg.auth_login for msg in server.wait_for(4)} == {A_LOGIN}
    assert m365_settings.smtp.wait_for(1)[0].token in tokens

    server.users[A_LOGIN] = refused_password.value
    refused = settled(_message_from(anna.post("/outbox/test-email/")))
    assert refused.state == MessageState.FAILED and refused.explanation == "auth_failed"
    assert Event.objects.filter(message=refused, kind=EventKind.SEND_FAILED).exists()
    tested = anna.post("/accounts/card/", {"action": "test_connection"}).content.decode()
    server.users[A_LOGIN] = smtp_password.value
    tested += anna.post("/accounts/card/", {"action": "test_connection"}).content.decode()
    tested += mark.post("/accounts/card/", {"action": "test_connection"}).content.decode()
    assert tested.count("Connection test passed") == 2, tested[-3000:]

    texts: dict[str, str] = {"pages: connection tests": tested}
    for code in ("AUSER", "MUSER"):
        texts[f"sender show {code}"] = _command("show", code) + _command("show", code, "--json")
        texts[f"sender test {code}"] = _command("test", code, "--json")
    assert json.loads(texts["sender test AUSER"])["passed"] is True

    texts |= _error_reports(a, server, settings, caplog, error_password)
    settings.DEBUG = False

    # Every page every actor can GET.
    pages_ok = 0
    for actor in (None, a, m, staff, root):
        client = Client(raise_request_exception=False)
        if actor:
            client.force_login(actor)
        for url in _every_page_url():
            response = client.get(url)
            if response.status_code == 200:
                pages_ok += 1
            texts[f"page {url} as {actor or 'anonymous'}"] = response.content.decode(
                "utf-8", "replace"
            ) + str(response.headers)
    assert pages_ok > 80, pages_ok

    # The database: dumpdata, and every column of every table as the database returns it.
    out = io.StringIO()
    call_command("dumpdata", stdout=out)
    texts["dumpdata"] = out.getvalue()
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            rows = cursor.fetchall()
            texts[f"table {table}"] = "\n".join(
                repr(
                    [
                        bytes(v).decode("latin-1") if isinstance(v, bytes | memoryview) else v
                        for v in row
                    ]
                )
                for row in rows
            )
    assert "auth_failed" in texts["table outbox_event"]

    # Logs: the worker's, this process's (every logger at DEBUG, SQL with parameters).
    worker_log = celery_worker.log_text()[worker_log_start:]
    assert f"message {refused.pk} failed (auth_failed)" in worker_log
    texts["worker log"] = celery_worker.log_text()
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    assert any(r.name == "django.db.backends" for r in records)
    texts["log records"] = "\n".join(caplog.handler.format(r) for r in records)
    texts["log records (attributes)"] = "\n".join(repr(r.__dict__) for r in records)
    outerr = capfd.readouterr()
    texts["stdout/stderr"] = outerr.out + outerr.err

    # The broker: every raw message published, and what it still holds.
    published = sorted(broker_capture.iterdir())
    for path in published:
        texts[f"broker message {path.name}"] = path.read_text()
    texts |= _broker_leftovers()
    worker_published = [p for p in published if not p.name.startswith(f"{os.getpid()}-")]
    tasks = {json.loads(p.read_text())["headers"].get("task") for p in published}
    assert "outbox.tasks.send_message" in tasks and worker_published, (tasks, len(published))

    found = {where: h for where, text in texts.items() if (h := hits(text, secrets))}
    places = {where.split(" ")[0] for where in texts}
    figures.add("secrets", "secrets used in the run and searched", len(secrets))
    figures.add(
        "secrets", "texts searched (pages, tables, logs, broker messages, reports)", len(texts)
    )
    figures.add("secrets", "raw broker messages read", len(published))
    figures.add("secrets", "pages read (200 OK)", pages_ok)
    figures.add("secrets", "secret hits", sum(len(h) for h in found.values()), "= 0")
    assert {"page", "table", "dumpdata", "worker", "broker", "error", "sender"} <= places
    assert not found, found

    _rotate_keys(settings, figures, {s.value for s in secrets})


def _rotate_keys(settings, figures, secret_values: set[str]) -> None:
    """Add a new key first, rotate, remove the old key: every *_encrypted field still reads."""
    old_keys = list(settings.FIELD_ENCRYPTION_KEYS)  # always set: the settings require them
    fields = encrypted_fields()

    def plaintexts() -> dict[tuple, str]:
        return {
            (model._meta.label, name, pk): crypto.decrypt(value)
            for model, name in fields
            for pk, value in model._base_manager.exclude(**{name: ""}).values_list("pk", name)
        }

    settings.FIELD_ENCRYPTION_KEYS = old_keys
    before = plaintexts()
    assert len(before) >= 2  # A's password and M's token cache at least
    assert any(value in secret_values for value in before.values())
    new = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new, *old_keys]
    out = io.StringIO()
    call_command("rotate_keys", stdout=out)
    rotated = sum(
        int(line.split(": ")[1].split()[0]) for line in out.getvalue().splitlines() if ": " in line
    )
    settings.FIELD_ENCRYPTION_KEYS = [new]  # the old key removed
    unreadable = 0
    for (label, name, pk), plaintext in before.items():
        model = apps.get_model(label)
        value = model._base_manager.values_list(name, flat=True).get(pk=pk)
        try:
            if crypto.decrypt(value) != plaintext:
                unreadable += 1
        except crypto.SecretDecryptionError:
            unreadable += 1
    figures.add("secrets", "rows re-encrypted by rotate_keys", rotated)
    figures.add("secrets", "unreadable after removing the old key", unreadable, "= 0")
    assert rotated == len(before)
    assert unreadable == 0
