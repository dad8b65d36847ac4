"""SenderProfileForm and MailSendingUserForm: every rule of S3, S5.1 and S6 that refuses input."""

from __future__ import annotations

import secrets
import string

import pytest
from django.utils import translation

from smtp_settings.forms import (
    CompanyForm,
    MailSendingUserForm,
    SenderProfileForm,
    check_dependents_keep_server,
)
from smtp_settings.models import Security, SenderMode, SenderProfile
from tests import factories

pytestmark = pytest.mark.usefixtures("english")


def _app_password() -> str:
    """A Google app password as Google shows it: four groups of four letters (S4.2)."""
    letters = "".join(secrets.choice(string.ascii_lowercase) for _ in range(16))
    return " ".join(letters[i : i + 4] for i in range(0, 16, 4))


def _form(data: dict, profile: SenderProfile | None = None, **kwargs) -> SenderProfileForm:
    kwargs.setdefault("card_email", "anna@acme.test")
    return SenderProfileForm(data, profile=profile or SenderProfile(), **kwargs)


def _smtp(**fields) -> dict:
    data = {"mode": SenderMode.SMTP, "server": "smtp.acme.test:465", "security": Security.SSL}
    data.update(fields)
    return data


def _codes(form: SenderProfileForm, field: str) -> list[str | None]:
    return [error.code for error in form.errors.as_data().get(field, [])]


# -- host:port (S3.1) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "server", ["10.0.0.1:25", "127.0.0.1:587", "[::1]:587", "169.254.1.1:25", "[2001:db8::1]:465"]
)
def test_a_private_address_is_refused_unless_allowed(server, settings):
    settings.SMTP_ALLOW_PRIVATE_HOSTS = False
    form = _form(_smtp(server=server, security=Security.STARTTLS))
    assert not form.is_valid()
    assert _codes(form, "server") == ["server_private"]
    assert "private or local address" in form.errors["server"][0]

    settings.SMTP_ALLOW_PRIVATE_HOSTS = True
    port = int(server.rsplit(":", 1)[1])
    allowed = _form(
        _smtp(server=server, security=Security.SSL if port == 465 else Security.STARTTLS)
    )
    assert allowed.is_valid(), allowed.errors


@pytest.mark.parametrize(
    ("server", "host", "port", "security"),
    [
        ("smtp.gmail.com:465", "smtp.gmail.com", 465, Security.SSL),
        ("[2a00:1450:4025:401::6c]:587", "2a00:1450:4025:401::6c", 587, Security.STARTTLS),
        ("142.250.27.108:25", "142.250.27.108", 25, Security.STARTTLS),
        ("SMTP.Example.COM:587", "smtp.example.com", 587, Security.STARTTLS),
        ("  smtp.gmail.com:465  ", "smtp.gmail.com", 465, Security.SSL),
    ],
)
def test_good_server_is_split_and_lower_cased(server, host, port, security):
    form = _form(_smtp(server=server, security=security))

    assert form.is_valid(), form.errors
    assert form.cleaned_data["server"] == (host, port)
    assert form.profile_fields["host"] == host
    assert form.profile_fields["port"] == port


