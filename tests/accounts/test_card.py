"""The card page (S2.2, S3): every bad input gets its message, never a 500, and changes nothing."""

from __future__ import annotations

import secrets
import string

import pytest
from django.urls import reverse
from django.utils import translation
from django.utils.html import escape

from accounts.models import User
from smtp_settings import crypto
from smtp_settings.models import Security, SenderMode, SenderProfile
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

CARD_URL = "/accounts/card/"
NOTHING_SAVED = "Nothing was saved: please correct the fields marked below."


def _html(response) -> str:
    return response.content.decode()


def _assert_shows(response, message: str) -> None:
    assert escape(message) in _html(response), message


@pytest.fixture
def stored_password() -> str:
    return factories.secret()


@pytest.fixture
def anna(client, stored_password) -> User:
    """A user with her own SMTP server, login and stored password, logged in."""
    user = factories.user("ANNA", name="Anna Kowalska", email="anna@acme.test")
    factories.profile(
        user,
        host="smtp.acme.test",
        port=587,
        security=Security.STARTTLS,
        login="anna@acme.test",
        password=stored_password,
    )
    client.force_login(user)
    return user


def _post_data(**fields) -> dict:
    """Anna's card as the page shows it; `fields` changes some of it."""
    data = {
        "name": "Anna Kowalska",
        "office_phone": "+48 22 000 00 00",
        "phone": "",
        "email": "anna@acme.test",
        "bcc": "",
        "reply_to": "",
        "signature": "Anna\n-- \nAcme",
        "mode": SenderMode.SMTP,
        "server": "smtp.acme.test:587",
        "security": Security.STARTTLS,
        "login": "anna@acme.test",
        "password": "",
    }
    data.update(fields)
    return data


