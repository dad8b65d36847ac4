"""The system settings page (S2.1, S6): staff only; bad input gets its message, changes nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape

from accounts.models import Company, User
from smtp_settings import crypto
from smtp_settings.models import Security, SenderMode, SenderProfile, SystemSettings
from tests import factories

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("english")]

URL = "/settings/system/"
NOTHING_SAVED = "Nothing was saved: please correct the fields marked below."


def _assert_shows(response, message: str) -> None:
    assert escape(message) in response.content.decode(), message


@pytest.fixture
def relay_password() -> str:
    return factories.secret()


@pytest.fixture
def setup(relay_password) -> None:
    """A company, a global SMTP sender, and BOB, who gives only login and password (S6.2)."""
    factories.company()
    factories.profile(
        None,
        host="relay.acme.test",
        port=465,
        security=Security.SSL,
        login="relay@acme.test",
        password=relay_password,
    )
    factories.profile(factories.user("BOB"), login="bob", password=factories.secret())
    factories.mail_sending_user(None)


@pytest.fixture
def admin(client, setup) -> User:
    user = factories.user("ADMIN", is_staff=True)
    client.force_login(user)
    return user


def _post_data(**fields) -> dict:
    data = {
        "company_name": "Acme Sp. z o.o.",
        "company_slug": "acme",
        "mail_sending_user": "",
        "global-mode": SenderMode.SMTP,
        "global-server": "relay.acme.test:465",
        "global-security": Security.SSL,
        "global-login": "relay@acme.test",
        "global-password": "",
    }
    data.update(fields)
    return data


# -- who may see it -----------------------------------------------------------------------------


def test_anonymous_is_sent_to_login(client):
    response = client.get(URL)

    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={URL}"


def test_non_staff_is_forbidden(client, setup):
    client.force_login(factories.user("ANNA"))
    before = factories.db_rows()

    assert client.get(URL).status_code == 403
    assert client.post(URL, _post_data(**{"global-mode": SenderMode.DEFAULT})).status_code == 403
    assert factories.db_rows() == before


def test_anonymous_post_changes_nothing(client, setup):
    before = factories.db_rows()

    response = client.post(URL, _post_data(company_slug="other"))

    assert response.status_code == 302
    assert factories.db_rows() == before


def test_staff_sees_the_page_without_the_password(client, admin, relay_password):
    response = client.get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert relay_password not in html
    assert SenderProfile.objects.get(user=None).password_encrypted not in html
    assert 'value="relay.acme.test:465"' in html
    assert "BOB" in html  # the login-only users are listed


# -- what is accepted ---------------------------------------------------------------------------


def test_good_post_saves_everything(client, admin, relay_password):
    factories.profile(
        factories.user("MAIL"), host="mx.acme.test", port=25, security=Security.STARTTLS
    )
    new_password = factories.secret()

    response = client.post(
        URL,
        _post_data(
            company_name="Acme S.A.",
            company_slug="acme-sa",
            mail_sending_user="MAIL",
            **{
                "global-server": "Relay2.Acme.test:587",
                "global-security": Security.STARTTLS,
                "global-password": new_password,
            },
        ),
    )

    assert response.status_code == 302
    company = Company.objects.get()
    assert (company.name, company.slug) == ("Acme S.A.", "acme-sa")
    assert SystemSettings.objects.get().mail_sending_user.code == "MAIL"
    profile = SenderProfile.objects.get(user=None)
    assert (profile.host, profile.port) == ("relay2.acme.test", 587)
    assert crypto.decrypt(profile.password_encrypted) == new_password
    assert new_password not in client.get(URL).content.decode()


def test_blank_password_keeps_and_clear_removes(client, admin, relay_password):
    ciphertext = SenderProfile.objects.get(user=None).password_encrypted

    assert client.post(URL, _post_data()).status_code == 302
    assert SenderProfile.objects.get(user=None).password_encrypted == ciphertext

    response = client.post(URL, _post_data(**{"global-login": "", "global-clear_password": "on"}))
    assert response.status_code == 302
    assert SenderProfile.objects.get(user=None).password_encrypted == ""


def test_global_default_is_fine_when_nobody_needs_its_server(client, admin):
    SenderProfile.objects.filter(user__code="BOB").delete()

    response = client.post(URL, _post_data(**{"global-mode": SenderMode.DEFAULT}))

    assert response.status_code == 302
    profile = SenderProfile.objects.get(user=None)
    assert profile.mode == SenderMode.DEFAULT
    assert profile.host == "relay.acme.test"  # kept, for when SMTP comes back


# -- what is refused ----------------------------------------------------------------------------

BOB_NEEDS_A_SERVER = (
    "These users give only a login and password and take the server from the global "
    "configuration: BOB. Keep an SMTP server here, or change their cards first."
)

BAD_INPUTS = [
    pytest.param({"company_name": ""}, "This field is required.", id="no-company-name"),
    pytest.param(
        {"company_name": "Acme\r\nBcc: spy@evil.test"},
        "This field may not contain line breaks or control characters.",
        id="company-name-with-crlf",
    ),
    pytest.param(
        {"company_slug": "Acme Inc"},
        "Use lowercase letters, digits and dashes; it becomes the local part of an address.",
        id="bad-slug",
    ),
    pytest.param(
        {"company_slug": "-acme"},
        "Use lowercase letters, digits and dashes; it becomes the local part of an address.",
        id="slug-with-leading-dash",
    ),
    pytest.param(
        {"mail_sending_user": "INHERITS"},
        "INHERITS has the Default mail sender and so inherits the global configuration. "
        "Give INHERITS a sender of their own first.",
        id="mail-sending-user-without-profile",
    ),
    pytest.param(
        {"mail_sending_user": "DEFAULT"},
        "DEFAULT has the Default mail sender and so inherits the global configuration.",
        id="mail-sending-user-with-default",
    ),
    pytest.param(
        {"mail_sending_user": "BOB"},
        "BOB has no SMTP server of their own. Enter one on their card first.",
        id="mail-sending-user-login-only",
    ),
    pytest.param(
        {"mail_sending_user": "NOBODY"},
        "Select a valid choice. That choice is not one of the available choices.",
        id="mail-sending-user-unknown",
    ),
    pytest.param(
        {"mail_sending_user": "REPLYTO"}, BOB_NEEDS_A_SERVER, id="mail-sending-user-no-server"
    ),
    pytest.param({"global-mode": SenderMode.DEFAULT}, BOB_NEEDS_A_SERVER, id="global-default"),
    pytest.param({"global-mode": SenderMode.REPLY_TO}, BOB_NEEDS_A_SERVER, id="global-reply-to"),
    pytest.param(
        {"global-mode": SenderMode.MICROSOFT365},
        "Select a valid choice. microsoft365 is not one of the available choices.",
        id="global-microsoft365",
    ),
    pytest.param({"global-mode": ""}, "This field is required.", id="global-no-mode"),
    pytest.param(
        {"global-server": "", "global-password": "SECRET"},
        "Enter the server: this configuration is the one others inherit, so it must have a "
        "server of its own.",
        id="global-login-only",
    ),
    pytest.param(
        {"global-server": "relay.acme.test"},
        "Enter the server and its port as host:port, for example smtp.gmail.com:465.",
        id="global-server-without-port",
    ),
    pytest.param(
        {"global-server": "relay.acme.test:2525", "global-password": "SECRET"},
        "Port 2525 is not allowed. Use one of: 25, 465, 587.",
        id="global-port-not-allowed",
    ),
    pytest.param(
        {"global-server": "relay.acme.test:587"},
        "Port 587 expects StartTLS: the connection starts unencrypted and switches to TLS.",
        id="global-587-with-ssl",
    ),
    pytest.param(
        {"global-security": Security.STARTTLS},
        "Port 465 expects SSL: the connection is encrypted from the first byte.",
        id="global-465-with-starttls",
    ),
    pytest.param(
        {"global-clear_password": "on"},
        "Enter the password for this user name, or leave the user name empty if the server "
        "needs no authentication.",
        id="global-login-without-password",
    ),
    pytest.param(
        {
            "global-server": "smtp.office365.com:587",
            "global-security": Security.STARTTLS,
            "global-password": "SECRET",
        },
        "Microsoft 365 no longer accepts a password for sending mail (basic authentication "
        "was retired in April 2026).",
        id="global-password-for-office365",
    ),
]


@pytest.mark.parametrize(("fields", "message"), BAD_INPUTS)
def test_bad_input_gets_its_message_and_changes_nothing(client, admin, fields, message):
    factories.user("INHERITS")
    factories.profile(factories.user("DEFAULT"), mode=SenderMode.DEFAULT)
    factories.profile(factories.user("REPLYTO"), mode=SenderMode.REPLY_TO)
    typed = factories.secret()
    fields = {k: v.replace("SECRET", typed) for k, v in fields.items()}
    before = factories.db_rows()

    response = client.post(URL, _post_data(**fields))

    assert response.status_code == 200
    _assert_shows(response, message)
    _assert_shows(response, NOTHING_SAVED)
    assert typed not in response.content.decode()
    assert factories.db_rows() == before


def test_clearing_the_mail_sending_user_keeps_login_only_users_served(client, admin):
    """BOB's server comes from MAIL; clearing MAIL with a Default global would strand him."""
    factories.profile(
        factories.user("MAIL"), host="mx.acme.test", port=25, security=Security.STARTTLS
    )
    SenderProfile.objects.filter(user=None).update(mode=SenderMode.DEFAULT)
    factories.mail_sending_user(User.objects.get(code="MAIL"))
    before = factories.db_rows()

    response = client.post(
        URL, _post_data(mail_sending_user="", **{"global-mode": SenderMode.DEFAULT})
    )

    assert response.status_code == 200
    _assert_shows(response, BOB_NEEDS_A_SERVER)
    assert factories.db_rows() == before
