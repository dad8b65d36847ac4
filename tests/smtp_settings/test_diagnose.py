"""The connection test (DNS → TCP → TLS → EHLO → AUTH → envelope → RSET/QUIT) against real servers.

Nothing is ever sent: every case checks that the server accepted no message and saw no DATA.
Through the card page (English and Polish, the per-minute limit, staff on another user's card)
and through `manage.py sender test`.
"""

from __future__ import annotations

import functools
import io
import json
import re

import pytest
from aiosmtpd.smtp import SMTP
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils.html import escape

from accounts.models import User
from smtp_settings.diagnose import FAILED, OK, SKIPPED, STEPS, ConnectionTest, connection_test
from smtp_settings.explain import CATALOGUE
from smtp_settings.models import Security
from smtp_settings.selectors import sender_config_for
from tests import factories
from tests.smtp_fixtures import _ScriptedSMTP

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

STEP_NAMES = list(STEPS)
LOGIN = "anna@acme.example"
RECIPIENT = "client@example.com"
CARD_URL = "/accounts/card/"
WAIT = "You have tested the connection several times in a row: wait a minute and retry."


@pytest.fixture(autouse=True)
def _fresh_rate_limit():
    """The per-minute counter lives in the cache, keyed by user pk, which tests may reuse."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def commands(monkeypatch) -> list[tuple[str, str]]:
    """(server name, command) for every EHLO, MAIL, RCPT, DATA, RSET, QUIT the servers handle."""
    seen: list[tuple[str, str]] = []
    for command in ("EHLO", "MAIL", "RCPT", "DATA", "RSET", "QUIT"):
        original = getattr(SMTP, f"smtp_{command}")

        @functools.wraps(original)
        async def spy(self, arg, _original=original, _command=command):
            seen.append((self.test_server.name, _command))
            return await _original(self, arg)

        # Each new session builds its command table from the class: later connections see it.
        monkeypatch.setattr(_ScriptedSMTP, f"smtp_{command}", spy)
    return seen


def _user(server=None, *, security: str = Security.NONE, port: int | None = None, **profile):
    """ANNA with her own SMTP profile at `server` (or 127.0.0.1:`port`)."""
    user = factories.user("ANNA", name="Anna Kowalska", email=LOGIN)
    factories.profile(
        user,
        host=server.host if server else "127.0.0.1",
        port=server.port if server else port,
        security=security,
        **profile,
    )
    return user


def _with_auth(server, password: str | None = None) -> dict:
    """Profile fields for AUTH as LOGIN; the server knows the login with `password`."""
    stored = factories.secret()
    server.users[LOGIN] = stored if password is None else password
    return {"login": LOGIN, "password": stored}


def _run(user: User, to: str = RECIPIENT) -> ConnectionTest:
    return connection_test(sender_config_for(user=user), to=to)


def _outcomes(result: ConnectionTest) -> dict[str, str]:
    return {step.name: step.outcome for step in result.steps}


def _step(result: ConnectionTest, name: str):
    return next(step for step in result.steps if step.name == name)


def _title(key: str) -> str:
    return str(CATALOGUE[key].title)


def _assert_nothing_sent(server, commands) -> None:
    assert server.messages == []
    assert (server.name, "DATA") not in commands


# -- passing tests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_name", "security"),
    [
        ("implicit_tls", Security.SSL),
        ("starttls", Security.STARTTLS),
        ("starttls_optional", Security.STARTTLS),
    ],
)
def test_encrypted_server_with_auth_passes_every_step(
    smtp_servers, commands, server_name, security
):
    server = getattr(smtp_servers, server_name)
    user = _user(server, security=security, **_with_auth(server))

    result = _run(user)

    assert result.passed, result.as_dict()
    assert result.config_error == ""
    assert _outcomes(result) == dict.fromkeys(STEP_NAMES, OK)
    # Issue 11: a private address a name resolved to is never named (127.0.0.1 here).
    assert _step(result, "dns").detail == "a private address"
    assert _step(result, "connect").detail == "a private address"
    assert "127.0.0.1" not in str(result.as_dict())
    assert re.match(r"TLSv1\.[23], ", _step(result, "tls").detail), _step(result, "tls").detail
    assert "AUTH" in _step(result, "ehlo").detail
    assert _step(result, "auth").detail.startswith("235")
    assert _step(result, "envelope").detail == f"{LOGIN} → {RECIPIENT}"
    assert _step(result, "envelope").reply.startswith("250")
    assert all(not step.explanation for step in result.steps)
    [attempt] = server.auth_attempts
    assert (attempt.login, attempt.success, attempt.tls) == (LOGIN, True, True)
    # Offered the envelope, then reset and said goodbye; never DATA.
    mine = [command for name, command in commands if name == server.name]
    assert mine[-4:] == ["MAIL", "RCPT", "RSET", "QUIT"]
    _assert_nothing_sent(server, commands)


def test_plain_server_without_auth_skips_tls_and_auth_with_why(smtp_servers, commands):
    server = smtp_servers.plain
    user = _user(server, security=Security.NONE)

    result = _run(user)

    assert result.passed, result.as_dict()
    assert _outcomes(result) == {
        "dns": OK,
        "connect": OK,
        "tls": SKIPPED,
        "ehlo": OK,
        "auth": SKIPPED,
        "envelope": OK,
        "quit": OK,
    }
    assert _step(result, "tls").detail == "not used: the connection is unencrypted"
    assert _step(result, "auth").detail == "not used: no user name"
    assert server.auth_attempts == []
    mine = [command for name, command in commands if name == server.name]
    assert mine == ["EHLO", "MAIL", "RCPT", "RSET", "QUIT"]
    _assert_nothing_sent(server, commands)


def test_the_recipient_is_the_one_asked_for_and_251_passes(smtp_servers, commands):
    """RCPT TO goes to the address asked for; a 251 ("will forward") still passes."""
    server = smtp_servers.plain
    user = _user(server)
    server.script("RCPT", "251 2.1.5 User not local; will forward")

    result = _run(user, to="someone@else.example")

    assert result.passed, result.as_dict()
    assert _step(result, "envelope").detail == f"{LOGIN} → someone@else.example"
    assert _step(result, "envelope").reply.startswith("251")
    _assert_nothing_sent(server, commands)


# -- failing tests: each stops at its step with its explanation --------------------------------


def _failure_case(smtp_servers, refused_port, silent_server, settings, case):
    """The user for one failure case, and the server that should have received nothing."""
    if case == "refused":
        return _user(port=refused_port), None, "connect", "connection_refused"
    if case == "silent":
        settings.SMTP_TIMEOUT = 0.3
        return _user(port=silent_server.port), None, "connect", "connection_timeout"
    if case == "silent_tls":  # implicit TLS: the handshake never gets an answer
        settings.SMTP_TIMEOUT = 0.3
        user = _user(port=silent_server.port, security=Security.SSL)
        return user, None, "tls", "connection_timeout"
    if case == "expired_cert":
        server = smtp_servers.expired_cert
        return _user(server, security=Security.SSL), server, "tls", "cert_expired"
    if case == "wrong_host_cert":
        server = smtp_servers.wrong_host_cert
        return _user(server, security=Security.SSL), server, "tls", "cert_hostname"
    if case == "ssl_on_plain":
        server = smtp_servers.plain
        return _user(server, security=Security.SSL), server, "tls", "tls_wrong_port"
    if case == "starttls_not_offered":
        server = smtp_servers.plain
        user = _user(server, security=Security.STARTTLS)
        return user, server, "tls", "starttls_not_offered"
    if case == "starttls_required":
        server = smtp_servers.starttls
        return _user(server, security=Security.NONE), server, "envelope", "starttls_required"
    if case == "bad_password":
        server = smtp_servers.implicit_tls
        profile = _with_auth(server, password=factories.secret())  # not the stored one
        return _user(server, security=Security.SSL, **profile), server, "auth", "auth_failed"
    if case == "rcpt_550":
        server = smtp_servers.plain
        server.script(
            "RCPT", "550 5.1.1 <client@example.com>: Recipient address rejected: User unknown"
        )
        return _user(server), server, "envelope", "recipient_unknown"
    raise AssertionError(case)


FAILURES = [
    "refused",
    "silent",
    "silent_tls",
    "expired_cert",
    "wrong_host_cert",
    "ssl_on_plain",
    "starttls_not_offered",
    "starttls_required",
    "bad_password",
    "rcpt_550",
]


@pytest.mark.parametrize("case", FAILURES)
def test_a_failure_stops_at_its_step_with_its_explanation(
    smtp_servers, refused_port, silent_server, settings, commands, case
):
    user, server, failed_step, key = _failure_case(
        smtp_servers, refused_port, silent_server, settings, case
    )

    result = _run(user)

    assert not result.passed
    outcomes = _outcomes(result)
    position = STEP_NAMES.index(failed_step)
    assert outcomes[failed_step] == FAILED, result.as_dict()
    for name in STEP_NAMES[position + 1 :]:
        assert outcomes[name] == SKIPPED, (name, result.as_dict())
    for name in STEP_NAMES[:position]:
        # Before the failure: done, or not used by this configuration.
        assert outcomes[name] in (OK, SKIPPED), (name, result.as_dict())
    assert outcomes["dns"] == OK
    assert _step(result, failed_step).explanation["title"] == _title(key), result.as_dict()
    assert _step(result, failed_step).explanation["fix"]
    assert [s.name for s in result.steps if s.explanation] == [failed_step]
    if server is not None:
        _assert_nothing_sent(server, commands)
    assert all(command != "DATA" for _name, command in commands)


def test_the_failing_reply_is_shown_as_the_server_said_it(smtp_servers, commands):
    server = smtp_servers.starttls
    user = _user(server, security=Security.NONE)

    result = _run(user)

    envelope = _step(result, "envelope")
    assert envelope.outcome == FAILED
    assert envelope.reply.startswith("530")
    assert "STARTTLS" in envelope.reply
    assert _step(result, "ehlo").outcome == OK
    assert _step(result, "tls").detail == "not used: the connection is unencrypted"
    _assert_nothing_sent(server, commands)


def test_a_bad_password_reports_the_servers_535(smtp_servers, commands):
    server = smtp_servers.implicit_tls
    user = _user(server, security=Security.SSL, **_with_auth(server, password="other"))

    result = _run(user)

    auth = _step(result, "auth")
    assert auth.outcome == FAILED
    assert auth.reply.startswith("535")
    assert _outcomes(result)["tls"] == OK and _outcomes(result)["ehlo"] == OK
    assert server.auth_attempts and not any(a.success for a in server.auth_attempts)
    assert not [c for name, c in commands if name == server.name and c in ("MAIL", "RCPT")]
    _assert_nothing_sent(server, commands)


def test_a_configuration_that_cannot_resolve_to_a_transport_is_a_config_error(settings):
    """A stored password that is gone between resolving and connecting: no step runs."""
    server_user = _user(port=25, security=Security.STARTTLS, login=LOGIN, password="x")
    config = sender_config_for(user=server_user)
    server_user.sender_profile.password_encrypted = ""
    server_user.sender_profile.save()

    result = connection_test(config, to=RECIPIENT)

    assert not result.passed
    assert "No password is stored for anna@acme.example" in result.config_error
    assert set(_outcomes(result).values()) == {SKIPPED}


# -- the card page -------------------------------------------------------------------------------


def _test_on_card(client, url: str = CARD_URL, **data):
    return client.post(url, {"action": "test_connection", **data})


def _steps_html(html: str) -> dict[str, str]:
    """data-step → class of each <li> in the connection test list."""
    return {
        name: outcome for outcome, name in re.findall(r'<li class="(\w+)" data-step="(\w+)">', html)
    }


def test_card_shows_the_steps_in_english(client, smtp_servers, commands):
    server = smtp_servers.implicit_tls
    user = _user(server, security=Security.SSL, **_with_auth(server))
    client.force_login(user)

    response = _test_on_card(client)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Connection test passed" in html
    assert _steps_html(html) == dict.fromkeys(STEP_NAMES, OK)
    for label in STEPS.values():
        assert escape(str(label)) in html
    assert re.search(r"<small>TLSv1\.[23], ", html)
    _assert_nothing_sent(server, commands)


def test_card_shows_a_failure_in_polish(client, smtp_servers, commands):
    server = smtp_servers.implicit_tls
    user = _user(server, security=Security.SSL, **_with_auth(server, password="other"))
    user.language = "pl"
    user.save()
    client.force_login(user)

    html = _test_on_card(client).content.decode()

    assert "Test połączenia nie powiódł się" in html
    assert "Odnalezienie adresu serwera (DNS)" in html
    assert "Szyfrowanie (TLS)" in html
    assert "Serwer poczty nie przyjął nazwy użytkownika lub hasła." in html
    assert "nie wykonano" in html  # the steps after AUTH
    assert "Connection test" not in html
    steps = _steps_html(html)
    assert steps["auth"] == FAILED
    assert steps["envelope"] == steps["quit"] == SKIPPED
    _assert_nothing_sent(server, commands)


def test_card_shows_unused_steps_in_polish(client, smtp_servers, commands):
    server = smtp_servers.plain
    user = _user(server)
    user.language = "pl"
    user.save()
    client.force_login(user)

    html = _test_on_card(client).content.decode()

    assert "Test połączenia zakończony powodzeniem" in html
    assert "nie dotyczy: połączenie nie jest szyfrowane" in html
    assert "nie dotyczy: brak nazwy użytkownika" in html
    _assert_nothing_sent(server, commands)


def test_card_limits_connection_tests_per_minute(client, smtp_servers, commands, settings):
    settings.CONNECTION_TESTS_PER_MINUTE = 2
    server = smtp_servers.implicit_tls
    user = _user(server, security=Security.SSL, **_with_auth(server))
    client.force_login(user)

    for _ in range(2):
        html = _test_on_card(client).content.decode()
        assert "Connection test passed" in html
        assert WAIT not in html
    third = _test_on_card(client).content.decode()

    assert escape(WAIT) in third
    assert 'class="connection-test"' not in third
    # Two tests reached the server, the third opened no connection.
    assert [c for name, c in commands if name == server.name].count("EHLO") == 2
    assert len(server.auth_attempts) == 2
    _assert_nothing_sent(server, commands)


def test_card_rate_limit_message_in_polish(client, smtp_servers, settings):
    settings.CONNECTION_TESTS_PER_MINUTE = 1
    user = _user(smtp_servers.plain)
    user.language = "pl"
    user.save()
    client.force_login(user)

    _test_on_card(client)
    html = _test_on_card(client).content.decode()

    assert "Połączenie było testowane kilka razy z rzędu" in html


def test_staff_can_test_another_users_card(client, smtp_servers, commands):
    server = smtp_servers.implicit_tls
    _user(server, security=Security.SSL, **_with_auth(server))
    staff = factories.user("ADMIN", is_staff=True)
    client.force_login(staff)

    response = _test_on_card(client, f"{CARD_URL}ANNA/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "You are editing the card of ANNA as an administrator." in html
    assert "Connection test passed" in html
    assert [a.login for a in server.auth_attempts] == [LOGIN]  # ANNA's saved settings
    _assert_nothing_sent(server, commands)


def test_a_password_beyond_ascii_logs_in_as_utf8(client, smtp_servers, commands):
    """A review of issue 11: smtplib encodes AUTH as ASCII, so "zażółć…" raised
    UnicodeEncodeError: a server error on the card (the password among the locals on a DEBUG
    page) and an unexplained failure for every mail. It goes as AUTH PLAIN in UTF-8."""
    server = smtp_servers.implicit_tls
    password = "zażółć-" + factories.secret()
    server.users[LOGIN] = password
    client.force_login(_user(server, security=Security.SSL, login=LOGIN, password=password))

    response = _test_on_card(client)

    assert response.status_code == 200
    assert "Connection test passed" in response.content.decode()
    assert [(a.mechanism, a.success) for a in server.auth_attempts] == [("PLAIN", True)]
    server.users[LOGIN] = "another-" + factories.secret()  # the control: a wrong one fails
    assert "Connection test passed" not in _test_on_card(client).content.decode()
    assert [a.success for a in server.auth_attempts] == [True, False]
    _assert_nothing_sent(server, commands)


def test_a_user_cannot_test_another_users_card(client, smtp_servers, commands):
    server = smtp_servers.implicit_tls
    _user(server, security=Security.SSL, **_with_auth(server))
    client.force_login(factories.user("PIOTR"))

    response = _test_on_card(client, f"{CARD_URL}ANNA/")

    assert response.status_code == 403
    assert not [c for name, c in commands if name == server.name]


def test_card_shows_a_configuration_error_instead_of_steps(client):
    """A login without a stored password (written directly to the database): no connection."""
    user = _user(port=25, security=Security.STARTTLS, login=LOGIN)
    client.force_login(user)

    html = _test_on_card(client).content.decode()

    message = "A login is set but no password. Enter the password, or clear the login."
    assert f'<p class="message error" role="alert">{escape(message)}</p>' in html
    assert 'class="connection-test"' not in html


# -- manage.py sender test -----------------------------------------------------------------------


def _sender_test(*args: str) -> tuple[str, str, CommandError | None]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("sender", "test", *args, stdout=out, stderr=err)
    except CommandError as error:
        return out.getvalue(), err.getvalue(), error
    return out.getvalue(), err.getvalue(), None


def test_cli_json_passes(smtp_servers, commands):
    server = smtp_servers.starttls
    profile = _with_auth(server)
    _user(server, security=Security.STARTTLS, **profile)

    out, err, error = _sender_test("ANNA", "--json")

    assert error is None
    data = json.loads(out)
    assert data["passed"] is True
    assert data["config_error"] == ""
    assert [s["step"] for s in data["steps"]] == STEP_NAMES
    assert {s["outcome"] for s in data["steps"]} == {OK}
    assert profile["password"] not in out + err
    _assert_nothing_sent(server, commands)


def test_cli_to_sets_the_recipient(smtp_servers, commands):
    server = smtp_servers.plain
    _user(server)

    out, _err, error = _sender_test("ANNA", "--to", "other@example.org", "--json")

    assert error is None
    envelope = next(s for s in json.loads(out)["steps"] if s["step"] == "envelope")
    assert envelope["detail"] == f"{LOGIN} → other@example.org"
    _assert_nothing_sent(server, commands)


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_cli_failure_names_the_step_and_never_the_password(smtp_servers, commands, as_json):
    server = smtp_servers.implicit_tls
    right = factories.secret()
    profile = _with_auth(server, password=right)  # the stored password is another one
    _user(server, security=Security.SSL, **profile)

    out, err, error = _sender_test("ANNA", *(["--json"] if as_json else []))

    assert isinstance(error, CommandError)
    assert str(error) == "The connection test failed."
    assert profile["password"] not in out + err + str(error)
    assert right not in out + err
    if as_json:
        data = json.loads(out)
        assert data["passed"] is False
        [failed] = [s for s in data["steps"] if s["outcome"] == FAILED]
        assert failed["step"] == "auth"
        assert failed["explanation"]["title"] == _title("auth_failed")
        assert failed["reply"].startswith("535")
        later = [s["outcome"] for s in data["steps"][STEP_NAMES.index("auth") + 1 :]]
        assert set(later) == {SKIPPED}
    else:
        assert "[FAIL] Login (AUTH)" in out
        assert _title("auth_failed") in out
    _assert_nothing_sent(server, commands)


def test_cli_unknown_user_and_config_errors_fail():
    with pytest.raises(CommandError, match="There is no user with the code"):
        call_command("sender", "test", "NOBODY", stdout=io.StringIO())
    _user(port=25, security=Security.STARTTLS, login=LOGIN)  # login, no password
    with pytest.raises(CommandError, match="A login is set but no password"):
        call_command("sender", "test", "ANNA", "--json", stdout=io.StringIO())


@pytest.mark.usefixtures("transactional_db")
def test_cli_exit_codes_in_a_real_process(celery_worker, smtp_servers):
    """`manage.py sender test` exits 0 when every step passes and non-zero when one fails."""
    server = smtp_servers.implicit_tls
    profile = _with_auth(server)
    user = _user(server, security=Security.SSL, **profile)

    passed = celery_worker.manage("sender", "test", "ANNA", "--json")
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout)["passed"] is True

    server.users[LOGIN] = "changed"
    failed = celery_worker.manage("sender", "test", "ANNA", "--json")
    assert failed.returncode != 0
    data = json.loads(failed.stdout)
    assert data["passed"] is False
    assert [s["step"] for s in data["steps"] if s["outcome"] == FAILED] == ["auth"]
    assert "The connection test failed." in failed.stderr
    for output in (passed, failed):
        assert profile["password"] not in output.stdout + output.stderr
    assert server.messages == []
    assert user.pk


BROKEN_RECIPIENT = '"x\ny"@example.com'  # smtplib keeps the newline and refuses to send it


def test_card_connection_test_with_a_broken_recipient_is_not_a_500(client, smtp_servers):
    user = _user(smtp_servers.plain)
    client.force_login(user)

    response = _test_on_card(client, to=BROKEN_RECIPIENT)

    assert response.status_code == 200
    page = response.content.decode()
    assert "Connection test failed" in page
    assert "is not a valid e-mail address" in page
    assert smtp_servers.plain.messages == []


def test_cli_broken_recipient_is_a_command_error(smtp_servers):
    _user(smtp_servers.plain)

    with pytest.raises(CommandError):
        call_command("sender", "test", "ANNA", "--to", BROKEN_RECIPIENT, stdout=io.StringIO())
