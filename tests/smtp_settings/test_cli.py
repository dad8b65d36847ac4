"""`manage.py sender show|set`: never a secret out, same refusals as the pages, nothing changed."""

from __future__ import annotations

import io
import json
import os
import secrets
import sqlite3
import string
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from accounts.models import User
from smtp_settings import crypto
from smtp_settings.models import Security, SenderMode, SenderProfile, SystemSettings
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]


def _sender(*args: str, stdin: str | None = None, monkeypatch=None) -> str:
    """Run `sender` in-process; returns stdout. `stdin` feeds --password-stdin."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    out = io.StringIO()
    call_command("sender", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def stored_password() -> str:
    return factories.secret()


@pytest.fixture
def anna(stored_password) -> User:
    user = factories.user("ANNA", name="Anna Kowalska", email="anna@acme.test")
    factories.profile(
        user,
        host="smtp.acme.test",
        port=587,
        security=Security.STARTTLS,
        login="anna@acme.test",
        password=stored_password,
    )
    return user


# -- show --------------------------------------------------------------------------------------


def test_show_prints_the_effective_sender_without_a_secret(anna, stored_password):
    out = _sender("show", "ANNA")

    assert "smtp.acme.test" in out
    assert "anna@acme.test" in out
    assert stored_password not in out
    assert anna.sender_profile.password_encrypted not in out


def test_show_json_has_no_secret(anna, stored_password):
    out = _sender("show", "ANNA", "--json")

    data = json.loads(out)
    assert data["user"] == "ANNA"
    assert (data["mode"], data["transport"]) == (SenderMode.SMTP, "smtp")
    assert (data["server"], data["port"], data["security"]) == ("smtp.acme.test", 587, "starttls")
    assert data["login"] == "anna@acme.test"
    assert data["password_set"] is True
    assert data["source"]["server"] == "user"
    assert not {"password", "password_encrypted", "secret"} & set(data)
    assert stored_password not in out
    assert anna.sender_profile.password_encrypted not in out


def test_show_json_of_an_inheriting_user(anna):
    factories.user("BOB", email="bob@acme.test")
    factories.mail_sending_user(anna)

    data = json.loads(_sender("show", "BOB", "--json"))

    assert (data["server"], data["login"]) == ("smtp.acme.test", "anna@acme.test")
    assert data["from"] == "bob@acme.test"
    assert data["source"]["server"] == "mail_sending_user"


def test_show_unknown_user():
    with pytest.raises(CommandError, match="There is no user with the code “NOBODY”"):
        _sender("show", "NOBODY")


def test_show_a_broken_configuration_says_why(stored_password):
    """S6.2 without a global server: the reason, as text and as JSON, and still no secret."""
    bob = factories.user("BOB")
    factories.profile(bob, login="bob", password=stored_password)
    out = io.StringIO()

    with pytest.raises(CommandError, match="the global configuration has no SMTP server"):
        call_command("sender", "show", "BOB", "--json", stdout=out)

    data = json.loads(out.getvalue())
    assert data["error"] == "no_global_server"
    assert stored_password not in out.getvalue()


# -- set: what is accepted ----------------------------------------------------------------------


def test_set_reads_the_password_from_stdin(anna, monkeypatch):
    new_password = factories.secret()

    out = _sender(
        "set", "ANNA", "--server", "SMTP.Gmail.com:465", "--security", "ssl",
        "--login", "anna@gmail.com", "--password-stdin",
        stdin=f"{new_password}\n", monkeypatch=monkeypatch,
    )  # fmt: skip

    assert "Saved the sender of ANNA." in out
    assert new_password not in out
    profile = SenderProfile.objects.get(user=anna)
    assert (profile.host, profile.port, profile.security) == ("smtp.gmail.com", 465, "ssl")
    assert new_password not in profile.password_encrypted
    assert crypto.decrypt(profile.password_encrypted) == new_password


def test_set_removes_the_spaces_of_an_app_password(anna, monkeypatch):
    letters = "".join(secrets.choice(string.ascii_lowercase) for _ in range(16))
    shown = " ".join(letters[i : i + 4] for i in range(0, 16, 4))

    _sender("set", "ANNA", "--password-stdin", stdin=f"{shown}\r\n", monkeypatch=monkeypatch)

    assert crypto.decrypt(SenderProfile.objects.get(user=anna).password_encrypted) == letters


def test_set_without_password_keeps_the_stored_one_for_the_same_server(anna, stored_password):
    ciphertext = anna.sender_profile.password_encrypted

    _sender("set", "ANNA", "--rate-limit", "30")

    profile = SenderProfile.objects.get(user=anna)
    assert (profile.rate_limit, profile.password_encrypted) == (30, ciphertext)


def test_set_another_server_without_password_asks_for_it_and_changes_nothing(anna, stored_password):
    """Issue 11: a stored password is sent only to the server it was entered for. (This test
    used to assert the opposite: a blank password kept the stored one for the new server.)"""
    before = factories.db_rows()

    with pytest.raises(CommandError, match="enter the password again"):
        _sender("set", "ANNA", "--server", "smtp.acme.test:25")

    assert factories.db_rows() == before


def test_set_clear_password_with_the_login(anna):
    _sender("set", "ANNA", "--login", "", "--clear-password")

    profile = SenderProfile.objects.get(user=anna)
    assert (profile.login, profile.password_encrypted) == ("", "")


def test_set_a_rate_limit_and_clear_it(anna):
    _sender("set", "ANNA", "--rate-limit", "45")
    assert json.loads(_sender("show", "ANNA", "--json"))["rate_limit"] == 45

    _sender("set", "ANNA", "--login", "anna2@acme.test")  # other changes keep it
    assert SenderProfile.objects.get(user=anna).rate_limit == 45

    _sender("set", "ANNA", "--rate-limit", "")
    assert SenderProfile.objects.get(user=anna).rate_limit is None


def test_set_mode_google_then_show_says_it_is_not_connected_yet(anna):
    _sender("set", "ANNA", "--mode", "google", "--login", "anna@acme.test")
    profile = SenderProfile.objects.get(user=anna)
    assert (profile.mode, profile.login) == ("google", "anna@acme.test")
    shown = json.loads(_sender("show", "ANNA", "--json"))
    assert (shown["mode"], shown["transport"]) == ("google", "google")
    assert shown["password_set"] is False and shown["mass_mailing_allowed"] is False


def test_set_global_and_the_mail_sending_user(anna, monkeypatch):
    relay_password = factories.secret()
    _sender(
        "set", "--global", "--mode", "smtp", "--server", "relay.acme.test:587",
        "--security", "starttls", "--login", "relay", "--password-stdin",
        stdin=relay_password, monkeypatch=monkeypatch,
    )  # fmt: skip
    _sender("set", "--global", "--mail-sending-user", "ANNA")

    profile = SenderProfile.objects.get(user__isnull=True)
    assert (profile.host, profile.port, profile.login) == ("relay.acme.test", 587, "relay")
    assert crypto.decrypt(profile.password_encrypted) == relay_password
    assert SystemSettings.objects.get().mail_sending_user == anna

    _sender("set", "--global", "--mail-sending-user", "")
    assert SystemSettings.objects.get().mail_sending_user is None


# -- set: what is refused, changing nothing -----------------------------------------------------

BAD_SETS = [
    pytest.param(
        ["ANNA", "--server", "smtp.acme.test"], None,
        "Mail server and port: Enter the server and its port as host:port",
        id="server-without-port",
    ),
    pytest.param(
        ["ANNA", "--server", "smtp.acme.test:2525"], "SECRET",
        "Mail server and port: Port 2525 is not allowed. Use one of: 25, 465, 587.",
        id="port-not-allowed",
    ),
    pytest.param(
        ["ANNA", "--server=-x.test:25"], None, "“-x.test” is not a valid server name.",
        id="bad-host",
    ),
    pytest.param(
        ["ANNA", "--server", "smtp.acme.test:465", "--security", "starttls"], None,
        "SSL/TLS: Port 465 expects SSL", id="465-with-starttls",
    ),
    pytest.param(
        ["ANNA", "--security", "ssl"], None, "SSL/TLS: Port 587 expects StartTLS",
        id="587-with-ssl",
    ),
    pytest.param(
        ["ANNA", "--clear-password"], None,
        "Password: Enter the password for this user name, or leave the user name empty",
        id="login-without-password",
    ),
    pytest.param(
        ["ANNA", "--login", "", "--password-stdin"], "SECRET",
        "User name: Enter the user name that goes with this password.",
        id="password-without-login",
    ),
    pytest.param(
        ["ANNA", "--server", "smtp.office365.com:587", "--password-stdin"], "SECRET",
        "Password: Microsoft 365 no longer accepts a password for sending mail",
        id="password-for-office365",
    ),
    pytest.param(
        ["ANNA", "--mode", "microsoft365", "--password-stdin"], "SECRET",
        "Password: Microsoft 365 OAUTH uses no password.", id="password-with-microsoft365",
    ),
    pytest.param(
        ["ANNA", "--mode", "google", "--password-stdin"], "SECRET",
        "Password: Google OAUTH uses no password.", id="password-with-google",
    ),
    pytest.param(
        ["--global", "--mode", "google"], None,
        "Mail sender: Select a valid choice. google is not one of the available choices.",
        id="global-google",
    ),
    pytest.param(
        ["ANNA", "--server", ""], None,
        "Enter the server. Without one, the server comes from the global configuration",
        id="login-only-without-global-server",
    ),
    pytest.param(
        ["ANNA", "--password-stdin"], "SECRET\tx",
        "Password: This field may not contain line breaks or control characters.",
        id="password-with-tab",
    ),
    pytest.param(
        ["ANNA", "--password-stdin"], "", "No password was given on standard input.",
        id="empty-stdin",
    ),
    pytest.param(["ANNA", "--mode", "bogus"], None, "invalid choice: 'bogus'", id="bad-mode"),
    pytest.param(
        ["ANNA", "--security", "tls"], None, "invalid choice: 'tls'", id="bad-security"
    ),
    pytest.param(
        ["NOBODY", "--mode", "default"], None, "There is no user with the code “NOBODY”.",
        id="unknown-user",
    ),
    pytest.param(
        ["ANNA", "--mail-sending-user", "ANNA"], None,
        "--mail-sending-user goes with --global.", id="mail-sending-user-without-global",
    ),
    pytest.param(
        ["ANNA", "--global"], None, "not allowed with argument", id="user-and-global",
    ),
    pytest.param(
        ["--global", "--mode", "microsoft365"], None,
        "Mail sender: Select a valid choice. microsoft365 is not one of the available choices.",
        id="global-microsoft365",
    ),
    pytest.param(
        ["--global", "--mode", "smtp", "--server", "", "--login", "x", "--password-stdin"],
        "SECRET", "this configuration is the one others inherit", id="global-without-server",
    ),
    pytest.param(
        ["--global", "--mail-sending-user", "BOB"], None,
        "BOB has the Default mail sender and so inherits the global configuration.",
        id="mail-sending-user-inherits",
    ),
    pytest.param(
        ["--global", "--mail-sending-user", "NOBODY"], None, "Select a valid choice.",
        id="mail-sending-user-unknown",
    ),
    pytest.param(["ANNA", "--rate-limit", "fast"], None, "Enter a whole number.", id="rate-text"),
    pytest.param(
        ["ANNA", "--rate-limit", "-5"], None, "greater than or equal to 1", id="rate-negative"
    ),
]  # fmt: skip


@pytest.mark.parametrize(("args", "stdin", "message"), BAD_SETS)
def test_bad_set_says_why_and_changes_nothing(anna, monkeypatch, args, stdin, message):
    factories.user("BOB")  # inherits: Default, no profile
    typed = factories.secret()
    stdin = None if stdin is None else stdin.replace("SECRET", typed) + "\n"
    before = factories.db_rows()
    out = io.StringIO()
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))

    with pytest.raises(CommandError) as refused:
        call_command("sender", "set", *args, stdout=out, stderr=out)

    assert message in str(refused.value)
    assert typed not in str(refused.value) + out.getvalue()
    assert factories.db_rows() == before


@pytest.fixture
def login_only_bob(anna) -> User:
    """S6.2: BOB gives login and password; his server comes from the mail sending user ANNA."""
    bob = factories.user("BOB")
    factories.profile(bob, login="bob", password=factories.secret())
    factories.mail_sending_user(anna)
    return bob


@pytest.mark.parametrize(
    "args",
    [
        ["--global", "--mail-sending-user", ""],
        ["--global", "--mail-sending-user", "EWA"],
        ["ANNA", "--mode", "reply_to"],
        ["ANNA", "--mode", "default"],
    ],
    ids=["clear", "reply-to-user", "own-card-reply-to", "own-card-default"],
)
def test_login_only_users_keep_their_server(login_only_bob, args):
    factories.profile(factories.user("EWA"), mode=SenderMode.REPLY_TO)
    before = factories.db_rows()

    with pytest.raises(CommandError) as refused:
        _sender("set", *args)

    assert any(
        text in str(refused.value)
        for text in [
            "take the server from the global configuration: BOB",
            "You are the company's mail sending user",
        ]
    )
    assert factories.db_rows() == before


# -- the real command line ----------------------------------------------------------------------


def test_command_line_exit_codes_and_no_password_echoed(tmp_path: Path):
    """One real process: password on stdin, exit status, and a file database to look into."""
    database = tmp_path / "db.sqlite3"
    key = Fernet.generate_key().decode()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "FIELD_ENCRYPTION_KEYS": key,
        "DJANGO_SETTINGS_MODULE": "directo_mail.settings",
    }
    python = str(Path(sys.executable))

    def manage(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, "manage.py", *args],
            cwd=settings.BASE_DIR,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stored() -> list[tuple]:
        with sqlite3.connect(database) as db:
            return db.execute(
                "SELECT user_id, mode, host, port, security, login, password_encrypted "
                "FROM smtp_settings_senderprofile"
            ).fetchall()

    migrated = manage("migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    password = factories.secret()
    common = ["sender", "set", "--global", "--mode", "smtp", "--login", "relay@acme.test"]

    saved = manage(
        *common, "--server", "relay.acme.test:587", "--security", "starttls",
        "--password-stdin", stdin=f"{password}\n",
    )  # fmt: skip

    assert saved.returncode == 0, saved.stderr
    assert "Saved the sender of global." in saved.stdout
    assert password not in saved.stdout + saved.stderr
    [row] = stored()
    assert row[:6] == (None, "smtp", "relay.acme.test", 587, "starttls", "relay@acme.test")
    assert password not in row[6]
    with override_settings(FIELD_ENCRYPTION_KEYS=[key]):
        assert crypto.decrypt(row[6]) == password

    other_password = factories.secret()
    refused = manage(
        *common, "--server", "relay.acme.test:2525", "--security", "starttls",
        "--password-stdin", stdin=f"{other_password}\n",
    )  # fmt: skip

    assert refused.returncode != 0
    assert "Port 2525 is not allowed. Use one of: 25, 465, 587." in refused.stderr
    assert other_password not in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert stored() == [row]


def test_a_user_code_with_a_nul_is_just_unknown():
    """PostgreSQL refuses NUL in a query: the command says "no such user" instead."""
    with pytest.raises(CommandError, match="There is no user with the code"):
        call_command("sender", "show", "AN\x00NA", stdout=io.StringIO())