# One row per bad input of point 5: the fields posted and the message the page must show.
BAD_INPUTS = [
    pytest.param(
        {"server": "smtp.acme.test"},
        "Enter the server and its port as host:port, for example smtp.gmail.com:465.",
        id="server-without-port",
    ),
    pytest.param(
        {"server": ":587"},
        "Enter the server and its port as host:port, for example smtp.gmail.com:465.",
        id="port-without-server",
    ),
    pytest.param(
        {"server": "smtp.acme.test:465\r\nX-Injected: y"},
        "Enter the server and its port as host:port, for example smtp.gmail.com:465.",
        id="server-with-crlf",
    ),
    pytest.param(
        {"server": "bad_host!:587"},
        "“bad_host!” is not a valid server name.",
        id="server-bad-host",
    ),
    pytest.param(
        {"server": "smtp.acme.test:2525"},
        "Port 2525 is not allowed. Use one of: 25, 465, 587.",
        id="port-not-allowed",
    ),
    pytest.param(
        {"server": "smtp.acme.test:70000"},
        "Port 70000 does not exist: a port is a number from 1 to 65535.",
        id="port-out-of-range",
    ),
    pytest.param(
        {"server": "smtp.acme.test:465", "security": Security.STARTTLS},
        "Port 465 expects SSL: the connection is encrypted from the first byte. Choose SSL, "
        "or use port 587 with StartTLS.",
        id="465-with-starttls",
    ),
    pytest.param(
        {"server": "smtp.acme.test:587", "security": Security.SSL},
        "Port 587 expects StartTLS: the connection starts unencrypted and switches to TLS. "
        "Choose StartTLS, or use port 465 with SSL.",
        id="587-with-ssl",
    ),
    pytest.param(
        {"server": "smtp.acme.test:25", "security": Security.SSL},
        "Port 25 expects StartTLS: the connection starts unencrypted and switches to TLS. "
        "Choose StartTLS, or use port 465 with SSL.",
        id="25-with-ssl",
    ),
    pytest.param(
        {"security": "tls"},
        "Select a valid choice. tls is not one of the available choices.",
        id="unknown-security",
    ),
    pytest.param(
        {"login": "anna@acme.test", "clear_password": "on"},
        "Enter the password for this user name, or leave the user name empty if the server "
        "needs no authentication.",
        id="login-without-password",
    ),
    pytest.param(
        {"login": "", "password": "SECRET"},
        "Enter the user name that goes with this password.",
        id="password-without-login",
    ),
    pytest.param(
        {"server": "smtp.office365.com:587", "password": "SECRET"},
        "Microsoft 365 no longer accepts a password for sending mail (basic authentication "
        "was retired in April 2026). Choose “Microsoft 365 OAUTH” as the mail sender and "
        "authenticate with Microsoft 365.",
        id="password-for-office365",
    ),
    pytest.param(
        {"server": "SMTP.Office365.com:587"},
        "Microsoft 365 no longer accepts a password for sending mail",
        id="stored-password-for-office365",
    ),
    pytest.param(
        {"mode": SenderMode.MICROSOFT365, "password": "SECRET"},
        "Microsoft 365 OAUTH uses no password. Save, then click “Authenticate with Microsoft 365”.",
        id="password-with-microsoft365",
    ),
    pytest.param(
        {"server": "", "password": "SECRET"},
        "Enter the server. Without one, the server comes from the global configuration, and "
        "it has no SMTP server.",
        id="login-only-without-global-server",
    ),
    pytest.param(
        {"server": "", "login": ""},
        "Enter the server as host:port, for example smtp.gmail.com:465.",
        id="smtp-without-anything",
    ),
    pytest.param(
        {"password": "SECRET\n"},
        "This field may not contain line breaks or control characters.",
        id="password-with-newline",
    ),
    pytest.param(
        {"login": "anna\r\nRCPT TO:<x@evil.test>", "password": "SECRET"},
        "This field may not contain line breaks or control characters.",
        id="login-with-crlf",
    ),
    pytest.param(
        {"mode": "bogus"},
        "Select a valid choice. bogus is not one of the available choices.",
        id="unknown-mode",
    ),
    pytest.param({"mode": ""}, "This field is required.", id="no-mode"),
    pytest.param(
        {"mode": SenderMode.REPLY_TO, "email": ""},
        "Directo-Reply-to needs the e-mail on your card: replies go there.",
        id="reply-to-without-email",
    ),
    # The card fields (S2.2): addresses and header-bound text.
    pytest.param(
        {"email": "anna(at)acme", "password": "SECRET"},
        "Enter a valid email address.",
        id="bad-email",
    ),
    pytest.param(
        {"bcc": "not an address", "password": "SECRET"},
        "Enter a valid email address.",
        id="bad-bcc",
    ),
    pytest.param(
        {"bcc": "boss@acme.test\r\nBcc: spy@evil.test"},
        "Enter a valid email address.",
        id="bcc-with-crlf",
    ),
    pytest.param({"reply_to": "anna@"}, "Enter a valid email address.", id="bad-reply-to"),
    pytest.param(
        {"reply_to": "a@acme.test, b@acme.test"},
        "Enter a valid email address.",
        id="two-reply-to",
    ),
    pytest.param(
        {"name": "Anna\r\nBcc: spy@evil.test", "password": "SECRET"},
        "This field may not contain line breaks or control characters.",
        id="name-with-crlf",
    ),
    pytest.param(
        {"name": "Anna\nKowalska"},
        "This field may not contain line breaks or control characters.",
        id="name-with-lf",
    ),
    pytest.param(
        {"office_phone": "+48\r\n22"},
        "This field may not contain line breaks or control characters.",
        id="phone-with-crlf",
    ),
    pytest.param(
        {"name": "A" * 151},
        "Ensure this value has at most 150 characters (it has 151).",
        id="name-too-long",
    ),
    pytest.param(
        {"mode": SenderMode.SMTP, "server": "smtp.acme.test:465", "rate_limit": "0"},
        "Ensure this value is greater than or equal to 1.",
        id="rate-limit-zero",
    ),
    pytest.param(
        {"mode": SenderMode.SMTP, "server": "smtp.acme.test:465", "rate_limit": "ten"},
        "Enter a whole number.",
        id="rate-limit-not-a-number",
    ),
    pytest.param(
        {"mode": SenderMode.SMTP, "server": "smtp.acme.test:465", "rate_limit": "1000001"},
        "Ensure this value is less than or equal to 100000.",
        id="rate-limit-too-high",
    ),
    pytest.param(
        {"signature": "x" * 5001},
        "Ensure this value has at most 5000 characters (it has 5001).",
        id="signature-too-long",
    ),
]


@pytest.mark.parametrize(("fields", "message"), BAD_INPUTS)
def test_bad_input_gets_its_message_and_changes_nothing(client, anna, fields, message):
    typed = factories.secret()
    fields = {k: v.replace("SECRET", typed) for k, v in fields.items()}
    before = factories.db_rows()

    response = client.post(CARD_URL, _post_data(**fields))

    assert response.status_code == 200
    _assert_shows(response, message)
    _assert_shows(response, NOTHING_SAVED)
    assert factories.db_rows() == before
    assert typed not in _html(response)


def test_the_mail_sending_user_cannot_inherit(client, anna):
    factories.mail_sending_user(anna)
    before = factories.db_rows()

    response = client.post(CARD_URL, _post_data(mode=SenderMode.DEFAULT))

    assert response.status_code == 200
    _assert_shows(response, "You are the company's mail sending user: everyone inherits your")
    assert factories.db_rows() == before


