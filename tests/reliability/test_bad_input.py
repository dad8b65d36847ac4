"""The reliability suite (issue 7), bad input: hypothesis throws at least 1,000 generated
inputs at each door a user or an outsider can type into, and counts what went wrong.

The doors: the card form (POST /accounts/card/), the system settings form (POST
/settings/system/), `manage.py sender set`, the Microsoft 365 OAuth callback's parameters and
the bounce intake (`bounce_ingest`). The inputs mix every Unicode category but surrogates
(which HTTP cannot carry), CR/LF, NUL and other control characters, very long strings, lists
where one value is expected, and structured values near the valid ones (addresses, host:port
with odd ports, bracketed IPv6, the mode and security choices, checkbox values).

Each example runs in a transaction rolled back at its end, so examples never see each other's
rows. After each one the checker looks at what is stored:

- server errors: responses with status >= 500 (the client returns them instead of raising);
- unhandled exceptions: anything escaping a view, the command (other than CommandError) or
  `bounce_ingest` (nothing may escape it), and anything the probe below raises;
- header injections: CR or LF in a stored field that reaches a header (User name, email, bcc,
  reply_to; SenderProfile login; Company name and slug), and, for every user whose sender
  resolves, a probe message (`outbox_enqueue` to a fixed recipient, then `build_message` as the
  worker does) whose headers carry CR/LF in a value, or whose bytes parse back into header
  names other than the expected ones, or whose envelope carries CR/LF;
- invalid rows: rows of User, SenderProfile, Company, SystemSettings, InboundMail, Event and
  OAuthConnection whose `full_clean()` raises.

The test does not let hypothesis stop at the first failure: it counts every failing example,
keeps the first few for the assertion message and records the figures, then asserts them.
No network leaves 127.0.0.1: the OAuth callback runs against the local OpenID provider of
tests/m365_fixtures.py, and every socket connection made during its examples is recorded.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import socket
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from unittest import mock

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.core.signals import got_request_exception
from django.db import transaction
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Company, User
from bounces.models import InboundMail
from bounces.services import bounce_ingest
from outbox.message import build_message, envelope_for, verp_address
from outbox.models import Event, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings import oauth as oauth_flows
from smtp_settings.models import (
    OAuthConnection,
    Security,
    SenderMode,
    SenderProfile,
    SystemSettings,
)
from smtp_settings.resolve import SenderConfig, SenderConfigError
from smtp_settings.selectors import sender_config_for
from tests import factories

AREA = "bad input"
CASES = 1000
CARD_URL = "/accounts/card/"
SYSTEM_URL = "/settings/system/"
CALLBACK_URL = "/accounts/microsoft365/callback/"
CONNECT_URL = "/accounts/microsoft365/connect/"
EVENT_DOMAIN = "event.test"
PROBE_RECIPIENT = "probe@recipient.test"
BOUNCE_DATA = Path(__file__).resolve().parents[1] / "bounces" / "data"
# What build_message writes, and nothing else (Reply-To and Cc only when there is one).
EXPECTED_HEADERS = [
    "Content-Transfer-Encoding",
    "Content-Type",
    "Date",
    "From",
    "MIME-Version",
    "Message-ID",
    "Subject",
    "To",
]
HEADER_BOUND = {
    User: ["name", "email", "bcc", "reply_to"],
    SenderProfile: ["login"],
    Company: ["name", "slug"],
}
# Every model an input could write; each door's test names those it can reach.
CHECKED_MODELS = [
    User,
    SenderProfile,
    Company,
    SystemSettings,
    InboundMail,
    Event,
    OAuthConnection,
]
SETTINGS_MODELS = [User, SenderProfile, Company, SystemSettings]
OAUTH_MODELS = [User, SenderProfile, OAuthConnection]
INTAKE_MODELS = [InboundMail, Event]
SAMPLES_KEPT = 3

HYPOTHESIS = settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

pytestmark = pytest.mark.usefixtures("english")


# -- counting ----------------------------------------------------------------------------------
@dataclass
class Tally:
    """What went wrong in one door's examples, with the first few inputs of each kind."""

    door: str
    cases: int = 0
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def count(self, figure: str, example: object, detail: str = "") -> None:
        self.counts[figure] += 1
        if len(self.samples[figure]) < SAMPLES_KEPT:
            self.samples[figure].append(f"{example!r:.400} -> {detail:.400}")

    def record(self, figures, names: list[str]) -> None:
        figures.add(AREA, f"{self.door}: cases", self.cases, f"≥ {CASES}")
        for name in names:
            figures.add(AREA, f"{self.door}: {name}", self.counts[name], "= 0")

    def check(self, names: list[str]) -> None:
        assert self.cases >= CASES, f"{self.door}: only {self.cases} cases"
        failed = {name: self.counts[name] for name in names if self.counts[name]}
        assert not failed, f"{self.door}: {failed}\n" + "\n".join(
            f"{name}: {sample}" for name in failed for sample in self.samples[name]
        )