@pytest.mark.parametrize(
    ("server", "code", "message"),
    [
        ("smtp.gmail.com", "server_format", "Enter the server and its port as host:port"),
        (":465", "server_format", "Enter the server and its port as host:port"),
        ("smtp.gmail.com:", "server_format", "Enter the server and its port as host:port"),
        ("smtp.gmail.com:99999", "server_port_range", "Port 99999 does not exist"),
        ("smtp.gmail.com:0", "server_port_range", "Port 0 does not exist"),
        ("smtp.gmail.com:2525", "server_port", "Port 2525 is not allowed. Use one of: 25, 465"),
        ("bad host:25", "server_format", "Enter the server and its port as host:port"),
        ("-bad.example:25", "server_host", "“-bad.example” is not a valid server name."),
        ("smtp..x:25", "server_host", "“smtp..x” is not a valid server name."),
        ("1234:25", "server_host", "“1234” is not a valid server name."),
        ("http://smtp.gmail.com:465", "server_format", "Enter the server and its port"),
        ("smtp.gmail.com:465\r\nX: y", "server_format", "Enter the server and its port"),
        ("smtp.gmail.com:465:587", "server_format", "Enter the server and its port"),
        ("[abc]:587", "server_host", "“abc” is not a valid server name."),
        ("smtp.gmail.com:\u096a\u096c\u096b", "server_format", "Enter the server and its port"),
    ],
)
def test_bad_server_is_refused_with_its_reason(server, code, message):
    form = _form(_smtp(server=server, security=Security.STARTTLS))

    assert not form.is_valid()
    assert _codes(form, "server") == [code]
    assert message in form.errors["server"][0]


def test_allowed_ports_come_from_the_setting(settings):
    settings.SMTP_ALLOWED_PORTS = [2525]

    assert _form(_smtp(server="smtp.acme.test:2525")).is_valid()
    refused = _form(_smtp(server="smtp.acme.test:465"))
    assert not refused.is_valid()
    assert refused.errors["server"] == ["Port 465 is not allowed. Use one of: 2525."]


def test_server_is_not_parsed_for_other_modes():
    """Default, Reply-To and Microsoft 365 ignore the field and keep the stored server."""
    form = _form({"mode": SenderMode.DEFAULT, "server": "not a server", "security": "ssl"})

    assert form.is_valid(), form.errors
    assert form.profile_fields == {"mode": SenderMode.DEFAULT}


# -- SSL/TLS pairing (S3.2) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "security"),
    [
        (465, Security.SSL),
        (587, Security.STARTTLS),
        (25, Security.STARTTLS),
        (587, Security.NONE),
        (25, Security.NONE),
    ],
)
def test_usual_pairing_is_accepted(port, security):
    form = _form(_smtp(server=f"smtp.acme.test:{port}", security=security))

    assert form.is_valid(), form.errors
    assert form.profile_fields["security"] == security


@pytest.mark.parametrize(
    ("port", "security", "message"),
    [
        (465, Security.STARTTLS, "Port 465 expects SSL: the connection is encrypted from"),
        (465, Security.NONE, "Port 465 expects SSL"),
        (587, Security.SSL, "Port 587 expects StartTLS: the connection starts unencrypted"),
        (25, Security.SSL, "Port 25 expects StartTLS"),
    ],
)
def test_unusual_pairing_is_refused_with_the_usual_one(port, security, message):
    form = _form(_smtp(server=f"smtp.acme.test:{port}", security=security))

    assert not form.is_valid()
    assert _codes(form, "security") == ["security_pairing"]
    assert message in form.errors["security"][0]


def test_missing_security_means_ssl():
    assert _form(_smtp(server="smtp.acme.test:465", security="")).is_valid()
    refused = _form(_smtp(server="smtp.acme.test:587", security=""))
    assert not refused.is_valid()
    assert "Port 587 expects StartTLS" in refused.errors["security"][0]


def test_unknown_security_is_refused():
    form = _form(_smtp(security="tls"))

    assert not form.is_valid()
    assert "Select a valid choice" in form.errors["security"][0]


def test_a_port_without_usual_pairing_takes_any_security(settings):
    settings.SMTP_ALLOWED_PORTS = [25, 465, 587, 2525]
    for security in Security.values:
        assert _form(_smtp(server="smtp.acme.test:2525", security=security)).is_valid()


# -- login and password (S3.3, S3.4, S4.2, S5.1) ----------------------------------------------


def test_login_without_password_is_refused():
    form = _form(_smtp(login="anna@acme.test"))

    assert not form.is_valid()
    assert form.errors["password"] == [
        "Enter the password for this user name, or leave the user name empty if the server "
        "needs no authentication."
    ]