def test_the_mail_sending_user_keeps_a_server_for_login_only_users(client, anna):
    """S6.2: BOB takes his server from ANNA; she may not drop it from her card."""
    factories.mail_sending_user(anna)
    factories.profile(factories.user("BOB"), login="bob", password=factories.secret())
    before = factories.db_rows()

    response = client.post(CARD_URL, _post_data(mode=SenderMode.REPLY_TO))

    assert response.status_code == 200
    _assert_shows(
        response,
        "These users give only a login and password and take the server from the global "
        "configuration: BOB. Keep an SMTP server here, or change their cards first.",
    )
    assert factories.db_rows() == before


def test_a_new_user_with_a_login_and_no_password_is_refused(client):
    """The same rule with no profile row yet: none must be created."""
    user = factories.user("NEW")
    client.force_login(user)
    before = factories.db_rows()

    response = client.post(
        CARD_URL, _post_data(email="new@acme.test", login="new@acme.test", password="")
    )

    assert response.status_code == 200
    _assert_shows(response, "Enter the password for this user name")
    assert factories.db_rows() == before
    assert not SenderProfile.objects.filter(user=user).exists()


def test_a_bad_profile_keeps_a_good_card_change_unsaved(client, anna):
    """Card and mail sender are one form: half a save would surprise the user."""
    before = factories.db_rows()

    response = client.post(CARD_URL, _post_data(name="Anna Nowak", server="smtp.acme.test:2525"))

    assert response.status_code == 200
    assert factories.db_rows() == before
    # The page still shows what was typed, so nothing is lost.
    assert 'value="Anna Nowak"' in _html(response)


# -- the password (S3.4, S4.2) -----------------------------------------------------------------


def test_get_masks_the_password(client, anna, stored_password):
    response = client.get(CARD_URL)

    assert response.status_code == 200
    html = _html(response)
    assert stored_password not in html
    assert anna.sender_profile.password_encrypted not in html
    assert 'type="password" name="password"' in html
    assert "A password is stored." in html


def test_password_is_stored_encrypted_and_never_shown(client, anna):
    new_password = factories.secret()

    response = client.post(CARD_URL, _post_data(password=new_password))

    assert response.status_code == 302
    stored = SenderProfile.objects.get(user=anna).password_encrypted
    assert new_password not in stored
    assert crypto.decrypt(stored) == new_password
    page = client.get(response.url)
    assert page.status_code == 200
    assert new_password not in _html(page)
    assert stored not in _html(page)


def test_failed_post_does_not_render_the_typed_password(client, anna):
    typed = factories.secret()

    response = client.post(
        CARD_URL,
        _post_data(password=typed, server="smtp.acme.test:465"),  # 465 + StartTLS
    )

    assert response.status_code == 200
    _assert_shows(response, "Port 465 expects SSL")
    assert typed not in _html(response)


def test_blank_password_keeps_the_stored_one(client, anna, stored_password):
    ciphertext = SenderProfile.objects.get(user=anna).password_encrypted

    response = client.post(CARD_URL, _post_data(password="", server="SMTP.Acme.TEST:587"))

    assert response.status_code == 302
    profile = SenderProfile.objects.get(user=anna)
    assert (profile.host, profile.port) == ("smtp.acme.test", 587)
    assert profile.password_encrypted == ciphertext
    assert crypto.decrypt(profile.password_encrypted) == stored_password


@pytest.mark.parametrize(
    "change",
    [{"server": "smtp.acme.test:25"}, {"server": "evil.example:587"}, {"security": "none"}],
)
def test_blank_password_with_another_server_asks_for_it_again(client, anna, change):
    """Issue 11: the stored password goes only to the server it was entered for. (This test
    used to assert the opposite: a blank password kept the stored one for a new port.)"""
    before = factories.db_rows()

    response = client.post(CARD_URL, _post_data(password="", **change))

    assert response.status_code == 200
    assert "The server, port or SSL/TLS has changed: enter the password again." in _html(response)
    assert factories.db_rows() == before


def test_clear_password_removes_it(client, anna):
    response = client.post(CARD_URL, _post_data(login="", clear_password="on"))

    assert response.status_code == 302
    profile = SenderProfile.objects.get(user=anna)
    assert profile.password_encrypted == ""
    assert profile.login == ""
    assert "No password is stored." in _html(client.get(CARD_URL))