SERVER_ERRORS = "server errors"
EXCEPTIONS = "unhandled exceptions"
INJECTIONS = "header injections"
INVALID_ROWS = "invalid rows stored"
FIGURES = [SERVER_ERRORS, EXCEPTIONS, INJECTIONS, INVALID_ROWS]


@contextlib.contextmanager
def rolled_back() -> Iterator[None]:
    """One example: whatever it writes is undone at its end."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def _has_line_break(value: object) -> bool:
    return isinstance(value, str) and ("\r" in value or "\n" in value)


Snapshot = dict[tuple[str, object], dict]


def snapshot(models: list[type] = CHECKED_MODELS) -> Snapshot:
    """Every row's values, by (model, pk): one query a model."""
    return {
        (model.__name__, row["pk"]): row
        for model in models
        for row in model.objects.values("pk", *[f.attname for f in model._meta.concrete_fields])
    }


def check_rows(
    tally: Tally, example: object, before: Snapshot, models: list[type] = CHECKED_MODELS
) -> bool:
    """Invalid rows and CR/LF in header-bound fields, over every row of `models` (those the door
    can write) new or changed since `before` (the rows as the fixtures left them, all checked
    once). True if any changed."""
    now = snapshot(models)
    changed = [key for key, values in now.items() if before.get(key) != values]
    models = {model.__name__: model for model in CHECKED_MODELS}
    for name, pk in changed:
        model = models[name]
        row = model.objects.get(pk=pk)
        try:
            row.full_clean()
        except ValidationError as error:
            tally.count(INVALID_ROWS, example, f"{name} {pk}: {error}")
        nul = _nul_field(row)
        if nul:
            tally.count(INVALID_ROWS, example, f"{name} {pk}: NUL in {nul} (PostgreSQL refuses it)")
        for attribute in HEADER_BOUND.get(model, []):
            if _has_line_break(getattr(row, attribute)):
                tally.count(INJECTIONS, example, f"{name}.{attribute}: {getattr(row, attribute)!r}")
    return bool(changed) or now.keys() != before.keys()


def _nul_field(row) -> str:
    """A text or JSON field holding NUL, which SQLite keeps and PostgreSQL refuses."""
    for model_field in row._meta.concrete_fields:
        value = getattr(row, model_field.attname)
        text = json.dumps(value) if isinstance(value, dict | list) else value
        if isinstance(text, str) and ("\x00" in text or "\\u0000" in text):
            return model_field.name
    return ""


def probe_messages(tally: Tally, example: object, users: list[User] | None = None) -> None:
    """For every user whose sender resolves: the message the worker would build, checked."""
    for user in users if users is not None else User.objects.all():
        user = User.objects.get(pk=user.pk)
        try:
            config = sender_config_for(user=user)
        except SenderConfigError:
            continue  # the card says why; nothing can be sent, so nothing can be injected
        try:
            with transaction.atomic():
                queued = outbox_enqueue(
                    user=user, to=[PROBE_RECIPIENT], subject="Probe", body_text="x", sender=config
                )
                sender = SenderConfig.from_snapshot(queued.sender)
                mime = build_message(queued, sender)
                envelope = envelope_for(queued, sender)
                raw = mime.as_bytes()
                transaction.set_rollback(True)
        except Exception as error:  # the worker would fail this message: a bug
            tally.count(EXCEPTIONS, example, f"probe of {user.code}: {error!r}")
            continue
        problem = _header_problem(mime, raw, sender, envelope)
        if problem:
            tally.count(INJECTIONS, example, f"probe of {user.code}: {problem}")


def _header_problem(mime, raw: bytes, sender: SenderConfig, envelope) -> str:
    for name, value in mime.items():
        if _has_line_break(str(value)):
            return f"{name} has a line break: {str(value)!r}"
    expected = sorted([*EXPECTED_HEADERS, *(["Reply-To"] if sender.reply_to else [])])
    parsed = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
    names = sorted(parsed.keys())
    if names != expected:
        return f"headers {names}"
    for name, value in parsed.items():
        if _has_line_break(str(value)):
            return f"{name} decodes to a line break: {str(value)!r}"
    if any(_has_line_break(a) for a in [envelope.mail_from, *envelope.recipients]):
        return f"envelope {envelope}"
    return ""