def test_login_keeps_a_stored_password_when_the_field_is_blank():
    stored = SenderProfile(
        password_encrypted="x",
        password_host="smtp.acme.test",
        password_port=465,
        password_security=Security.SSL,
    )
    form = _form(_smtp(login="anna@acme.test"), profile=stored)

    assert form.is_valid(), form.errors
    assert form.profile_fields["password"] == ""
    assert form.profile_fields["clear_password"] is False


def test_clearing_the_stored_password_while_keeping_the_login_is_refused():
    form = _form(
        _smtp(login="anna@acme.test", clear_password="on"),
        profile=SenderProfile(password_encrypted="x"),
    )

    assert not form.is_valid()
    assert "Enter the password for this user name" in form.errors["password"][0]


def test_clearing_the_password_with_the_login():
    form = _form(
        _smtp(login="", clear_password="on"), profile=SenderProfile(password_encrypted="x")
    )

    assert form.is_valid(), form.errors
    assert form.profile_fields["clear_password"] is True


def test_password_without_login_is_refused():
    form = _form(_smtp(password=factories.secret()))

    assert not form.is_valid()
    assert form.errors["login"] == ["Enter the user name that goes with this password."]


def test_app_password_loses_its_spaces():
    shown = _app_password()
    form = _form(_smtp(login="anna@gmail.com", password=shown))

    assert form.is_valid(), form.errors
    assert form.profile_fields["password"] == shown.replace(" ", "")
    assert len(form.profile_fields["password"]) == 16


def test_other_passwords_keep_their_spaces():
    password = f"{factories.secret()} {factories.secret()}"
    form = _form(_smtp(login="anna@acme.test", password=password))

    assert form.is_valid(), form.errors
    assert form.profile_fields["password"] == password


@pytest.mark.parametrize("bad", ["\n", "\r", "\x07", "\x7f"])
def test_password_and_login_refuse_control_characters(bad):
    form = _form(_smtp(login=f"anna{bad}x@acme.test", password=f"{factories.secret()}{bad}x"))

    assert not form.is_valid()
    message = "This field may not contain line breaks or control characters."
    assert message in form.errors["login"]
    assert message in form.errors["password"]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\t"])
def test_password_refuses_a_trailing_control_character(end):
    """The password is not stripped, so a pasted line end must be refused, not stored."""
    form = _form(_smtp(login="anna@acme.test", password=f"{factories.secret()}{end}"))

    assert not form.is_valid()
    assert form.errors["password"][0] == (
        "This field may not contain line breaks or control characters."
    )


@pytest.mark.parametrize(
    "host", ["smtp.office365.com", "SMTP.Office365.com", "smtp-mail.outlook.com"]
)
def test_password_for_microsoft_is_refused(host):
    form = _form(
        _smtp(server=f"{host}:587", security=Security.STARTTLS, login="a@b.test", password="x")
    )

    assert not form.is_valid()
    assert _codes(form, "password") == ["microsoft_basic_auth"]
    assert "Choose “Microsoft 365 OAUTH” as the mail sender" in form.errors["password"][0]


def test_stored_password_for_microsoft_is_refused_on_the_server():
    form = _form(
        _smtp(server="smtp.office365.com:587", security=Security.STARTTLS, login="a@b.test"),
        profile=SenderProfile(password_encrypted="x"),
    )

    assert not form.is_valid()
    assert _codes(form, "server") == ["microsoft_basic_auth"]


def test_microsoft365_mode_takes_no_password():
    form = _form(
        {"mode": SenderMode.MICROSOFT365, "login": "a@b.test", "password": factories.secret()}
    )

    assert not form.is_valid()
    assert "Microsoft 365 OAUTH uses no password" in form.errors["password"][0]


def test_microsoft365_mode_writes_only_the_login():
    form = _form({"mode": SenderMode.MICROSOFT365, "login": " a@b.test ", "server": "x"})

    assert form.is_valid(), form.errors
    assert form.profile_fields == {"mode": SenderMode.MICROSOFT365, "login": "a@b.test"}


