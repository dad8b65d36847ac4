"""Attack: passwords sent to a host other than the one they were entered for (issue 11, item 5).

The attackers: a staff user who wants a user's mailbox password, and the mail sending user
(S6.1) who wants the passwords of everyone who inherits their server with only a login (S6.2).
Their listener is `smtp_servers.starttls` (aiosmtpd, AUTH after STARTTLS, with a certificate the
platform trusts: only the binding stands between it and a password): it knows every stored
password, so an AUTH carrying one is recorded as a success. The legitimate servers are
`implicit_tls` (ANNA, the mail sending user MSU and the login-only LOTA and LOTB through it)
and `starttls_optional` (BOB, StartTLS; it would also take AUTH unencrypted).

Everything runs in the production shape: two gunicorn web processes and two Celery workers
(tests/processes.py), the pages posted through both web processes, mail sent by both workers.

Paths tried, each after a control showing the password reaches its own server:
1. `sender set ANNA --server <listener>` without a password;
2. staff points ANNA's server at the listener on her card (refused), then through the admin
   (accepted: the admin edits host and port), and runs the connection test and ANNA's test mail;
3. the mail sending user moves their server (everyone's inherited one) to the listener; LOTA
   sends a test e-mail and tests the connection, LOTB sends a bulk job of invoices;
4. messages queued (workers stopped) before those changes, sent by the workers after them;
5. BOB's security changed to No on the card (refused) and through the admin.
Figures: AUTH attempts carrying a stored password at the listener (= 0), AUTH without TLS
carrying a password nobody confirmed for that (= 0), and the control count at the legitimate
servers before the change (≥ 3). `test_the_listener_sees_a_password_when_the_binding_is_absent`
shows the detector firing when the binding is bypassed.
"""

from __future__ import annotations

import html
import io
import re
import time

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.test import Client

from outbox.models import BulkJob, Event, EventKind, JobState, MessageState, OutgoingMessage
from smtp_settings import crypto
from smtp_settings.errors import PermanentSendError
from smtp_settings.models import Security, SenderProfile
from smtp_settings.transports import SmtpTransport, check_resolved
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("transactional_db")]

PROCESS_ENV = {"CONNECTION_TESTS_PER_MINUTE": "100", "LANGUAGE_CODE": "en"}
FIGURE = "passwords sent to a host other than the one they were entered for"
DONE = {MessageState.SENT, MessageState.FAILED}


def _stolen(server, passwords: dict[str, str]) -> int:
    """AUTH attempts at `server` carrying one of `passwords` (login -> stored password)."""
    return sum(1 for a in server.auth_attempts if a.success and passwords.get(a.login) is not None)


def _wait_messages(user, count: int, timeout: float = 40.0) -> list[OutgoingMessage]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(OutgoingMessage.objects.filter(user=user).order_by("pk"))
        if len(rows) >= count and all(r.state in DONE for r in rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{user.code}: messages not settled: {[r.state for r in rows]}")


def _wait_job(job: BulkJob, timeout: float = 60.0) -> BulkJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.state != JobState.RUNNING and not job.messages.exclude(state__in=DONE).exists():
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job.pk} still running")


def _card(user, **fields) -> dict:
    """The card form of `user` as the page posts it, with the sender of its stored profile."""
    profile = SenderProfile.objects.get(user=user)
    data = {
        "name": user.name,
        "email": user.email,
        "mode": profile.mode,
        "server": profile.server,
        "security": profile.security,
        "login": profile.login,
        "password": "",
    }
    data.update(fields)
    return data


def _admin_edit(session, profile: SenderProfile, **fields) -> None:
    """Change a sender profile through the Django admin's change form (host, port, security)."""
    url = f"/admin/smtp_settings/senderprofile/{profile.pk}/change/"
    data = {
        "user": profile.user_id or "",
        "mode": profile.mode,
        "host": profile.host,
        "port": profile.port or "",
        "security": profile.security,
        "login": profile.login,
        "_save": "Save",
    }
    data.update(fields)
    response = session.post(url, data=data, allow_redirects=False)
    assert response.status_code == 302, response.text[-3000:]


