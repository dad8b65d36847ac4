"""The explanation catalogue: real server replies and real network failures → key, class, words.

Exceptions are produced for real wherever that is possible on 127.0.0.1: a closed port, servers
that say nothing or hang up, aiosmtpd servers, a plain server met with TLS and a TLS server with
bad certificates. Only DNS is not asked: `AI_NUMERICHOST` makes getaddrinfo fail on a name
without sending a query anywhere.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.utils import translation

from smtp_settings.errors import PermanentSendError, SendError, TransientSendError
from smtp_settings.explain import (
    CATALOGUE,
    GENERIC,
    MISSING,
    error_from_exception,
    error_from_reply,
    explain,
)

HOST = "127.0.0.1"
CERT_NAME = "mail.example.test"
SAMPLE_PARAMS = {
    "host": "smtp.example.test",
    "port": 587,
    "security": "ssl",
    "login": "anna@example.test",
    "ips": ["192.0.2.10", "192.0.2.11"],
    "address": "10.0.0.5",
    "header": "From",
    "message": "The mail sender is SMTP but no server is set.",
    "error": "invalid_grant: AADSTS50173: The provided grant has expired.",
}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")

T, P = TransientSendError, PermanentSendError

# -- replies -----------------------------------------------------------------------------------
# (code, text as smtplib hands it over, stage, key, class). Texts are real servers' words.
REPLIES = [
    # Gmail (S4.1, S4.2)
    (
        534,
        "5.7.9 Application-specific password required. For more information, go to\n"
        "5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor "
        "ffacd0b85a97d-368119970e7sm1809147f8f.21 - gsmtp",
        "auth",
        "gmail_app_password",
        P,
    ),
    (
        534,
        "5.7.14 <https://accounts.google.com/signin/continue?sarp=1>\n"
        "5.7.14 Please log in via your web browser and then try again.",
        "auth",
        "gmail_app_password",
        P,
    ),
    (
        535,
        "5.7.8 Username and Password not accepted. For more information, go to\n"
        "5.7.8  https://support.google.com/mail/?p=BadCredentials af79cd13be357 - gsmtp",
        "auth",
        "auth_failed",
        P,
    ),
    (
        530,
        "5.7.0 Must issue a STARTTLS command first. x8sm - gsmtp",
        "mail",
        "starttls_required",
        P,
    ),
    (530, "5.7.0 Authentication Required. Learn more at", "mail", "auth_required", P),
    (
        421,
        "4.7.0 Try again later, closing connection. (EHLO) g4sm240722pgs.42 - gsmtp",
        "ehlo",
        "throttled",
        T,
    ),
    (454, "4.7.0 Too many login attempts, please try again later.", "auth", "throttled", T),
    (
        450,
        "4.2.1 The user you are trying to contact is receiving mail too quickly.",
        "rcpt",
        "throttled",
        T,
    ),
    (550, "5.4.5 Daily user sending limit exceeded.", "mail", "daily_limit", P),
    (
        552,
        "5.2.3 Your message exceeded Google's message size limits.",
        "data",
        "message_too_large",
        P,
    ),
    (
        550,
        "5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "5.1.1 double-checking the recipient's email address for typos.",
        "rcpt",
        "recipient_unknown",
        P,
    ),
    (
        550,
        "5.7.26 This mail has been blocked because the sender is unauthenticated.\n"
        "5.7.26 Gmail requires all senders to authenticate with either SPF or DKIM.",
        "data",
        "spf_rejected",
        P,
    ),
    # Microsoft 365 (S5)
    (
        535,
        "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
        "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
        "[MN2PR05CA0004.namprd05.prod.outlook.com 2023-09-12T20:59:57.214Z 08DBB276B7E699C4]",
        "auth",
        "m365_smtp_auth_disabled",
        P,
    ),
    (
        535,
        "5.7.139 Authentication unsuccessful, the request did not meet the criteria to be "
        "authenticated successfully. Contact your administrator.",
        "auth",
        "m365_smtp_auth_disabled",
        P,
    ),
    (
        535,
        "5.7.139 Authentication unsuccessful, basic authentication is disabled. "
        "[PN0PR01CA0024.INDPRD01.PROD.OUTLOOK.COM]",
        "auth",
        "m365_basic_auth",
        P,
    ),
    (
        550,
        "5.7.30 Basic authentication is not supported for Client Submission.",
        "auth",
        "m365_basic_auth",
        P,
    ),
    (
        535,
        "5.7.139 Authentication unsuccessful, the user credentials were incorrect.",
        "auth",
        "auth_failed",
        P,
    ),
    (
        535,
        "5.7.3 Authentication unsuccessful [DB6P18901CA0015.EURP189.PROD.OUTLOOK.COM]",
        "auth",
        "auth_failed",
        P,
    ),
    (530, "5.7.57 Client not authenticated to send mail.", "mail", "auth_required", P),
    (
        451,
        "5.7.3 STARTTLS is required to send mail [AM0PR02CA0001]",
        "mail",
        "starttls_required",
        P,
    ),
    (
        554,
        "5.2.252 SendAsDenied; anna@acme.test not allowed to send as invoices@acme.test; "
        "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
        "data",
        "sender_denied",
        P,
    ),
    (
        554,
        "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
        "process message due to a permanent exception with message Cannot submit message.",
        "data",
        "daily_limit",
        P,
    ),
    (
        552,
        "5.3.4 Message size exceeds fixed maximum message size",
        "data",
        "message_too_large",
        P,
    ),
    (
        550,
        "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "rcpt",
        "recipient_unknown",
        P,
    ),
    (
        550,
        "5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        "rcpt",
        "relay_denied",
        P,
    ),
    (550, "5.7.606 Access denied, banned sending IP [192.0.2.10]", "connect", "ip_not_allowed", P),
    (
        432,
        "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
        "data",
        "throttled",
        T,
    ),
    # Postfix, Exim, others
    (554, "5.7.1 <bob@elsewhere.test>: Relay access denied", "rcpt", "relay_denied", P),
    (550, "5.7.1 Relaying denied", "rcpt", "relay_denied", P),
    (454, "4.7.1 <bob@elsewhere.test>: Relay access denied", "rcpt", "relay_denied", P),
    (
        553,
        "5.7.1 <invoices@acme.test>: Sender address rejected: not owned by user anna@acme.test",
        "rcpt",
        "sender_denied",
        P,
    ),
    (
        553,
        "5.7.1 <anna@acme.test>: Sender address rejected: not logged in",
        "rcpt",
        "auth_required",
        P,
    ),
    (550, "5.7.1 Sender denied", "mail", "sender_denied", P),
    (550, "5.7.1 Message rejected as spam by Content Filtering.", "data", "rejected", P),
    (
        550,
        "5.1.1 <bob@acme.test>: Recipient address rejected: User unknown in local recipient table",
        "rcpt",
        "recipient_unknown",
        P,
    ),
    (
        554,
        "5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org",
        "rcpt",
        "ip_not_allowed",
        P,
    ),
    (535, "Incorrect authentication data", "auth", "auth_failed", P),
    (504, "5.5.4 Unrecognized authentication type", "auth", "auth_method_unsupported", P),
    (552, "5.3.4 Message size exceeds fixed limit", "data", "message_too_large", P),
    (552, "5.2.2 The email account that you tried to reach is over quota.", "rcpt", "rejected", P),
    (
        538,
        "5.7.11 Encryption required for requested authentication mechanism",
        "auth",
        "starttls_required",
        P,
    ),
    (451, "4.7.1 Greylisting in action, please come back later", "rcpt", "throttled", T),
    (421, "4.3.0 Service shutting down", "mail", "throttled", T),
    (451, "4.3.0 Error: queue file write error", "data", "temporary_failure", T),
    (452, "4.2.2 Mailbox full", "rcpt", "temporary_failure", T),
    (
        554,
        "5.7.1 Your access to this mail system has been rejected",
        "connect",
        "ip_not_allowed",
        P,
    ),
    (554, "Transaction failed", "data", "rejected", P),
    (500, "5.5.2 Error: bad syntax", "auth", "auth_failed", P),
    (-1, "", "data", GENERIC, P),
]


@pytest.mark.parametrize(
    ("code", "text", "stage", "key", "cls"),
    REPLIES,
    ids=[f"{row[0]}-{row[1][:40]}" for row in REPLIES],
)
def test_reply_is_matched(code, text, stage, key, cls):
    error = error_from_reply(code, text, stage=stage, params={"host": "smtp.example.test"})

    assert error.explanation == key
    assert type(error) is cls
    assert error.transient is CATALOGUE[error.explanation].transient
    assert error.reply == f"{code} {text}"
    assert error.params == {"host": "smtp.example.test"}


def test_reply_keeps_every_line_and_accepts_bytes():
    text = b"5.7.9 Application-specific password required.\n5.7.9  https://support.google.com"

    error = error_from_reply(534, text, stage="auth")

    assert error.reply == (
        "534 5.7.9 Application-specific password required.\n5.7.9  https://support.google.com"
    )
    assert error.params == {}


def test_raw_reply_lines_with_their_codes_still_match():
    text = "535-5.7.8 Username and Password not accepted.\n535 5.7.8  https://support.google.com"

    assert error_from_reply(535, text, stage="auth").explanation == "auth_failed"


def test_an_unknown_stage_does_not_hide_the_failure():
    error = error_from_reply(421, "4.7.0 Try again later", stage="somewhere")

    assert error.explanation == "throttled"


# -- real exceptions ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _serve_once(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that hands its first connection to `handle`."""
    listener = socket.create_server((HOST, 0))
    listener.settimeout(10)

    def run() -> None:
        with contextlib.suppress(OSError):
            conn, _address = listener.accept()
            with conn:
                handle(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


def _wait_for_close(conn: socket.socket) -> None:
    conn.settimeout(10)
    with contextlib.suppress(OSError):
        while conn.recv(4096):
            pass


@contextlib.contextmanager
def _aiosmtpd(handler: object | None = None, **options) -> Iterator[int]:
    port = _free_port()
    controller = Controller(
        handler or _Accept(), hostname=HOST, port=port, server_hostname="localhost", **options
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


class _Accept:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok: queued"


class _UnknownRecipient(_Accept):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


def _reject_all(server, session, envelope, mechanism, auth_data) -> AuthResult:
    return AuthResult(success=False, handled=False)


def _catch(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except BaseException as exc:  # the test wants whatever was raised
        return exc
    raise AssertionError("nothing was raised")


def _check(exc: BaseException, stage: str, key: str, cls: type[SendError]) -> SendError:
    error = error_from_exception(exc, stage=stage, params={"host": HOST})
    assert error.explanation == key, repr(exc)
    assert type(error) is cls
    assert error.reply
    return error


def test_dns_name_that_does_not_exist():
    # AI_NUMERICHOST: getaddrinfo refuses a name without asking any resolver.
    exc = _catch(
        lambda: socket.getaddrinfo("smtp.example.invalid", 25, flags=socket.AI_NUMERICHOST)
    )
    assert isinstance(exc, socket.gaierror)

    error = _check(exc, "dns", "dns_not_found", P)
    assert "gaierror" in error.reply


def test_dns_resolver_down_is_worth_a_retry():
    exc = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    _check(exc, "dns", "dns_temporary", T)


def test_connection_refused_on_a_closed_port():
    exc = _catch(lambda: smtplib.SMTP(HOST, _free_port(), timeout=5))
    assert isinstance(exc, ConnectionRefusedError)

    _check(exc, "connect", "connection_refused", P)


def test_server_that_never_greets_times_out():
    with _serve_once(_wait_for_close) as port:
        exc = _catch(lambda: smtplib.SMTP(HOST, port, timeout=0.3))
    # smtplib reports the timeout of a reply as a disconnection.
    assert isinstance(exc, smtplib.SMTPServerDisconnected)
    assert isinstance(exc.__context__, TimeoutError)

    _check(exc, "connect", "connection_timeout", T)
    _check(exc, "data", "connection_lost", T)


def test_timeout_while_connecting():
    exc = TimeoutError("timed out")  # socket.timeout: what socket.create_connection raises

    _check(exc, "connect", "connection_timeout", T)
    _check(exc, "data", "connection_lost", T)


def test_network_unreachable():
    exc = OSError(errno.ENETUNREACH, "Network is unreachable")

    _check(exc, "connect", "connection_timeout", T)


def test_server_that_hangs_up_is_connection_lost():
    with _serve_once(lambda conn: None) as port:
        exc = _catch(lambda: smtplib.SMTP(HOST, port, timeout=5))
    assert isinstance(exc, smtplib.SMTPServerDisconnected)

    _check(exc, "connect", "connection_lost", T)
    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    _check(reset, "data", "connection_lost", T)


def test_ssl_against_a_plain_smtp_server_means_starttls_was_needed():
    with _aiosmtpd() as port:
        exc = _catch(
            lambda: smtplib.SMTP_SSL(HOST, port, timeout=5, context=ssl.create_default_context())
        )
    assert isinstance(exc, ssl.SSLError)
    assert not isinstance(exc, ssl.SSLCertVerificationError)

    error = _check(exc, "tls", "tls_wrong_port", P)
    assert _check(exc, "connect", "tls_wrong_port", P).reply == error.reply
    with translation.override("en"):
        words = explain(error.explanation, {"security": "ssl", "port": 587})
    assert "You chose SSL on port 587" in words["fix"]
    assert "StartTLS" in words["fix"]


def test_server_without_starttls():
    with _aiosmtpd() as port, smtplib.SMTP(HOST, port, timeout=5) as smtp:
        smtp.ehlo()
        exc = _catch(smtp.starttls)
    assert isinstance(exc, smtplib.SMTPNotSupportedError)

    _check(exc, "starttls", "starttls_not_offered", P)


def test_server_without_auth_while_a_user_name_is_set():
    # aiosmtpd offers AUTH only over TLS by default: on this plain connection there is none.
    with _aiosmtpd() as port, smtplib.SMTP(HOST, port, timeout=5) as smtp:
        exc = _catch(lambda: smtp.login("anna@example.test", "secret"))
    assert isinstance(exc, smtplib.SMTPNotSupportedError)

    _check(exc, "auth", "auth_not_offered", P)


def test_wrong_password():
    with (
        _aiosmtpd(authenticator=_reject_all, auth_require_tls=False) as port,
        smtplib.SMTP(HOST, port, timeout=5) as smtp,
    ):
        exc = _catch(lambda: smtp.login("anna@example.test", "wrong"))
    assert isinstance(exc, smtplib.SMTPAuthenticationError)

    error = _check(exc, "auth", "auth_failed", P)
    assert error.reply == "535 5.7.8 Authentication credentials invalid"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_server_that_wants_a_login():
    with (
        _aiosmtpd(authenticator=_reject_all, auth_require_tls=False, auth_required=True) as port,
        smtplib.SMTP(HOST, port, timeout=5) as smtp,
    ):
        exc = _catch(lambda: smtp.sendmail("anna@example.test", ["bob@example.test"], b"Hi"))
    assert isinstance(exc, smtplib.SMTPSenderRefused)

    error = _check(exc, "mail", "auth_required", P)
    assert error.reply == "530 5.7.0 Authentication required"


def test_every_recipient_refused():
    with _aiosmtpd(_UnknownRecipient()) as port, smtplib.SMTP(HOST, port, timeout=5) as smtp:
        exc = _catch(
            lambda: smtp.sendmail("anna@example.test", ["bob@example.test", "eve@x.test"], b"Hi")
        )
    assert isinstance(exc, smtplib.SMTPRecipientsRefused)

    error = _check(exc, "rcpt", "recipient_unknown", P)
    assert "bob@example.test: 550 5.1.1" in error.reply
    assert "eve@x.test: 550 5.1.1" in error.reply


def test_a_permanent_refusal_decides_over_a_temporary_one():
    exc = smtplib.SMTPRecipientsRefused(
        {
            "a@example.test": (450, b"4.2.1 Try again later"),
            "b@example.test": (550, b"5.1.1 User unknown"),
        }
    )

    _check(exc, "rcpt", "recipient_unknown", P)


def test_message_too_large():
    with _aiosmtpd(data_size_limit=64) as port, smtplib.SMTP(HOST, port, timeout=5) as smtp:
        exc = _catch(lambda: smtp.sendmail("anna@example.test", ["bob@example.test"], b"x" * 500))
    assert isinstance(exc, smtplib.SMTPSenderRefused)  # SIZE is announced in MAIL FROM

    _check(exc, "mail", "message_too_large", P)


def test_no_suitable_authentication_method():
    _check(
        smtplib.SMTPException("No suitable authentication method found."),
        "auth",
        "auth_method_unsupported",
        P,
    )


def test_a_send_error_passes_through_unchanged():
    error = PermanentSendError("", explanation="starttls_not_offered")

    assert error_from_exception(error, stage="starttls") is error


def test_anything_else_is_generic_and_permanent():
    _check(RuntimeError("surprise"), "data", GENERIC, P)


# -- certificates: a local TLS server with certificates made here -------------------------------
def _certificate(tmp_path: Path, *, days_valid: tuple[int, int] = (-1, 30)) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days_valid[0]))
        .not_valid_after(now + datetime.timedelta(days=days_valid[1]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(CERT_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _tls_handshake_error(
    cert: tuple[Path, Path], client: ssl.SSLContext, server_hostname: str
) -> BaseException:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(*cert)

    def handle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), server.wrap_socket(conn, server_side=True):
            pass

    with _serve_once(handle) as port, socket.create_connection((HOST, port), timeout=5) as raw:
        return _catch(lambda: client.wrap_socket(raw, server_hostname=server_hostname))


def test_self_signed_certificate_is_untrusted(tmp_path):
    exc = _tls_handshake_error(_certificate(tmp_path), ssl.create_default_context(), CERT_NAME)
    assert isinstance(exc, ssl.SSLCertVerificationError)

    _check(exc, "tls", "cert_untrusted", P)


def test_expired_certificate(tmp_path):
    cert = _certificate(tmp_path, days_valid=(-30, -1))
    client = ssl.create_default_context(cafile=str(cert[0]))

    exc = _tls_handshake_error(cert, client, CERT_NAME)
    assert isinstance(exc, ssl.SSLCertVerificationError)
    assert exc.verify_code == 10

    _check(exc, "starttls", "cert_expired", P)


def test_certificate_for_another_host_name(tmp_path):
    cert = _certificate(tmp_path)
    client = ssl.create_default_context(cafile=str(cert[0]))

    exc = _tls_handshake_error(cert, client, "smtp.other.test")
    assert isinstance(exc, ssl.SSLCertVerificationError)

    error = _check(exc, "tls", "cert_hostname", P)
    assert "smtp.other.test" in error.reply


# -- the words ---------------------------------------------------------------------------------
# (key, params, English words, Polish words): the fix a user must read, in their language.
WORDS = [
    (
        "gmail_app_password",
        {},
        ["app password", "2-Step Verification", "without the spaces"],
        ["hasło aplikacji", "weryfikację dwuetapową", "bez spacji"],
    ),
    (
        "auth_failed",
        {"login": "anna@gmail.com"},
        ["anna@gmail.com", "app password"],
        ["hasłem aplikacji"],
    ),
    (
        "m365_smtp_auth_disabled",
        {},
        ["Authenticated SMTP", "Users → Active users", "Manage email apps"],
        ["Uwierzytelniony SMTP", "Aktywni użytkownicy", "Zarządzaj aplikacjami e-mailowymi"],
    ),
    (
        "m365_basic_auth",
        {},
        ["Microsoft 365 OAUTH", "Authenticate with Microsoft 365"],
        ["Microsoft 365 OAUTH", "Uwierzytelnij za pomocą usługi Microsoft 365"],
    ),
    ("starttls_required", {}, ["StartTLS", "465"], ["StartTLS", "465"]),
    (
        "tls_wrong_port",
        {"security": "ssl", "port": 25},
        ["SSL on port 25", "StartTLS"],
        ["SSL na porcie 25", "StartTLS"],
    ),
    (
        "relay_denied",
        {"ips": ["192.0.2.10"]},
        ["192.0.2.10", "Directo-Reply-to"],
        ["192.0.2.10", "Directo-Reply-to", "nadawcę wiadomości e-mail"],
    ),
    ("sender_denied", {}, ["Directo-Reply-to"], ["Directo-Reply-to"]),
    ("spf_rejected", {}, ["SPF", "Directo-Reply-to"], ["SPF", "Directo-Reply-to"]),
    (
        "connection_refused",
        {"host": "mail.acme.test", "port": 587, "ips": ["192.0.2.10", "192.0.2.11"]},
        ["mail.acme.test:587", "firewall", "192.0.2.10, 192.0.2.11"],
        ["mail.acme.test:587", "zapora", "192.0.2.10, 192.0.2.11"],
    ),
    ("dns_not_found", {"host": "smtp.gmial.com"}, ["smtp.gmial.com"], ["smtp.gmial.com"]),
    (
        "cert_hostname",
        {"host": "mail.acme.test"},
        ["mail.acme.test", "server name"],
        ["mail.acme.test", "nazwę serwera"],
    ),
    ("cert_expired", {}, ["expired"], ["wygasł"]),
    ("cert_untrusted", {}, ["self-signed"], ["podpisany samodzielnie"]),
    ("message_too_large", {}, ["attachments"], ["załączniki"]),
    ("recipient_unknown", {}, ["does not exist"], ["nie istnieje"]),
    ("starttls_not_offered", {}, ["StartTLS"], ["StartTLS"]),
    ("auth_not_offered", {}, ["clear the user name"], ["usuń nazwę użytkownika"]),
    ("throttled", {}, ["tries again later"], ["ponowi próbę"]),
]


@pytest.mark.parametrize(("key", "params", "english", "polish"), WORDS, ids=[w[0] for w in WORDS])
def test_explanation_speaks_english_and_polish(key, params, english, polish):
    with translation.override("en"):
        words = explain(key, params)
    text = f"{words['title']} {words['fix']}"
    for expected in english:
        assert expected in text, (key, expected, text)

    with translation.override("pl"):
        words = explain(key, params)
    text = f"{words['title']} {words['fix']}"
    for expected in polish:
        assert expected in text, (key, expected, text)


def test_estonian_too():
    with translation.override("et"):
        gmail = explain("gmail_app_password")
        m365 = explain("m365_smtp_auth_disabled")

    assert "rakenduse parool" in gmail["fix"]
    assert "kaheastmeline kinnitamine" in gmail["fix"]
    assert "Autenditud SMTP" in m365["fix"]


@pytest.mark.parametrize("language", ["en", "pl", "et"])
@pytest.mark.parametrize("key", sorted(CATALOGUE))
def test_every_entry_is_complete_in_every_language(key, language):
    entry = CATALOGUE[key]
    assert entry.key == key
    with translation.override(language):
        words = explain(key, SAMPLE_PARAMS)
        bare = explain(key)  # never raises, whatever the fix needs
    with translation.override("en"):
        english = explain(key, SAMPLE_PARAMS)

    assert words["title"].strip()
    assert words["fix"].strip()
    assert "%(" not in words["fix"] and MISSING not in words["fix"]
    for name in PLACEHOLDER.findall(str(entry.fix)):
        assert name in SAMPLE_PARAMS
    if language != "en":
        assert words["title"] != english["title"], f"{key}: title not translated"
        assert words["fix"] != english["fix"] or key == "sender_config"
    assert bare["title"] == words["title"]


def test_security_is_shown_by_its_label_in_the_readers_language():
    with translation.override("pl"):
        fix = explain("tls_wrong_port", {"security": "none", "port": 25})["fix"]

    assert "NIE (bez szyfrowania)" in fix


def test_sending_ips_come_from_the_settings_when_not_given(settings):
    settings.PLATFORM_SENDING_IPS = ["90.190.150.210", "90.190.150.82"]

    fix = explain("connection_refused", {"host": "smtp.acme.test", "port": 25})["fix"]

    assert "90.190.150.210, 90.190.150.82" in fix


def test_missing_params_render_as_an_ellipsis(settings):
    settings.PLATFORM_SENDING_IPS = []

    with translation.override("en"):
        fix = explain("connection_refused")["fix"]

    assert f"({MISSING}:{MISSING})" in fix
    assert "ask your administrator for the list" in fix


def test_unknown_key_gets_the_generic_entry():
    assert explain("no_such_key") == explain(GENERIC)
    assert explain("") == explain(GENERIC)


def test_transient_entries_are_exactly_the_ones_worth_waiting_for():
    transient = {key for key, entry in CATALOGUE.items() if entry.transient}

    assert transient == {
        "throttled",
        "temporary_failure",
        "connection_timeout",
        "connection_lost",
        "dns_temporary",
        "platform_offline",  # the platform's own DNS or network: it comes back
        "possibly_duplicated",
    }