def test_unknown_mode_is_refused():
    form = _form({"mode": "bogus"})

    assert not form.is_valid()
    assert form.errors["mode"] == [
        "Select a valid choice. bogus is not one of the available choices."
    ]


# -- S6.2: login and password only, server from the global configuration ----------------------


def test_login_only_takes_the_global_server_when_there_is_one():
    form = _form(
        _smtp(server="", login="anna", password=factories.secret()), global_has_server=True
    )

    assert form.is_valid(), form.errors
    assert (form.profile_fields["host"], form.profile_fields["port"]) == ("", None)


def test_login_only_is_refused_when_the_global_configuration_has_no_server():
    form = _form(
        _smtp(server="", login="anna", password=factories.secret()), global_has_server=False
    )

    assert not form.is_valid()
    assert form.errors["server"] == [
        "Enter the server. Without one, the server comes from the global configuration, and "
        "it has no SMTP server."
    ]


def test_login_only_still_needs_a_password():
    form = _form(_smtp(server="", login="anna"), global_has_server=True)

    assert not form.is_valid()
    assert "Enter the password for this user name" in form.errors["password"][0]


def test_smtp_with_neither_server_nor_login_is_refused():
    form = _form(_smtp(server=""), global_has_server=True)

    assert not form.is_valid()
    assert form.errors["server"] == [
        "Enter the server as host:port, for example smtp.gmail.com:465."
    ]


@pytest.mark.parametrize("who", [{"is_global": True}, {"is_mail_sending_user": True}])
def test_the_inherited_configuration_must_have_its_own_server(who):
    form = _form(
        _smtp(server="", login="anna", password=factories.secret()), global_has_server=True, **who
    )

    assert not form.is_valid()
    assert "this configuration is the one others inherit" in form.errors["server"][0]


# -- S6.1: the mail sending user ----------------------------------------------------------------


def test_the_mail_sending_user_cannot_choose_default():
    form = _form({"mode": SenderMode.DEFAULT}, is_mail_sending_user=True)

    assert not form.is_valid()
    assert "You are the company's mail sending user" in form.errors["mode"][0]


def test_reply_to_needs_the_card_email():
    assert _form({"mode": SenderMode.REPLY_TO}, card_email="anna@acme.test").is_valid()
    form = _form({"mode": SenderMode.REPLY_TO}, card_email="")

    assert not form.is_valid()
    assert form.errors["mode"] == [
        "Directo-Reply-to needs the e-mail on your card: replies go there."
    ]


def test_the_global_sender_offers_no_microsoft365():
    form = _form({"global-mode": SenderMode.MICROSOFT365}, is_global=True, prefix="global")

    assert not form.is_valid()
    assert "Select a valid choice" in form.errors["mode"][0]


def _sending_form(code: str) -> MailSendingUserForm:
    return MailSendingUserForm({"mail_sending_user": code}, mail_sending_user=None)


@pytest.mark.django_db
def test_mail_sending_user_with_a_server_of_their_own_is_accepted():
    sender = factories.user("MAIL")
    factories.profile(sender, host="mx.acme.test", port=25, security=Security.STARTTLS)

    form = _sending_form("MAIL")

    assert form.is_valid(), form.errors
    assert form.cleaned_data["mail_sending_user"] == sender