def _test_mail(web, user) -> None:
    response = web.client(user).post("/outbox/test-email/", allow_redirects=False)
    assert response.status_code == 302, response.text[-2000:]


def _connection_test(session, url: str) -> str:
    response = session.post(url, data={"action": "test_connection"})
    assert response.status_code == 200, response.text[-2000:]
    return response.text


@pytest.fixture
def world(smtp_servers):
    legit, bob_server, listener = (
        smtp_servers.implicit_tls,
        smtp_servers.starttls_optional,
        smtp_servers.starttls,
    )
    factories.company()
    staff = factories.user("STAFF", is_staff=True, is_superuser=True, language="en")
    msu = factories.user("MSU", email="msu@acme.example", language="en")
    passwords: dict[str, str] = {}

    def with_password(user, **fields):
        login = user.email
        passwords[login] = factories.secret()
        factories.profile(user, login=login, password=passwords[login], **fields)

    with_password(msu, host=legit.host, port=legit.port, security=Security.SSL)
    factories.mail_sending_user(msu)
    anna = factories.user("ANNA", email="anna@acme.example", language="en")
    with_password(anna, host=legit.host, port=legit.port, security=Security.SSL)
    bob = factories.user("BOB", email="bob@acme.example", language="en")
    with_password(bob, host=bob_server.host, port=bob_server.port, security=Security.STARTTLS)
    lota = factories.user("LOTA", email="lota@acme.example", language="en")
    with_password(lota)  # login-only: bound to MSU's server, the inherited one
    lotb = factories.user("LOTB", email="lotb@acme.example", language="en")
    with_password(lotb)
    for server in (legit, bob_server, listener):
        server.users.update(passwords)  # every server would accept each stored password
    return {
        "legit": legit,
        "bob_server": bob_server,
        "listener": listener,
        "passwords": passwords,
        "staff": staff,
        "msu": msu,
        "anna": anna,
        "bob": bob,
        "lota": lota,
        "lotb": lotb,
    }