# -- strategies ------------------------------------------------------------------------------
CHARS = st.characters(blacklist_categories=("Cs",))  # lone surrogates cannot cross HTTP
TEXT = st.text(CHARS, max_size=40)
CONTROLS = st.sampled_from(
    ["\r", "\n", "\r\n", "\x00", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x7f", "\x85", "\u2028"]
)
LONG = st.one_of(
    st.text(CHARS, min_size=200, max_size=400),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["a", "\n", "€", "x@", "ł"]), st.integers(1, 7000)
    ),
)


def spliced(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`base` with a control character (CR, LF, NUL...) and some text put into it."""
    return st.builds(lambda a, c, b: a + c + b, base, CONTROLS, st.one_of(TEXT, base))


def weird(valid: st.SearchStrategy[str]) -> st.SearchStrategy:
    """Mostly near-valid values, and anything else a client could send."""
    return st.one_of(
        valid,
        valid,
        TEXT,
        spliced(valid),
        spliced(TEXT),
        LONG,
        st.lists(st.one_of(valid, TEXT), min_size=2, max_size=3),  # the same field twice
    )


ADDRESSES = st.one_of(
    st.emails(),
    st.sampled_from(
        [
            "anna@acme.test",
            "Anna@ACME.test",
            "a@[127.0.0.1]",
            "a@[IPv6:::1]",
            '"a b"@acme.test',
            "anna@localhost",
            "üser@münchen.de",
            "anna@xn--mnchen-3ya.de",
            "a@b",
            "Anna <anna@acme.test>",
            "anna@acme.test, bob@acme.test",
            "anna@acme.test\r\nBcc: spy@evil.test",
            "anna@acme.test\nX-Injected: 1",
            "=?utf-8?q?a=0D=0Ab?=@acme.test",
            "bounces+1-0000000000000000@event.test",
        ]
    ),
)
HOSTS = st.one_of(
    st.sampled_from(
        [
            "smtp.acme.test",
            "SMTP.Gmail.com",
            "smtp.office365.com",
            "smtp-mail.outlook.com",
            "localhost",
            "127.0.0.1",
            "10.0.0.1",
            "8.8.8.8",
            "[::1]",
            "[2001:db8::1]",
            "[2606:4700::1111]",
            "[fe80::1%eth0]",
            "[::ffff:127.0.0.1]",
            "[1.2.3.4]",
            "[]",
            "::1",
            "münchen.de",
            "-bad.test",
            "a" * 64 + ".test",
            "smtp.acme.test.",
            "1.2.3",
            "",
        ]
    ),
    TEXT,
)
PORTS = st.one_of(
    st.sampled_from(["25", "465", "587", "0", "65535", "65536", "99999", "-1", "+25", "٤٦٥"]),
    st.sampled_from(["0587", "25 ", " 25", "2525", "", "1e3", "587\n", "465\x00"]),
    st.integers(-10, 10**6).map(str),
)
SERVERS = st.one_of(st.builds(lambda h, p: f"{h}:{p}", HOSTS, PORTS), HOSTS)
MODES = st.one_of(st.sampled_from([m.value for m in SenderMode]), st.sampled_from(["", "SMTP"]))
SECURITIES = st.one_of(st.sampled_from([s.value for s in Security]), st.just(""))
CHECKBOX = st.sampled_from(["on", "", "off", "true", "0", "1"])
RATE_LIMITS = st.one_of(
    st.integers(-5, 200_000).map(str),
    st.sampled_from(["", " 5 ", "1e3", "١٢", "-0", "5.0", "0x10", "100000", "100001"]),
)
PASSWORDS = st.one_of(
    st.sampled_from(["s3cret-Pa55", "abcd efgh ijkl mnop", " abcd efgh ijkl mnop ", "SECRET\n"]),
    TEXT,
)
NAMES = st.sampled_from(
    [
        "Anna Kowalska",
        "Zażółć Gęślą",
        "O'Brien, Jr.",
        '"Quoted" Name',
        "=?utf-8?q?Anna=0D=0ABcc=3A_x?=",  # decoded by the email package: a line break
        "=?utf-8?q?Anna=0D=0ABcc=3A_spy=40evil.test?=",
        "Anna =?utf-8?b?DQpCY2M6IHg=?= Kowalska",
        "Anna <anna@evil.test>",
        "A" * 150,
    ]
)


def _form(
    baseline: dict[str, str], fields: dict[str, st.SearchStrategy]
) -> st.SearchStrategy[dict]:
    """The page's own values with some changed and some left out."""
    changed = st.fixed_dictionaries({}, optional={name: weird(s) for name, s in fields.items()})
    dropped = st.sets(st.sampled_from(sorted(baseline)), max_size=3)
    extra = st.dictionaries(TEXT, TEXT, max_size=2)
    return st.builds(
        lambda c, d, e: {
            **e,
            **{k: v for k, v in baseline.items() if k not in d},
            **c,
        },
        changed,
        dropped,
        extra,
    )


RAW_BODIES = st.one_of(
    st.binary(max_size=300),
    st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=6).map(
        lambda pairs: b"&".join(k + b"=" + v for k, v in pairs)
    ),
    st.sampled_from([b"name=%ff%fe&email=%00", b"name=%", b"a=1&" * 2000, b"email=%E2%80%A8"]),
)


