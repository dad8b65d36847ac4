"""The resolution table: one row per rule of DESIGN.md, `resolve_sender` being pure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from smtp_settings.models import Security, SenderMode
from smtp_settings.resolve import (
    CardData,
    PlatformData,
    ProfileData,
    SecretRef,
    SenderConfigError,
    SenderInputs,
    Source,
    TransportKind,
    platform_sender,
    resolve_sender,
)

PLATFORM = PlatformData(
    company_name="Acme Sp. z o.o.",
    company_slug="acme",
    event_domain="event.test",
    default_from="noreply@platform.test",
    oauth_servers={
        "microsoft365": ("smtp.office365.com", 587, "starttls"),
        "google": ("smtp.gmail.com", 465, "ssl"),
    },
)
CARD = CardData(
    user_id=1, code="ANNA", name="Anna Kowalska", email="anna@acme.test", email_verified=True
)
# Issue 11: a card e-mail nobody proved to own (typed in: it could be security@paypal.com).
UNVERIFIED = replace(CARD, email_verified=False)
MSU_CARD = CardData(user_id=2, code="MAIL", name="Mail Sender", email="mail@acme.test")

DEFAULT = ProfileData(mode=SenderMode.DEFAULT, owner_id=1)
OWN_SMTP = ProfileData(
    mode=SenderMode.SMTP,
    host="smtp.acme.test",
    port=587,
    security=Security.STARTTLS,
    login="anna@acme.test",
    has_password=True,
    profile_id=11,
    owner_id=1,
    tested=("smtp.acme.test", 587, Security.STARTTLS, "anna@acme.test"),
)
OWN_SMTP_NO_AUTH = replace(
    OWN_SMTP, login="", has_password=False, tested=("smtp.acme.test", 587, Security.STARTTLS, "")
)
LOGIN_ONLY = ProfileData(
    mode=SenderMode.SMTP, login="anna", has_password=True, profile_id=11, owner_id=1
)
GLOBAL_DEFAULT = ProfileData(mode=SenderMode.DEFAULT, profile_id=1)
GLOBAL_SMTP = ProfileData(
    mode=SenderMode.SMTP,
    host="mail.acme.test",
    port=465,
    security=Security.SSL,
    login="relay@acme.test",
    has_password=True,
    profile_id=1,
)
GLOBAL_REPLY_TO = ProfileData(mode=SenderMode.REPLY_TO, profile_id=1)
MSU_SMTP = ProfileData(
    mode=SenderMode.SMTP,
    host="mx.msu.test",
    port=25,
    security=Security.STARTTLS,
    login="mail@acme.test",
    has_password=True,
    profile_id=22,
    owner_id=2,
)
MSU_M365 = ProfileData(
    mode=SenderMode.MICROSOFT365, login="mail@acme.test", has_token=True, profile_id=22, owner_id=2
)


def inputs(profile, global_profile=GLOBAL_DEFAULT, msu=None, card=CARD, platform=PLATFORM):
    return SenderInputs(
        card=card,
        profile=profile,
        global_profile=global_profile,
        platform=platform,
        mail_sending_user=(MSU_CARD, msu) if msu else None,
    )


# Each row: rule, inputs, expected fields of the SenderConfig (and of its `source`).
TABLE = [
    (
        "S1.1 Default + global Default: the platform relay, From = the verified card e-mail",
        inputs(DEFAULT),
        {
            "transport": TransportKind.RELAY,
            "mode": SenderMode.DEFAULT,
            "host": "",
            "from_email": "anna@acme.test",
            "from_name": "Anna Kowalska",
            "envelope_sender": "anna@acme.test",
            "secret": None,
            "mass_mailing_allowed": False,
        },
        {"mode": Source.GLOBAL, "server": Source.PLATFORM, "from": Source.CARD},
    ),
    (
        "Default + global SMTP: the global server and credentials, From = the card e-mail",
        inputs(DEFAULT, GLOBAL_SMTP),
        {
            "transport": TransportKind.SMTP,
            "host": "mail.acme.test",
            "port": 465,
            "security": Security.SSL,
            "login": "relay@acme.test",
            "secret": SecretRef("profile_password", 1),
            "from_email": "anna@acme.test",
            "mass_mailing_allowed": True,
        },
        {"mode": Source.GLOBAL, "server": Source.GLOBAL, "login": Source.GLOBAL},
    ),
    (
        "Default + global Reply-To mode: relay, platform From, the user in Reply-To",
        inputs(DEFAULT, GLOBAL_REPLY_TO),
        {
            "transport": TransportKind.RELAY,
            "mode": SenderMode.REPLY_TO,
            "from_email": "acme@event.test",
            "reply_to": "anna@acme.test",
            "envelope_sender": "bounces@event.test",
            "verp": True,
        },
        {"mode": Source.GLOBAL, "from": Source.COMPANY, "reply_to": Source.CARD},
    ),
    (
        "S6.1 Default + mail sending user: that user's server and credentials, own From",
        inputs(DEFAULT, GLOBAL_SMTP, msu=MSU_SMTP),
        {
            "transport": TransportKind.SMTP,
            "host": "mx.msu.test",
            "port": 25,
            "login": "mail@acme.test",
            "secret": SecretRef("profile_password", 22),
            "from_email": "anna@acme.test",
        },
        {"mode": Source.MAIL_SENDING_USER, "server": Source.MAIL_SENDING_USER},
    ),
    (
        "S6.1 Default + mail sending user on Microsoft 365: that user's connected account",
        inputs(DEFAULT, msu=MSU_M365),
        {
            "transport": TransportKind.MICROSOFT365,
            "host": "smtp.office365.com",
            "port": 587,
            "security": Security.STARTTLS,
            "login": "mail@acme.test",
            "secret": SecretRef("m365_token_cache", 2),
            "from_email": "anna@acme.test",
        },
        {"mode": Source.MAIL_SENDING_USER, "login": Source.MAIL_SENDING_USER},
    ),
    (
        "An own server not tested as it is now: mass mailing waits for a passed test",
        inputs(
            replace(OWN_SMTP, tested=("smtp.acme.test", 465, Security.STARTTLS, "anna@acme.test"))
        ),
        {
            "transport": TransportKind.SMTP,
            "mass_mailing_allowed": False,
            "needs_connection_test": True,
        },
        {"server": Source.USER},
    ),
    (
        "An own server never tested: the same",
        inputs(replace(OWN_SMTP, tested=None)),
        {"mass_mailing_allowed": False, "needs_connection_test": True},
        {"server": Source.USER},
    ),
    (
        "An inherited server is the admin's: no test asked of the user",
        inputs(DEFAULT, replace(GLOBAL_SMTP, tested=None)),
        {
            "transport": TransportKind.SMTP,
            "mass_mailing_allowed": True,
            "needs_connection_test": False,
        },
        {"server": Source.GLOBAL},
    ),
    (
        "SMTP with a server of its own: that server, the user's credentials",
        inputs(OWN_SMTP, GLOBAL_SMTP, msu=MSU_SMTP),
        {
            "transport": TransportKind.SMTP,
            "mode": SenderMode.SMTP,
            "host": "smtp.acme.test",
            "port": 587,
            "security": Security.STARTTLS,
            "login": "anna@acme.test",
            "secret": SecretRef("profile_password", 11),
            "mass_mailing_allowed": True,
        },
        {"mode": Source.USER, "server": Source.USER, "password": Source.USER},
    ),
    (
        "S3.3 SMTP without a login: no authentication, no secret",
        inputs(OWN_SMTP_NO_AUTH),
        {"transport": TransportKind.SMTP, "login": "", "secret": None},
        {"server": Source.USER},
    ),
    (
        "S6.2 SMTP with only login and password: the server from the global configuration",
        inputs(LOGIN_ONLY, GLOBAL_SMTP),
        {
            "host": "mail.acme.test",
            "port": 465,
            "security": Security.SSL,
            "login": "anna",
            "secret": SecretRef("profile_password", 11),
        },
        {"server": Source.GLOBAL, "login": Source.USER, "password": Source.USER},
    ),
    (
        "S6.2 with a mail sending user: the server from that user's profile",
        inputs(LOGIN_ONLY, GLOBAL_SMTP, msu=MSU_SMTP),
        {"host": "mx.msu.test", "port": 25, "login": "anna"},
        {"server": Source.MAIL_SENDING_USER, "login": Source.USER},
    ),
    (
        "Microsoft 365 OAUTH: the user's own account on the server from settings",
        inputs(replace(MSU_M365, owner_id=1, profile_id=11, login="anna@acme.test")),
        {
            "transport": TransportKind.MICROSOFT365,
            "host": "smtp.office365.com",
            "security": Security.STARTTLS,
            "login": "anna@acme.test",
            "secret": SecretRef("m365_token_cache", 1),
            "mass_mailing_allowed": True,
        },
        {"mode": Source.USER, "server": Source.PLATFORM},
    ),
    (
        "Microsoft 365 not yet authenticated: no secret to use",
        inputs(ProfileData(mode=SenderMode.MICROSOFT365, login="a@acme.test", owner_id=1)),
        {"transport": TransportKind.MICROSOFT365, "secret": None, "mass_mailing_allowed": False},
        {},
    ),
    (
        "S7.2 Reply-To mode: relay, From = company@event domain, Reply-To = card e-mail",
        inputs(ProfileData(mode=SenderMode.REPLY_TO, owner_id=1), GLOBAL_SMTP),
        {
            "transport": TransportKind.RELAY,
            "from_email": "acme@event.test",
            "from_name": "Anna Kowalska",
            "reply_to": "anna@acme.test",
            "envelope_sender": "bounces@event.test",
            "verp": True,
            "mass_mailing_allowed": False,
        },
        {"mode": Source.USER, "envelope": Source.PLATFORM},
    ),
    (
        "S7.2 Reply-To mode honours an explicit Reply-To on the card",
        inputs(
            ProfileData(mode=SenderMode.REPLY_TO, owner_id=1),
            card=replace(CARD, reply_to="office@acme.test"),
        ),
        {"reply_to": "office@acme.test", "from_email": "acme@event.test"},
        {"reply_to": Source.CARD},
    ),
    (
        "Reply-To mode without a card name: the company name is shown in From",
        inputs(ProfileData(mode=SenderMode.REPLY_TO, owner_id=1), card=replace(CARD, name="")),
        {"from_name": "Acme Sp. z o.o."},
        {},
    ),
    (
        "S7.1 the card's Reply-To goes in Reply-To in the other modes",
        inputs(OWN_SMTP, card=replace(CARD, reply_to="office@acme.test")),
        {"reply_to": "office@acme.test", "from_email": "anna@acme.test"},
        {"reply_to": Source.CARD},
    ),
    (
        "No card e-mail: From falls back to an e-mail-shaped login",
        inputs(OWN_SMTP, card=replace(CARD, email="")),
        {"from_email": "anna@acme.test", "envelope_sender": "anna@acme.test"},
        {"from": Source.LOGIN},
    ),
    (
        "No card e-mail on the relay: From falls back to the platform's address",
        inputs(DEFAULT, card=replace(CARD, email="")),
        {"from_email": "noreply@platform.test"},
        {"from": Source.PLATFORM},
    ),
    # -- issue 11: the relay sends From the card e-mail only once it is verified -----------------
    (
        "Default + global Default, card e-mail unverified: the relay sends as Reply-To mode does",
        inputs(DEFAULT, card=UNVERIFIED),
        {
            "transport": TransportKind.RELAY,
            "mode": SenderMode.DEFAULT,
            "from_email": "acme@event.test",
            "from_name": "Anna Kowalska",
            "reply_to": "anna@acme.test",
            "envelope_sender": "bounces@event.test",
            "verp": True,
            "mass_mailing_allowed": False,
        },
        {
            "mode": Source.GLOBAL,
            "from": Source.COMPANY,
            "reply_to": Source.CARD,
            "envelope": Source.PLATFORM,
        },
    ),
    (
        "Unverified on the relay keeps an explicit Reply-To of the card",
        inputs(DEFAULT, card=replace(UNVERIFIED, reply_to="office@acme.test")),
        {"from_email": "acme@event.test", "reply_to": "office@acme.test"},
        {"reply_to": Source.CARD},
    ),
    (
        "Unverified on the relay without a card name: the company name is shown in From",
        inputs(DEFAULT, card=replace(UNVERIFIED, name="")),
        {"from_email": "acme@event.test", "from_name": "Acme Sp. z o.o."},
        {},
    ),
    (
        "Unverified on the relay without a company: the platform's address, never an error",
        inputs(DEFAULT, card=UNVERIFIED, platform=replace(PLATFORM, company_slug="")),
        {
            "from_email": "noreply@platform.test",
            "reply_to": "anna@acme.test",
            "envelope_sender": "bounces@event.test",
            "verp": True,
        },
        {"from": Source.PLATFORM},
    ),
    (
        "Unverified, the card's BCC and signature still apply (they are counted, not trusted)",
        inputs(DEFAULT, card=replace(UNVERIFIED, bcc="archive@acme.test", signature="-- A")),
        {"from_email": "acme@event.test", "bcc": "archive@acme.test", "signature": "-- A"},
        {"bcc": Source.CARD},
    ),
    (
        "Unverified with an own server (S3.5, the user's responsibility): From = the card e-mail",
        inputs(OWN_SMTP, card=UNVERIFIED),
        {"transport": TransportKind.SMTP, "from_email": "anna@acme.test", "verp": False},
        {"from": Source.CARD},
    ),
    (
        "Unverified, Default + global SMTP (the company's server): From = the card e-mail",
        inputs(DEFAULT, GLOBAL_SMTP, card=UNVERIFIED),
        {"transport": TransportKind.SMTP, "from_email": "anna@acme.test"},
        {"from": Source.CARD},
    ),
    (
        "Unverified, Default + mail sending user on Microsoft 365: From = the card e-mail",
        inputs(DEFAULT, msu=MSU_M365, card=UNVERIFIED),
        {"transport": TransportKind.MICROSOFT365, "from_email": "anna@acme.test"},
        {"from": Source.CARD},
    ),
    (
        "Unverified with own Microsoft 365: From = the card e-mail",
        inputs(replace(MSU_M365, owner_id=1, profile_id=11), card=UNVERIFIED),
        {"transport": TransportKind.MICROSOFT365, "from_email": "anna@acme.test"},
        {"from": Source.CARD},
    ),
    (
        "Unverified in Reply-To mode: unchanged, the platform From as always",
        inputs(DEFAULT, GLOBAL_REPLY_TO, card=UNVERIFIED),
        {"mode": SenderMode.REPLY_TO, "from_email": "acme@event.test"},
        {"from": Source.COMPANY},
    ),
    (
        "A card without the verified flag counts as unverified (the safe default)",
        inputs(DEFAULT, card=CardData(user_id=1, code="ANNA", email="security@paypal.com")),
        {"from_email": "acme@event.test", "reply_to": "security@paypal.com"},
        {"from": Source.COMPANY},
    ),
]


@pytest.mark.parametrize(("rule", "given", "expected", "sources"), TABLE, ids=[r[0] for r in TABLE])
def test_resolution_table(rule, given, expected, sources):
    config = resolve_sender(given)
    for name, value in expected.items():
        assert getattr(config, name) == value, f"{rule}: {name}"
    for part, origin in sources.items():
        assert config.source.get(part) == origin, f"{rule}: source of {part}"


ERRORS = [
    (
        "a mail sending user that itself inherits is refused",
        inputs(DEFAULT, msu=replace(MSU_SMTP, mode=SenderMode.DEFAULT)),
        "mail_sending_user_inherits",
    ),
    (
        "S6.2 login only, and the global configuration has no server",
        inputs(LOGIN_ONLY, GLOBAL_DEFAULT),
        "no_global_server",
    ),
    (
        "S6.2 login only, and the global configuration is Reply-To mode",
        inputs(LOGIN_ONLY, GLOBAL_REPLY_TO),
        "no_global_server",
    ),
    (
        "SMTP with neither server nor login",
        inputs(replace(LOGIN_ONLY, login="", has_password=False)),
        "no_server",
    ),
    (
        "a mail sending user with login only has no server to lend",
        inputs(DEFAULT, msu=replace(MSU_SMTP, host="", port=None)),
        "no_server",
    ),
    (
        "a login without a password",
        inputs(replace(OWN_SMTP, has_password=False)),
        "login_without_password",
    ),
    (
        "Reply-To mode without an e-mail on the card",
        inputs(ProfileData(mode=SenderMode.REPLY_TO, owner_id=1), card=replace(CARD, email="")),
        "reply_to_needs_email",
    ),
    (
        "Reply-To mode without a company",
        inputs(
            ProfileData(mode=SenderMode.REPLY_TO, owner_id=1),
            platform=replace(PLATFORM, company_slug=""),
        ),
        "no_company",
    ),
    (
        "Microsoft 365 on the global profile has no account to send with",
        inputs(DEFAULT, ProfileData(mode=SenderMode.MICROSOFT365, profile_id=1)),
        "oauth_needs_user",
    ),
]


@pytest.mark.parametrize(("rule", "given", "code"), ERRORS, ids=[r[0] for r in ERRORS])
def test_resolution_refuses(rule, given, code):
    with pytest.raises(SenderConfigError) as caught:
        resolve_sender(given)
    assert caught.value.code == code
    assert str(caught.value.message)


@pytest.mark.parametrize(
    "given",
    [
        inputs(DEFAULT),
        inputs(OWN_SMTP),
        inputs(DEFAULT, msu=MSU_M365),
        inputs(DEFAULT, GLOBAL_REPLY_TO),
    ],
    ids=["relay", "smtp", "microsoft365", "reply_to"],
)
def test_bcc_and_signature_apply_to_every_transport(given):
    card = replace(CARD, bcc="archive@acme.test", signature="Anna\n+48 600 000 000")
    config = resolve_sender(replace(given, card=card))
    assert config.bcc == "archive@acme.test"
    assert config.signature == "Anna\n+48 600 000 000"
    assert config.source["bcc"] == config.source["signature"] == Source.CARD


def test_result_is_frozen():
    config = resolve_sender(inputs(OWN_SMTP))
    with pytest.raises(AttributeError):
        config.host = "evil.test"
    with pytest.raises(TypeError):
        config.source["server"] = "x"


def test_the_platform_sender_takes_nothing_from_any_card():
    """The verification link's sender: a card's BCC would hand the link to someone else."""
    config = platform_sender(PLATFORM)
    assert config.transport == TransportKind.RELAY
    assert (config.from_email, config.envelope_sender) == ("noreply@platform.test",) * 2
    assert (config.bcc, config.signature, config.reply_to, config.verp) == ("", "", "", False)