def test_no_stored_password_reaches_another_host(app_processes, world, figures):
    web1, web2 = app_processes.web
    legit, bob_server, listener = world["legit"], world["bob_server"], world["listener"]
    passwords = world["passwords"]
    staff, msu, anna, bob, lota, lotb = (
        world[k] for k in ("staff", "msu", "anna", "bob", "lota", "lotb")
    )
    staff1 = web1.client(staff)
    staff2 = web2.client(staff)

    # -- control: before any change every password reaches its own server ---------------------
    assert "Connection test passed" in _connection_test(staff1, "/accounts/card/ANNA/")
    _test_mail(web2, lota)
    _test_mail(web1, bob)
    invoice_factories.invoice()
    job = web1.client(lotb).post("/invoices/send/", data={"action": "unsent"})
    assert job.status_code == 200, job.text[-2000:]
    _wait_job(BulkJob.objects.get(user=lotb))
    assert [m.state for m in _wait_messages(lota, 1)] == [MessageState.SENT]
    assert [m.state for m in _wait_messages(bob, 1)] == [MessageState.SENT]
    assert [m.state for m in _wait_messages(lotb, 1)] == [MessageState.SENT]
    control = _stolen(legit, passwords) + _stolen(bob_server, passwords)
    assert control >= 4, (legit.auth_attempts, bob_server.auth_attempts)
    assert _stolen(listener, passwords) == 0

    # The figures are recorded even when a path fails on the way, so the table shows it.
    try:
        # -- 4 (set up): messages queued with the workers stopped, sent after the changes ---------
        for worker in app_processes.workers:
            worker.stop()
        _test_mail(web1, anna)
        _test_mail(web2, lota)
        _test_mail(web1, bob)
        queued = {
            u.code: OutgoingMessage.objects.filter(user=u).latest("pk") for u in (anna, lota, bob)
        }

        # -- 1: sender set without a password ------------------------------------------------------
        with pytest.raises(CommandError, match="enter the password again"):
            call_command(
                "sender",
                "set",
                "ANNA",
                "--server",
                f"{listener.host}:{listener.port}",
                "--security",
                "starttls",
                stdout=io.StringIO(),
            )

        # -- 2: staff on the card (refused), then through the admin --------------------------------
        refused = staff1.post(
            "/accounts/card/ANNA/",
            data=_card(
                anna,
                server=f"{listener.host}:{listener.port}",
                security=Security.STARTTLS,
            ),
        )
        assert "enter the password again" in refused.text
        _admin_edit(
            staff2,
            SenderProfile.objects.get(user=anna),
            host=listener.host,
            port=listener.port,
            security=Security.STARTTLS,
        )

        # -- 3: the mail sending user moves everyone's inherited server ----------------------------
        msu1 = web1.client(msu)
        moved = {"server": f"{listener.host}:{listener.port}", "security": Security.STARTTLS}
        assert (
            "enter the password again"
            in msu1.post("/accounts/card/", data=_card(msu, **moved)).text
        )
        new_msu_password = factories.secret()  # MSU's own new password, entered for the listener
        saved = msu1.post(
            "/accounts/card/",
            data=_card(msu, **moved, password=new_msu_password),
            allow_redirects=False,
        )
        assert saved.status_code == 302, saved.text[-3000:]
        told = set(
            Event.objects.filter(kind=EventKind.PASSWORD_REENTRY).values_list(
                "user__code", flat=True
            )
        )
        assert told == {"LOTA", "LOTB"}

        # -- 5: BOB's security changed to No: card refused, then the admin -------------------------
        refused = staff2.post(
            "/accounts/card/BOB/",
            data=_card(bob, security=Security.NONE, unencrypted_auth="on"),
        )
        assert "enter the password again" in refused.text
        _admin_edit(staff1, SenderProfile.objects.get(user=bob), security=Security.NONE)

        # -- 4: the workers come back and send what was queued before the changes ------------------
        for worker in app_processes.workers:
            worker.start()
        for code, message in queued.items():
            deadline = time.monotonic() + 40
            while OutgoingMessage.objects.get(pk=message.pk).state not in DONE:
                assert time.monotonic() < deadline, f"{code}'s queued message never settled"
                time.sleep(0.1)

        # -- after the changes: every path, through both web processes and both workers ------------
        for session in (staff1, staff2):
            page = _connection_test(session, "/accounts/card/ANNA/")
            assert "entered for another server" in page, page[-3000:]
        _test_mail(web2, anna)
        _test_mail(web1, lota)
        _test_mail(web2, bob)
        page = _connection_test(web2.client(lota), "/accounts/card/")
        assert "entered for another server" in page
        card = web1.client(lota).get("/accounts/card/").text
        assert "The password was entered for another server" in card
        invoice_factories.invoice()
        invoice_factories.invoice()
        web2.client(lotb).post("/invoices/send/", data={"action": "unsent"})
        job = _wait_job(BulkJob.objects.filter(user=lotb).latest("pk"))
        failed = list(job.messages.values_list("state", "explanation"))
        assert failed == [(MessageState.FAILED, "password_bound_elsewhere")] * 2, failed
        for user in (anna, lota, bob):
            latest = _wait_messages(user, 2)[-1]
            assert (latest.state, latest.explanation) == (
                MessageState.FAILED,
                "password_bound_elsewhere",
            ), user.code
        # The queued ones went, if at all, to the server their password was entered for.
        for message in OutgoingMessage.objects.filter(pk__in=[m.pk for m in queued.values()]):
            assert message.state in DONE

    finally:
        stolen = _stolen(listener, passwords)
        unencrypted = sum(
            1
            for server in (legit, bob_server, listener)
            for a in server.auth_attempts
            if not a.tls and passwords.get(a.login) is not None
        )
        figures.add("attacks", FIGURE, stolen, "= 0")
        figures.add(
            "attacks",
            "stored passwords sent unencrypted without a confirmation",
            unencrypted,
            "= 0",
        )
        figures.add(
            "attacks", "control: stored passwords reaching their own server", control, "≥ 4"
        )
    assert stolen == 0, listener.auth_attempts
    assert unencrypted == 0
    assert listener.auth_attempts == []  # not even a refused one: nothing was tried there