class QuickClient(Client):
    """The test client without its copy of every template context (half of each request's time
    on the card page); a view's exception is kept in `response.exc_info`, never raised."""

    def request(self, **request):
        environ = self._base_environ(**request)
        caught: list = []
        uid = f"bad-input-{id(caught)}"
        got_request_exception.connect(
            lambda **kwargs: caught.append(sys.exc_info()), dispatch_uid=uid, weak=False
        )
        try:
            response = self.handler(environ)
        finally:
            got_request_exception.disconnect(dispatch_uid=uid)
        response.exc_info = caught[0] if caught else None
        if response.cookies:
            self.cookies.update(response.cookies)
        return response


def post_any(client: Client, url: str, data) -> object:
    if isinstance(data, bytes):
        return client.generic(
            "POST", url, data=data, content_type="application/x-www-form-urlencoded"
        )
    return client.post(url, data)


# -- the card form ------------------------------------------------------------------------------
CARD_BASELINE = {
    "name": "Anna Kowalska",
    "office_phone": "+48 22 000 00 00",
    "phone": "",
    "email": "anna@acme.test",
    "bcc": "",
    "reply_to": "",
    "signature": "Anna\n-- \nAcme",
    "mode": SenderMode.SMTP.value,
    "server": "smtp.acme.test:587",
    "security": Security.STARTTLS.value,
    "login": "anna@acme.test",
    "password": "",
}
CARD_FIELDS = {
    "name": NAMES,
    "office_phone": st.sampled_from(["+48 22 000 00 00", "", "(0) 12-34"]),
    "phone": st.sampled_from(["", "+48 600 000 000"]),
    "email": ADDRESSES,
    "bcc": ADDRESSES,
    "reply_to": ADDRESSES,
    "signature": st.sampled_from(["Anna\n-- \nAcme", "", "<b>Anna</b>", "x\r\n.\r\nQUIT"]),
    "mode": MODES,
    "server": SERVERS,
    "security": SECURITIES,
    "login": st.one_of(ADDRESSES, st.just("")),
    "password": PASSWORDS,
    "clear_password": CHECKBOX,
    "rate_limit": RATE_LIMITS,
}


@pytest.fixture
def company_and_users(db) -> dict[str, User]:
    """A company, a global SMTP sender, and users of every kind (S6.2's login-only BOB too)."""
    factories.company()
    factories.profile(
        None,
        host="relay.acme.test",
        port=465,
        security=Security.SSL,
        login="relay@acme.test",
        password=factories.secret(),
    )
    anna = factories.user("ANNA", name="Anna Kowalska", email="anna@acme.test")
    factories.profile(
        anna,
        host="smtp.acme.test",
        port=587,
        security=Security.STARTTLS,
        login="anna@acme.test",
        password=factories.secret(),
    )
    bob = factories.user("BOB", email="bob@acme.test")
    factories.profile(bob, login="bob", password=factories.secret())
    eva = factories.user("EVA", email="eva@acme.test", reply_to="office@acme.test")
    factories.profile(eva, mode=SenderMode.REPLY_TO)
    admin = factories.user("ADMIN", is_staff=True, email="admin@acme.test")
    factories.mail_sending_user(None)
    return {"ANNA": anna, "BOB": bob, "EVA": eva, "ADMIN": admin}


def baseline(door: str, models: list[type]) -> Snapshot:
    """The rows as the fixtures left them; they pass every check, so a count is the input's."""
    tally = Tally(door)
    with rolled_back():
        check_rows(tally, "baseline", {})
        probe_messages(tally, "baseline")
    assert not tally.counts, dict(tally.samples)
    return snapshot(models)