@pytest.mark.django_db
def test_no_mail_sending_user_is_accepted():
    form = _sending_form("")

    assert form.is_valid(), form.errors
    assert form.cleaned_data["mail_sending_user"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("with_profile", [False, True])
def test_mail_sending_user_who_inherits_is_refused(with_profile):
    sender = factories.user("MAIL")
    if with_profile:
        factories.profile(sender, mode=SenderMode.DEFAULT)

    form = _sending_form("MAIL")

    assert not form.is_valid()
    assert form.errors["mail_sending_user"] == [
        "MAIL has the Default mail sender and so inherits the global configuration. Give MAIL "
        "a sender of their own first."
    ]


@pytest.mark.django_db
def test_mail_sending_user_with_login_only_is_refused():
    sender = factories.user("MAIL")
    factories.profile(sender, login="mail", password=factories.secret())

    form = _sending_form("MAIL")

    assert not form.is_valid()
    assert form.errors["mail_sending_user"] == [
        "MAIL has no SMTP server of their own. Enter one on their card first."
    ]


@pytest.mark.django_db
def test_unknown_or_inactive_mail_sending_user_is_refused():
    factories.user("GONE", is_active=False)

    for code in ["NOBODY", "GONE"]:
        form = _sending_form(code)
        assert not form.is_valid()
        assert "Select a valid choice" in form.errors["mail_sending_user"][0]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sender_mode", "global_mode", "kept"),
    [
        (None, SenderMode.SMTP, True),
        (None, SenderMode.DEFAULT, False),
        (None, SenderMode.REPLY_TO, False),
        (SenderMode.SMTP, SenderMode.DEFAULT, True),
        (SenderMode.REPLY_TO, SenderMode.SMTP, False),
        (SenderMode.MICROSOFT365, SenderMode.SMTP, False),
    ],
)
def test_login_only_users_keep_a_global_server(sender_mode, global_mode, kept):
    anna = factories.user("ANNA")
    factories.profile(anna, login="anna", password=factories.secret())  # S6.2: no server of her own
    if sender_mode is not None:
        sender = factories.user("MAIL")
        factories.profile(
            sender, mode=sender_mode, host="mx.acme.test", port=25, security=Security.STARTTLS
        )
    sending_form = _sending_form("MAIL" if sender_mode else "")
    global_form = _form(
        {
            "global-mode": global_mode,
            "global-server": "relay.acme.test:465",
            "global-security": Security.SSL,
        },
        is_global=True,
        prefix="global",
    )
    assert sending_form.is_valid(), sending_form.errors
    assert global_form.is_valid(), global_form.errors

    result = check_dependents_keep_server(global_form=global_form, sending_form=sending_form)

    assert result is kept
    errors = {**sending_form.errors, **global_form.errors}
    if kept:
        assert not errors
    else:
        assert [str(e) for errs in errors.values() for e in errs] == [
            "These users give only a login and password and take the server from the global "
            "configuration: ANNA. Keep an SMTP server here, or change their cards first."
        ]


@pytest.mark.django_db
@pytest.mark.parametrize("mode", [SenderMode.REPLY_TO, SenderMode.MICROSOFT365])
def test_the_mail_sending_user_keeps_a_server_while_login_only_users_need_it(mode):
    factories.profile(factories.user("ANNA"), login="anna", password=factories.secret())

    form = _form({"mode": mode}, is_mail_sending_user=True)

    assert not form.is_valid()
    assert "take the server from the global configuration: ANNA" in form.errors["mode"][0]
    assert _form({"mode": mode}, is_mail_sending_user=False).is_valid()


# -- the company ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slug", "valid"),
    [("acme", True), ("acme-sa", True), ("a", True), ("Acme", False), ("-acme", False),
     ("acme-", False), ("ac me", False), ("acme.pl", False), ("a" * 64, False)],
)  # fmt: skip
def test_company_slug_becomes_a_local_part(slug, valid):
    form = CompanyForm({"company_name": "Acme", "company_slug": slug}, company=None)

    assert form.is_valid() is valid


@pytest.mark.parametrize("language", ["en", "pl"])
def test_company_help_text_is_in_the_language_of_the_request(settings, language):
    settings.EVENT_MAIL_DOMAIN = "event.test"
    english = "Directo-Reply-to mail is sent from %(example)s."

    with translation.override(language):
        help_text = str(CompanyForm(company=None).fields["company_slug"].help_text)
        expected = translation.gettext(english) % {"example": "<short name>@event.test"}

    assert help_text == expected