def test_the_listener_sees_a_password_when_the_binding_is_absent(world, figures):
    """The detector can fail: the stored password, decrypted and handed to the transport
    without the binding check (as every path did before), reaches the listener."""
    listener, passwords, anna = world["listener"], world["passwords"], world["anna"]
    profile = SenderProfile.objects.get(user=anna)

    with SmtpTransport(
        host=listener.host,
        port=listener.port,
        security=Security.STARTTLS,
        login=profile.login,
        password=crypto.decrypt(profile.password_encrypted),
    ):
        pass

    seen = _stolen(listener, passwords)
    figures.add(
        "attacks", "detector check: password at the listener without the binding", seen, "= 1"
    )
    assert seen == 1


# -- items 10 and 11: what the connection test tells, and the address guard --------------------

PRIVATE_IN_IPV6 = [
    "64:ff9b::a9fe:a9fe",  # NAT64 of the cloud metadata address
    "::127.0.0.1",  # IPv4-compatible loopback
    "::ffff:10.0.0.1",  # IPv4-mapped private
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "2002:a9fe:a9fe::1",  # 6to4 of the metadata address
    "2001:0:808:808:0:0:80ff:fffe",  # Teredo, client 127.0.0.1
]


def test_no_private_address_passes_the_guard_inside_ipv6(world, settings, figures):
    """Typed on the card (a real POST) and resolved at connect time: none gets through; the
    public control (NAT64 of 8.8.8.8) does, so the counter can see a pass."""
    settings.SMTP_ALLOW_PRIVATE_HOSTS = False
    client = Client()
    client.force_login(world["anna"])

    def passes(address: str) -> int:
        card = client.post(
            "/accounts/card/",
            _card(world["anna"], server=f"[{address}]:587", security=Security.STARTTLS),
        )
        through = 0 if "is a private or local address" in card.content.decode() else 1
        try:
            check_resolved("smtp.attacker.example", [address])
        except PermanentSendError:
            return through
        return through + 1

    passed = sum(passes(address) for address in PRIVATE_IN_IPV6)
    control = passes("64:ff9b::808:808")
    figures.add("attacks", "private addresses inside IPv6 passing the guard", passed, "= 0")
    assert passed == 0
    assert control == 2  # card and connect time both let the public one through


def test_the_connection_test_tells_an_ordinary_user_nothing_about_the_platform(
    world, figures, settings
):
    cache.clear()
    factories.mail_sending_user(None)  # Default mode then means the platform relay (S1.1)
    ewa = factories.user("EWA", email="ewa@acme.example", language="en")
    client = Client()
    client.force_login(ewa)
    page = client.post("/accounts/card/", {"action": "test_connection"}).content.decode()
    # Only the connection test's own section: the rest of the card names "OAUTH" and so on.
    page = html.unescape(
        re.search(r'<section class="connection-test".*?</section>', page, re.S).group(0)
    )
    anna_client = Client()
    anna_client.force_login(world["anna"])
    legit = world["legit"]
    before = len(legit.auth_attempts)
    probe = anna_client.post(
        "/accounts/card/", {"action": "test_connection", "to": "ceo@competitor.example"}
    ).content.decode()

    leaks = sum(
        str(value) in page
        for value in (settings.EMAIL_HOST, settings.EMAIL_PORT, "ESMTP", "AUTH", "EHLO", "250")
    ) + int(len(legit.auth_attempts) > before)
    figures.add("attacks", "relay details or RCPT probes given to an ordinary user", leaks, "= 0")
    assert "The platform's mail server answers" in page  # the control: the test did run
    assert "checks the recipient only for your own address" in probe
    assert leaks == 0