def test_card_form(company_and_users, figures):
    anna = company_and_users["ANNA"]
    client = QuickClient()
    client.force_login(anna)
    before = baseline("card form", SETTINGS_MODELS)
    tally = Tally("card form")

    @HYPOTHESIS
    @given(
        st.one_of(_form(CARD_BASELINE, CARD_FIELDS), _form(CARD_BASELINE, CARD_FIELDS), RAW_BODIES)
    )
    def run(data) -> None:
        tally.cases += 1
        with rolled_back():
            response = post_any(client, CARD_URL, data)
            if response.status_code >= 500:
                tally.count(SERVER_ERRORS, data, str(response.status_code))
            if getattr(response, "exc_info", None):
                tally.count(EXCEPTIONS, data, repr(response.exc_info[1]))
            if check_rows(tally, data, before, SETTINGS_MODELS):
                probe_messages(tally, data, [anna])

    run()
    tally.record(figures, FIGURES)
    tally.check(FIGURES)


# -- the system settings form -----------------------------------------------------------------
SYSTEM_BASELINE = {
    "company_name": "Acme Sp. z o.o.",
    "company_slug": "acme",
    "mail_sending_user": "",
    "global-mode": SenderMode.SMTP.value,
    "global-server": "relay.acme.test:465",
    "global-security": Security.SSL.value,
    "global-login": "relay@acme.test",
    "global-password": "",
}
SYSTEM_FIELDS = {
    "company_name": NAMES,
    "company_slug": st.one_of(
        st.sampled_from(["acme", "a", "acme-2", "-acme", "acme-", "Acme", "a" * 63, "a" * 64]),
        st.from_regex(r"[a-z0-9-]{1,70}", fullmatch=True),
    ),
    "mail_sending_user": st.sampled_from(["", "ANNA", "BOB", "EVA", "ADMIN", "anna", "NOBODY"]),
    "global-mode": MODES,
    "global-server": SERVERS,
    "global-security": SECURITIES,
    "global-login": st.one_of(ADDRESSES, st.just("")),
    "global-password": PASSWORDS,
    "global-clear_password": CHECKBOX,
    "global-rate_limit": RATE_LIMITS,
}


def test_system_settings_form(company_and_users, figures):
    client = QuickClient()
    client.force_login(company_and_users["ADMIN"])
    before = baseline("system settings form", SETTINGS_MODELS)
    tally = Tally("system settings form")

    @HYPOTHESIS
    @given(
        st.one_of(
            _form(SYSTEM_BASELINE, SYSTEM_FIELDS), _form(SYSTEM_BASELINE, SYSTEM_FIELDS), RAW_BODIES
        )
    )
    def run(data) -> None:
        tally.cases += 1
        with rolled_back():
            response = post_any(client, SYSTEM_URL, data)
            if response.status_code >= 500:
                tally.count(SERVER_ERRORS, data, str(response.status_code))
            if response.exc_info:
                tally.count(EXCEPTIONS, data, repr(response.exc_info[1]))
            if check_rows(tally, data, before, SETTINGS_MODELS):
                probe_messages(tally, data)  # the global sender is everyone's

    run()
    tally.record(figures, FIGURES)
    tally.check(FIGURES)


# -- `manage.py sender set` --------------------------------------------------------------------
OPTION_VALUES = {
    "--mode": MODES,
    "--server": st.one_of(SERVERS, st.just("")),
    "--security": SECURITIES,
    "--login": st.one_of(ADDRESSES, st.just("")),
    "--rate-limit": RATE_LIMITS,
    "--mail-sending-user": st.sampled_from(["", "ANNA", "BOB", "EVA", "ADMIN", "NOBODY"]),
}
WHO = st.one_of(
    st.sampled_from([["ANNA"], ["BOB"], ["EVA"], ["ADMIN"], ["--global"], ["ANNA", "--global"]]),
    st.sampled_from([["--global"], ["ANNA"]]),
    TEXT.map(lambda code: [f"--user-code-{code}"] if code.startswith("-") else [code]),
    st.just([]),
)


ANY_OPTIONS = st.fixed_dictionaries(
    {}, optional={option: weird(values) for option, values in OPTION_VALUES.items()}
)
PLAUSIBLE_OPTIONS = st.fixed_dictionaries({}, optional=OPTION_VALUES)  # near-valid values only
STDIN = st.one_of(PASSWORDS, spliced(PASSWORDS), LONG, st.just(""))


