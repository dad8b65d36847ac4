"""A secret is bound to where it was entered (issue 11, item 5), and AUTH in clear needs a
confirmation for that very server.

The attacker's goal in each test: a stored password reaches a server it was not entered for
(here another aiosmtpd server of the session, which knows the password and so counts an AUTH
carrying it as a success), or crosses the network unencrypted. Each test asserts that goal
fails, and a control shows the same detector firing when the password does go there.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from outbox.models import Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue, outbox_send
from smtp_settings import crypto
from smtp_settings.diagnose import connection_test
from smtp_settings.errors import PermanentSendError
from smtp_settings.models import OAuthConnection, Security, SenderMode, SenderProfile
from smtp_settings.resolve import SenderConfig
from smtp_settings.selectors import sender_config_for
from smtp_settings.services import mail_sending_user_set, profile_update
from smtp_settings.transports import SmtpTransport
from tests import factories

pytestmark = pytest.mark.usefixtures("english")

LOGIN = "anna@acme.example"
CARD_URL = "/accounts/card/"


def _server_of(server) -> dict:
    return {"host": server.host, "port": server.port}


def _anna(legit, password: str, security: str = Security.SSL):
    user = factories.user("ANNA", name="Anna Kowalska", email=LOGIN)
    factories.profile(user, **_server_of(legit), security=security, login=LOGIN, password=password)
    return user


def _stolen(server, password: str) -> int:
    """AUTH attempts at `server` that carried `password` (the server knows it: a success)."""
    return sum(
        1 for a in server.auth_attempts if a.success and server.users.get(a.login) == password
    )


def _send(user) -> OutgoingMessage:
    message = outbox_enqueue(user=user, to=["client@example.com"], subject="x", body_text="x")
    outbox_send(message_id=message.pk)
    message.refresh_from_db()
    return message


# -- the transport: where the secret is decrypted ---------------------------------------------


def test_a_password_moved_to_another_server_behind_the_forms_back_is_not_sent(
    db, smtp_servers, django_capture_on_commit_callbacks
):
    """The admin page (or any write) can change the host without the password: the connection
    test and the worker refuse, with the explanation, and the other server sees no AUTH."""
    legit, attacker = smtp_servers.implicit_tls, smtp_servers.starttls_optional
    password = factories.secret()
    legit.users[LOGIN] = attacker.users[LOGIN] = password
    anna = _anna(legit, password)

    control = connection_test(sender_config_for(user=anna), to=LOGIN)
    assert control.passed, control.as_dict()
    assert _stolen(legit, password) == 1  # the detector sees a password arrive

    SenderProfile.objects.filter(user=anna).update(
        **_server_of(attacker), security=Security.STARTTLS
    )
    result = connection_test(sender_config_for(user=anna), to=LOGIN)
    assert not result.passed
    assert "entered for another server" in result.config_error
    with django_capture_on_commit_callbacks():
        message = _send(anna)
    assert message.state == MessageState.FAILED
    assert message.explanation == "password_bound_elsewhere"
    assert Event.objects.filter(message=message, explanation="password_bound_elsewhere").exists()
    assert attacker.auth_attempts == [] and _stolen(attacker, password) == 0


def test_a_snapshot_taken_for_another_server_cannot_carry_the_password_there(db, smtp_servers):
    """A queued message's sender snapshot names its server; the binding read at send time
    decides, so a snapshot made while the server pointed elsewhere sends nothing there."""
    legit, attacker = smtp_servers.implicit_tls, smtp_servers.starttls_optional
    password = factories.secret()
    attacker.users[LOGIN] = password
    anna = _anna(legit, password)
    good = sender_config_for(user=anna)
    forged = SenderConfig.from_snapshot(
        {**good.to_snapshot(), **_server_of(attacker), "security": Security.STARTTLS}
    )

    from smtp_settings.transports import transport_for

    with pytest.raises(PermanentSendError) as refused:
        transport_for(forged)
    assert refused.value.explanation == "password_bound_elsewhere"
    assert attacker.auth_attempts == []


def test_the_snapshot_keeps_the_binding_and_an_old_one_has_none(db, smtp_servers):
    legit = smtp_servers.implicit_tls
    anna = _anna(legit, factories.secret())
    config = sender_config_for(user=anna)
    assert config.secret_server == (legit.host, legit.port, Security.SSL) and config.secret_bound

    assert SenderConfig.from_snapshot(config.to_snapshot()) == config
    old = {k: v for k, v in config.to_snapshot().items() if k != "secret_server"}
    assert SenderConfig.from_snapshot(old).secret_server is None


def test_a_microsoft365_token_goes_only_to_the_server_it_was_connected_for(db, settings):
    """Checked before the token cache is even decrypted: a garbage cache shows which came first."""
    from smtp_settings.providers.microsoft365.oauth import access_token

    user = factories.user("MARTA")
    OAuthConnection.objects.create(
        user=user,
        provider="microsoft365",
        address="marta@acme.example",
        account_id="x",
        token_encrypted="not a ciphertext",
        smtp_host="smtp.office365.com",
        smtp_port=587,
    )
    with pytest.raises(PermanentSendError) as refused:
        access_token(user_id=user.pk, server=("smtp.attacker.example", 587))
    assert refused.value.explanation == "password_bound_elsewhere"
    # The right server gets past the binding, to the decryption (which then fails here).
    with pytest.raises(crypto.SecretDecryptionError):
        access_token(user_id=user.pk, server=("smtp.office365.com", 587))


# -- the forms: a changed server asks for the password again ----------------------------------


def _card_post(**fields) -> dict:
    data = {
        "name": "Anna Kowalska",
        "email": LOGIN,
        "mode": SenderMode.SMTP,
        "login": LOGIN,
        "password": "",
    }
    data.update(fields)
    return data


REENTER = "The server, port or SSL/TLS has changed: enter the password again."


def test_staff_cannot_point_a_users_password_at_another_server(db, smtp_servers):
    legit, attacker = smtp_servers.implicit_tls, smtp_servers.starttls_optional
    anna = _anna(legit, factories.secret())
    staff = factories.user("ADMIN", is_staff=True)
    client = Client()
    client.force_login(staff)
    before = factories.db_rows()

    for change in [
        {"server": f"{attacker.host}:{attacker.port}", "security": Security.STARTTLS},
        {"server": f"{legit.host}:{legit.port}", "security": Security.NONE},
        {"server": f"localhost:{legit.port}", "security": Security.SSL},
    ]:
        response = client.post(f"{CARD_URL}{anna.code}/", _card_post(**change))
        assert response.status_code == 200
        assert REENTER in response.content.decode()
    assert factories.db_rows() == before


def test_a_new_password_is_bound_to_the_new_server(db, smtp_servers):
    legit, other = smtp_servers.implicit_tls, smtp_servers.starttls_optional
    anna = _anna(legit, factories.secret())
    client = Client()
    client.force_login(anna)
    new = factories.secret()

    response = client.post(
        CARD_URL,
        _card_post(server=f"{other.host}:{other.port}", security=Security.STARTTLS, password=new),
    )

    assert response.status_code == 302
    profile = SenderProfile.objects.get(user=anna)
    assert profile.password_server == (other.host, other.port, Security.STARTTLS)
    assert crypto.decrypt(profile.password_encrypted) == new


def test_the_system_settings_ask_for_the_global_password_again(db, smtp_servers, admin_client):
    legit, attacker = smtp_servers.implicit_tls, smtp_servers.starttls_optional
    factories.company()
    factories.profile(
        None, **_server_of(legit), login="office@acme.example", password=factories.secret()
    )
    before = factories.db_rows()

    response = admin_client.post(
        "/settings/system/",
        {
            "company_name": "Acme Sp. z o.o.",
            "company_slug": "acme",
            "mail_sending_user": "",
            "global-mode": SenderMode.SMTP,
            "global-server": f"{attacker.host}:{attacker.port}",
            "global-security": Security.STARTTLS,
            "global-login": "office@acme.example",
            "global-password": "",
        },
    )

    assert response.status_code == 200, response.get("Location")
    assert REENTER in response.content.decode()
    assert factories.db_rows() == before


def test_sender_set_asks_for_the_password_again(db, smtp_servers):
    legit, attacker = smtp_servers.implicit_tls, smtp_servers.starttls_optional
    _anna(legit, factories.secret())
    before = factories.db_rows()

    for args in [["--server", f"{attacker.host}:{attacker.port}"], ["--security", "none"]]:
        with pytest.raises(CommandError, match="enter the password again"):
            call_command("sender", "set", "ANNA", *args, stdout=io.StringIO())
    assert factories.db_rows() == before


# -- login-only users (S6.2): the inherited server moves --------------------------------------


def test_an_inherited_server_change_leaves_the_password_waiting_with_an_event(
    db, smtp_servers, django_capture_on_commit_callbacks
):
    legit, attacker = smtp_servers.implicit_tls, smtp_servers.starttls_optional
    factories.profile(None, **_server_of(legit), login="office@acme.example", password="x")
    lota = factories.user("LOTA", email="lota@acme.example")
    password = factories.secret()
    factories.profile(lota, login="lota@acme.example", password=password)  # bound to legit
    legit.users["lota@acme.example"] = attacker.users["lota@acme.example"] = password
    with django_capture_on_commit_callbacks():
        assert _send(lota).state == MessageState.SENT  # control: it works before
    assert _stolen(legit, password) == 1

    # The administrator moves the global server (with the global password, as asked).
    profile_update(
        user=None,
        mode=SenderMode.SMTP,
        **_server_of(attacker),
        security=Security.STARTTLS,
        login="office@acme.example",
        password=factories.secret(),
        password_server=(attacker.host, attacker.port, Security.STARTTLS),
    )

    [event] = Event.objects.filter(user=lota)
    assert (event.kind, event.explanation) == (EventKind.PASSWORD_REENTRY, "password_reentry")
    assert event.params == {"host": attacker.host, "port": attacker.port}
    config = sender_config_for(user=lota)
    assert (config.host, config.port, config.secret_bound) == (attacker.host, attacker.port, False)
    client = Client()
    client.force_login(lota)
    page = client.get(CARD_URL).content.decode()
    assert "The password was entered for another server" in page
    with django_capture_on_commit_callbacks():
        message = _send(lota)
    assert (message.state, message.explanation) == (
        MessageState.FAILED,
        "password_bound_elsewhere",
    )
    assert _stolen(attacker, password) == 0 and attacker.auth_attempts == []

    # Saving other card fields does not need the password; entering it binds it anew.
    response = client.post(
        CARD_URL, _card_post(email="lota@acme.example", login="lota@acme.example", server="")
    )
    assert response.status_code == 302
    new = factories.secret()
    attacker.users["lota@acme.example"] = new
    client.post(
        CARD_URL,
        _card_post(email="lota@acme.example", login="lota@acme.example", server="", password=new),
    )
    assert sender_config_for(user=lota).secret_bound
    with django_capture_on_commit_callbacks():
        assert _send(lota).state == MessageState.SENT
    assert _stolen(attacker, new) == 1  # the password entered for it, and only that one


def test_naming_another_mail_sending_user_tells_the_login_only_users(db, smtp_servers):
    legit, other = smtp_servers.implicit_tls, smtp_servers.starttls_optional
    first = factories.user("MSU1")
    factories.profile(first, **_server_of(legit), login="a@acme.example", password="x")
    second = factories.user("MSU2")
    factories.profile(
        second, **_server_of(other), security=Security.STARTTLS, login="b@acme.example"
    )
    mail_sending_user_set(user=first)
    lota = factories.user("LOTA")
    factories.profile(lota, login="lota@acme.example", password=factories.secret())
    bystander = factories.user("OWN")
    factories.profile(bystander, **_server_of(legit), login="own@acme.example", password="y")

    mail_sending_user_set(user=second)
    mail_sending_user_set(user=second)  # no change: no second Event

    assert list(Event.objects.values_list("user__code", "kind")) == [
        ("LOTA", EventKind.PASSWORD_REENTRY)
    ]


# -- AUTH over an unencrypted connection -------------------------------------------------------


def test_auth_in_clear_needs_a_confirmation_for_that_server(db, smtp_servers):
    plain = smtp_servers.plain
    anna = factories.user("ANNA", email=LOGIN)
    client = Client()
    client.force_login(anna)
    password = factories.secret()
    plain.users[LOGIN] = password
    fields = _card_post(
        server=f"{plain.host}:{plain.port}", security=Security.NONE, password=password
    )

    refused = client.post(CARD_URL, fields)
    assert refused.status_code == 200
    assert "the password would cross the network unencrypted" in refused.content.decode()
    assert not SenderProfile.objects.filter(user=anna).exists()

    assert client.post(CARD_URL, {**fields, "unencrypted_auth": "on"}).status_code == 302
    profile = SenderProfile.objects.get(user=anna)
    assert profile.password_unencrypted_ok
    assert "You confirmed that the password may be sent unencrypted" in (
        client.get(CARD_URL).content.decode()
    )
    # Saving again without re-ticking keeps the confirmation: it is for this very server.
    assert client.post(CARD_URL, {**fields, "password": ""}).status_code == 302
    result = connection_test(sender_config_for(user=anna), to=LOGIN)
    assert result.passed, result.as_dict()
    [attempt] = plain.auth_attempts
    assert (attempt.success, attempt.tls) == (True, False)


def test_the_transport_never_sends_auth_in_clear_unconfirmed(db, smtp_servers):
    """Whatever wrote the row (an old profile, the admin): no confirmation, no AUTH."""
    plain = smtp_servers.plain
    password = factories.secret()
    plain.users[LOGIN] = password
    anna = factories.user("ANNA", email=LOGIN)
    factories.profile(
        anna,
        **_server_of(plain),
        security=Security.NONE,
        login=LOGIN,
        password=password,
        password_unencrypted_ok=False,
    )

    result = connection_test(sender_config_for(user=anna), to=LOGIN)

    assert not result.passed
    [auth] = [step for step in result.steps if step.name == "auth"]
    assert auth.explanation["title"].startswith("The message was not sent: the password would")
    assert plain.auth_attempts == []
    # Control: the same transport, told the confirmation was given, does send AUTH in clear.
    with SmtpTransport(
        **_server_of(plain),
        security=Security.NONE,
        login=LOGIN,
        password=password,
        unencrypted_auth_ok=True,
    ):
        pass
    assert [(a.success, a.tls) for a in plain.auth_attempts] == [(True, False)]


def test_sender_set_needs_the_flag_for_auth_in_clear(db, smtp_servers, monkeypatch):
    plain = smtp_servers.plain
    factories.user("ANNA", email=LOGIN)
    args = ["sender", "set", "ANNA", "--mode", "smtp", "--server", f"{plain.host}:{plain.port}"]
    args += ["--security", "none", "--login", LOGIN, "--password-stdin"]

    monkeypatch.setattr("sys.stdin", io.StringIO(factories.secret() + "\n"))
    with pytest.raises(CommandError, match="unencrypted"):
        call_command(*args, stdout=io.StringIO())
    assert not SenderProfile.objects.exists()

    monkeypatch.setattr("sys.stdin", io.StringIO(factories.secret() + "\n"))
    call_command(*args, "--allow-unencrypted-auth", stdout=io.StringIO())
    profile = SenderProfile.objects.get()
    assert profile.password_unencrypted_ok
    assert profile.password_server == (plain.host, plain.port, Security.NONE)


# -- existing passwords are bound by the data migration ---------------------------------------


def test_the_migration_binds_existing_passwords_to_their_server_of_today(db):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("smtp_settings.migrations.0003_password_bound_to_server")
    msu = factories.user("MSU")
    own = factories.profile(
        msu, host="smtp.acme.example", port=587, security="starttls", login="m", password="x"
    )
    mail_sending_user_set(user=msu)
    lota = factories.user("LOTA")
    inherited = factories.profile(lota, login="l", password="y")
    nothing = factories.profile(None, mode=SenderMode.DEFAULT, login="g", password="z")
    SenderProfile.objects.update(password_host="", password_port=None, password_security="")

    migration.bind_existing_passwords(apps, None)

    own.refresh_from_db(), inherited.refresh_from_db(), nothing.refresh_from_db()
    assert own.password_server == ("smtp.acme.example", 587, "starttls")
    assert inherited.password_server == ("smtp.acme.example", 587, "starttls")
    assert nothing.password_server is None  # no server: it waits to be entered again
    assert not own.password_unencrypted_ok