def test_app_password_is_stored_without_spaces(client, anna):
    letters = "".join(secrets.choice(string.ascii_lowercase) for _ in range(16))
    shown = " ".join(letters[i : i + 4] for i in range(0, 16, 4))  # as Google shows it

    response = client.post(
        CARD_URL,
        _post_data(
            server="smtp.gmail.com:465",
            security=Security.SSL,
            login="anna@gmail.com",
            password=shown,
        ),
    )

    assert response.status_code == 302
    stored = SenderProfile.objects.get(user=anna).password_encrypted
    assert crypto.decrypt(stored) == letters
    page = _html(client.get(CARD_URL))
    assert letters not in page
    assert shown not in page


def test_good_post_saves_card_and_sender(client, anna):
    response = client.post(
        CARD_URL,
        _post_data(
            name="Anna Nowak",
            bcc="archive@acme.test",
            reply_to="office@acme.test",
            server="[2a00:1450:4025:401::6c]:465",
            security=Security.SSL,
            password=factories.secret(),  # a new server needs its password again
        ),
    )

    assert response.status_code == 302
    anna.refresh_from_db()
    assert (anna.name, anna.bcc, anna.reply_to) == (
        "Anna Nowak",
        "archive@acme.test",
        "office@acme.test",
    )
    profile = SenderProfile.objects.get(user=anna)
    assert (profile.host, profile.port, profile.security) == (
        "2a00:1450:4025:401::6c",
        465,
        Security.SSL,
    )
    assert "[2a00:1450:4025:401::6c]:465" in _html(client.get(CARD_URL))


def test_a_rate_limit_is_saved_shown_and_cleared(client, anna):
    smtp = {"mode": SenderMode.SMTP, "server": "smtp.acme.test:587", "security": "starttls"}

    response = client.post(CARD_URL, _post_data(**smtp, rate_limit="120"))

    assert response.status_code == 302
    assert SenderProfile.objects.get(user=anna).rate_limit == 120
    page = _html(client.get(CARD_URL))
    assert 'name="rate_limit" value="120"' in page
    assert "at most 120 messages a minute" in page  # the effective sender says it too

    client.post(CARD_URL, _post_data(**smtp, rate_limit=""))
    assert SenderProfile.objects.get(user=anna).rate_limit is None


def test_the_card_needs_a_login(client):
    response = client.get(CARD_URL)

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_login_with_the_password_form_then_post(client):
    """The same through a real login rather than force_login."""
    factories.user("EWA", email="ewa@acme.test")
    # Through the login page: axes refuses client.login(), which passes no request.
    login = client.post(reverse("login"), {"username": "EWA", "password": factories.LOGIN_PASSWORD})
    assert login.status_code == 302
    before = factories.db_rows()

    response = client.post(CARD_URL, _post_data(email="ewa@acme.test", server="x:1"))

    assert response.status_code == 200
    _assert_shows(response, "Port 1 is not allowed")
    assert factories.db_rows() == before


# -- the user's language -----------------------------------------------------------------------


@pytest.fixture
def polish_anna(anna) -> User:
    User.objects.filter(pk=anna.pk).update(language="pl")
    return anna


@pytest.mark.parametrize(
    "fields",
    [
        {"server": "smtp.acme.test:2525"},
        {"server": "smtp.acme.test:465"},
        {"login": "anna@acme.test", "clear_password": "on"},
        {"server": "smtp.office365.com:587", "password": "SECRET"},
        {"bcc": "not an address"},
    ],
    ids=["port", "pairing", "no-password", "office365", "bcc"],
)
def test_polish_user_gets_a_page_and_nothing_changes(client, polish_anna, fields):
    typed = factories.secret()
    fields = {k: v.replace("SECRET", typed) for k, v in fields.items()}
    before = factories.db_rows()

    response = client.post(CARD_URL, _post_data(**fields))

    assert response.status_code == 200
    assert '<p class="error" role="alert">' in _html(response)
    assert factories.db_rows() == before
    assert typed not in _html(response)


def test_polish_user_gets_django_messages_in_polish(client, polish_anna):
    with translation.override("pl"):
        polish = translation.gettext("Enter a valid email address.")
    assert polish != "Enter a valid email address."

    response = client.post(CARD_URL, _post_data(reply_to="anna@"))

    assert response.status_code == 200
    _assert_shows(response, polish)
    assert "Enter a valid email address." not in _html(response)


def test_polish_user_gets_our_messages_in_polish(client, polish_anna):
    english = "Port %(port)s is not allowed. Use one of: %(allowed)s."
    with translation.override("pl"):
        polish = translation.gettext(english)
    assert polish != english
    polish %= {"port": 2525, "allowed": "25, 465, 587"}

    response = client.post(CARD_URL, _post_data(server="smtp.acme.test:2525"))

    assert response.status_code == 200
    _assert_shows(response, polish)
    assert "is not allowed. Use one of" not in _html(response)