@st.composite
def sender_set_calls(draw) -> tuple[list[str], str | None]:
    """(arguments after `sender set`, what stdin holds or None) — values glued to `--opt=`
    so that a value starting with a dash stays a value."""
    plausible = draw(st.booleans())
    args = list(
        draw(st.sampled_from([["ANNA"], ["BOB"], ["EVA"], ["--global"]]) if plausible else WHO)
    )
    options = draw(PLAUSIBLE_OPTIONS if plausible else ANY_OPTIONS)
    for option, value in options.items():
        values = value if isinstance(value, list) else [value]
        args.extend(f"{option}={one}" for one in values)
    if draw(st.booleans()):
        args.append("--clear-password")
    stdin = None
    if draw(st.booleans()):
        args.append("--password-stdin")
        stdin = draw(PASSWORDS if plausible else STDIN)
    if not plausible and draw(st.integers(0, 9)) == 0:
        args.append(draw(TEXT))  # a stray argument
    order = draw(st.permutations(range(len(args))))
    return [args[i] for i in order], stdin


def test_sender_set(company_and_users, figures):
    before = baseline("sender set", SETTINGS_MODELS)
    tally = Tally("sender set")
    refused = 0

    @HYPOTHESIS
    @given(sender_set_calls())
    def run(call) -> None:
        nonlocal refused
        args, stdin = call
        tally.cases += 1
        out = io.StringIO()
        with rolled_back():
            try:
                with (
                    mock.patch.object(sys, "stdin", io.StringIO(stdin or "")),
                    contextlib.redirect_stdout(out),
                    contextlib.redirect_stderr(out),
                ):
                    call_command("sender", "set", *args, stdout=out, stderr=out)
            except CommandError:
                refused += 1
            except SystemExit as exit_:
                if exit_.code not in (0, None):  # only argparse's --help may end the command
                    tally.count(EXCEPTIONS, call, repr(exit_))
            except Exception as error:
                tally.count(EXCEPTIONS, call, repr(error))
            if check_rows(tally, call, before, SETTINGS_MODELS):
                probe_messages(tally, call)

    run()
    tally.record(figures, [EXCEPTIONS, INJECTIONS, INVALID_ROWS])
    figures.add(AREA, "sender set: refused with CommandError", refused)
    tally.check([EXCEPTIONS, INJECTIONS, INVALID_ROWS])


# -- the Microsoft 365 OAuth callback ------------------------------------------------------------
REAL_STATE = object()  # stands for the state of the flow waiting in the session
PARAM_VALUES = st.one_of(TEXT, spliced(TEXT), LONG, st.lists(TEXT, min_size=2, max_size=3))
CALLBACK_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "code": st.one_of(st.from_regex(r"[A-Za-z0-9._-]{10,80}", fullmatch=True), PARAM_VALUES),
        "state": st.one_of(st.just(REAL_STATE), st.just(REAL_STATE), PARAM_VALUES),
        "error": st.one_of(
            st.sampled_from(["access_denied", "consent_required", "invalid_client", "x"]),
            PARAM_VALUES,
        ),
        "error_description": st.one_of(
            st.just("AADSTS65001: The user or administrator has not consented."), PARAM_VALUES
        ),
        "session_state": PARAM_VALUES,
        "client_info": st.one_of(st.just("eyJ1aWQiOiIxIn0"), PARAM_VALUES),
        "popup": st.sampled_from(["1", "0", ""]),
    },
)
CALLBACKS = st.tuples(
    st.sampled_from(["none", "own", "own-popup", "another user's"]),
    st.one_of(
        st.builds(
            lambda p, e: {**e, **p}, CALLBACK_PARAMS, st.dictionaries(TEXT, TEXT, max_size=3)
        ),
        st.text(st.characters(codec="ascii"), max_size=200).map(lambda q: f"?{q}"),  # raw query
    ),
)


@contextlib.contextmanager
def connections_recorded() -> Iterator[list]:
    """Every address a socket connects to meanwhile (the local OpenID provider's, we expect)."""
    peers: list = []
    connect = socket.socket.connect

    def recording(sock, address):
        peers.append(address)
        return connect(sock, address)

    with mock.patch.object(socket.socket, "connect", recording):
        yield peers


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a name or a path: not what we expect


def test_microsoft365_callback(db, company_and_users, m365_settings, figures):
    anna = company_and_users["ANNA"]
    anna.email = "anna@contoso.test"
    anna.save()
    SenderProfile.objects.filter(user=anna).update(
        mode=SenderMode.MICROSOFT365, host="", port=None, login="anna@contoso.test"
    )
    client = QuickClient()
    client.force_login(anna)
    assert client.get(CONNECT_URL).status_code == 302  # a real flow, from the local provider
    session = client.session
    flow = session.pop(oauth_flows.SESSION_KEY)
    session.save()
    provider = m365_settings.provider
    before = baseline("OAuth callback", OAUTH_MODELS)
    tally = Tally("OAuth callback")
    forged_token_requests = 0
    with connections_recorded() as peers:

        @HYPOTHESIS
        @given(CALLBACKS)
        def run(callback) -> None:
            nonlocal forged_token_requests
            kind, params = callback
            tally.cases += 1
            with rolled_back():
                if kind != "none":
                    session = client.session
                    session[oauth_flows.SESSION_KEY] = {
                        **flow,
                        "popup": kind == "own-popup",
                        "user": anna.pk if kind.startswith("own") else anna.pk + 1000,
                    }
                    session.save()
                requests_before = len(provider.token_requests)
                if isinstance(params, str):
                    response = client.get(CALLBACK_URL + params)
                    state_is_real = False
                else:
                    state_is_real = params.get("state") is REAL_STATE and kind.startswith("own")
                    if "state" in params and params["state"] is REAL_STATE:
                        params = {**params, "state": flow["flow"]["state"]}
                    response = client.get(CALLBACK_URL, params)
                if response.status_code >= 500:
                    tally.count(SERVER_ERRORS, callback, str(response.status_code))
                if response.exc_info:
                    tally.count(EXCEPTIONS, callback, repr(response.exc_info[1]))
                if not state_is_real and len(provider.token_requests) > requests_before:
                    forged_token_requests += 1
                if check_rows(tally, callback, before, OAUTH_MODELS):
                    tally.count("rows written", callback, "a forged callback stored something")

        run()
    beyond = [peer for peer in peers if not _is_loopback(peer)]
    tally.counts["token requests without the flow's state"] = forged_token_requests
    tally.counts["connections beyond 127.0.0.1"] = len(beyond)
    names = [
        *FIGURES,
        "rows written",
        "token requests without the flow's state",
        "connections beyond 127.0.0.1",
    ]
    tally.record(figures, names)
    tally.check(names)


# -- the bounce intake --------------------------------------------------------------------------
DATA_FILES = ["dsn_01.txt", "dsn_05.txt", "postfix_01.txt", "qmail_01.txt", "simple_01.txt"]
HEADER_NAMES = [
    "From",
    "To",
    "Subject",
    "Message-ID",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
    "Return-Path",
    "X-Failed-Recipients",
    "Final-Recipient",
    "Original-Recipient",
    "Action",
    "Status",
    "Diagnostic-Code",
    "Auto-Submitted",
    "Delivered-To",
]
HEADER_VALUES = st.one_of(
    TEXT,
    spliced(TEXT),
    ADDRESSES,
    st.sampled_from(
        [
            'multipart/report; report-type=delivery-status; boundary="B"',
            "multipart/report; boundary=",
            'multipart/mixed; boundary=""',
            "message/delivery-status",
            "text/plain; charset=utf-99",
            "text/plain; charset=unknown-8bit",
            "base64",
            "quoted-printable",
            "x-uuencode",
            "rfc822; jan@kowalski.example",
            "failed",
            "delayed",
            "FAILED",
            "5.1.1",
            "9.9.9",
            "4.0.0",
            "5",
            "smtp; 550 5.1.1 user unknown",
            "smtp; 999",
            "auto-replied",
            "=?utf-8?b?////?=",
            "=?x-unknown?q?a?=",
        ]
    ),
)


def _dsn(message: OutgoingMessage, **fields: str) -> bytes:
    """tests/bounces/test_intake.py's RFC 3464 report, as Postfix writes it, for `message`."""
    from tests.bounces.test_intake import dsn

    return dsn(message, **fields)


@st.composite
def mutated(draw, bases: list[bytes]) -> bytes:
    """A real bounce with bytes inserted, deleted, cut, lines replaced or headers added."""
    raw = draw(st.sampled_from(bases))
    for _ in range(draw(st.integers(0, 4))):
        operation = draw(st.sampled_from(["insert", "delete", "cut", "line", "header", "repeat"]))
        at = draw(st.integers(0, len(raw)))
        if operation == "insert":
            raw = raw[:at] + draw(st.binary(max_size=40)) + raw[at:]
        elif operation == "delete":
            raw = raw[:at] + raw[at + draw(st.integers(1, 300)) :]
        elif operation == "cut":
            raw = raw[:at]
        elif operation == "repeat":
            raw = raw + raw[at:]
        else:
            lines = raw.split(b"\n")
            index = draw(st.integers(0, max(len(lines) - 1, 0)))
            value = draw(HEADER_VALUES)
            value = value if isinstance(value, str) else value[0] if value else ""
            name = draw(st.sampled_from(HEADER_NAMES))
            text = f"{name}: {value}\r".encode("utf-8", "surrogatepass")
            if operation == "line":
                lines[index] = text
            else:
                lines.insert(index, text)
            raw = b"\n".join(lines)
    return raw


def test_bounce_intake(company_and_users, settings, figures):
    settings.EVENT_MAIL_DOMAIN = EVENT_DOMAIN
    eva = company_and_users["EVA"]  # Reply-To mode: a VERP envelope names the message
    message = outbox_enqueue(
        user=eva, to=["jan@kowalski.example"], subject="Invoice", body_text="x"
    )
    OutgoingMessage.objects.filter(pk=message.pk).update(
        state=MessageState.SENT, sent_at=timezone.now()
    )
    message.refresh_from_db()
    genuine = message.envelope_from
    local, _, _domain = genuine.partition("@")
    pk, _, signature = local.removeprefix("bounces+").partition("-")
    other_signature = verp_address(int(pk) + 1, EVENT_DOMAIN).partition("-")[2].partition("@")[0]
    forged_addresses = st.one_of(
        st.from_regex(r"[0-9a-f]{16}", fullmatch=True).map(
            lambda sig: f"bounces+{pk}-{sig}@{EVENT_DOMAIN}"
        ),
        st.sampled_from(
            [
                f"bounces+{pk}-{other_signature}@{EVENT_DOMAIN}",  # another message's signature
                f"bounces+{int(pk) + 1}-{signature}@{EVENT_DOMAIN}",  # this one's, another pk
                f"bounces+{pk}-{signature[:-1]}@{EVENT_DOMAIN}",
                f"bounces+{pk}-{signature}0@{EVENT_DOMAIN}",
                f"bounces+{pk}@{EVENT_DOMAIN}",
                f"bounces+-{signature}@{EVENT_DOMAIN}",
                f"bounces+{pk}-@{EVENT_DOMAIN}",
            ]
        ),
    )
    bases = [
        _dsn(message),
        _dsn(message, action="delayed", status="4.4.1"),
        _dsn(message, recipient="other@kowalski.example"),
        *[(BOUNCE_DATA / name).read_bytes() for name in DATA_FILES],
    ]
    raws = st.one_of(
        mutated(bases),
        mutated(bases),
        st.builds(
            lambda to, status, diagnostic: _dsn(
                message, status=status, diagnostic=diagnostic
            ).replace(genuine.encode(), to.encode("utf-8", "surrogatepass")),
            st.one_of(forged_addresses, ADDRESSES),
            st.one_of(st.sampled_from(["5.1.1", "4.2.2", "2.0.0"]), TEXT),
            st.one_of(st.just("smtp; 550 5.1.1 unknown"), TEXT, spliced(TEXT), LONG),
        ),
        st.binary(max_size=2000),
    )
    envelopes = st.one_of(
        st.lists(forged_addresses, min_size=1, max_size=3).map(lambda a: ("forged", a)),
        st.lists(st.one_of(st.just(genuine), forged_addresses, ADDRESSES, TEXT), max_size=4).map(
            lambda a: ("any", a)
        ),
    )
    before = baseline("bounce intake", INTAKE_MODELS)
    events_before = Event.objects.count()
    tally = Tally("bounce intake")
    forged_events = internal_errors = 0

    @HYPOTHESIS
    @given(
        raws,
        envelopes,
        st.one_of(ADDRESSES, TEXT, spliced(TEXT), LONG, st.just("")),
        st.sampled_from(["pipe", "smtp", "webhook:postmark"]),  # set by the door, not the mail
    )
    def run(raw, envelope, sender, source) -> None:
        nonlocal forged_events, internal_errors
        kind, recipients = envelope
        sender = sender if isinstance(sender, str) else ""
        example = (raw[:300], envelope, sender[:100], source)
        tally.cases += 1
        with rolled_back():
            try:
                mail = bounce_ingest(
                    raw=raw,
                    source=source,
                    envelope_sender=sender,
                    envelope_recipients=recipients,
                )
            except Exception as error:  # nothing may escape to the door
                tally.count(EXCEPTIONS, example, repr(error))
                return
            if mail.reason == "internal_error":
                internal_errors += 1
                tally.count("kept as internal_error", example, mail.error)
            if kind == "forged" and Event.objects.count() > events_before:
                forged_events += 1
                tally.count("events from forged VERP", example, mail.reason)
            check_rows(tally, example, before, INTAKE_MODELS)

    run()
    names = [EXCEPTIONS, INVALID_ROWS, "events from forged VERP", "kept as internal_error"]
    tally.record(figures, names)
    tally.check(names)
