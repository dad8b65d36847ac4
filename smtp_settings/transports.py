"""Transports: deliver a built message over one connection (open → send… → close).

`transport_for(sender)` picks the transport for a resolved sender and is the only place a
stored secret is decrypted. Every failure becomes a `SendError` carrying the server's reply
and an explanation key (smtp_settings.explain); nothing here retries.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Protocol

from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_variables

from . import crypto, providers
from .errors import PermanentSendError, SendError, TransientSendError
from .explain import error_from_exception, error_from_reply
from .models import Security, SenderProfile
from .resolve import SenderConfig, SenderConfigError, TransportKind
from .validation import address_is_public

logger = logging.getLogger(__name__)


class Envelope(Protocol):
    mail_from: str
    recipients: tuple[str, ...]


class Transport:
    """Delivers messages over one connection: a batch opens once and closes once."""

    def open(self) -> None:
        raise NotImplementedError

    def send(self, mime: Message, envelope: Envelope) -> str:
        """Deliver one message (its wire bytes, or a built EmailMessage); return the server's
        final reply."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def tls_context() -> ssl.SSLContext:
    """Certificates and host names verified against the system trust store (TLS 1.2+)."""
    return ssl.create_default_context()


def _connect(address: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((address, port), timeout)
    # Without it, StartTLS over loopback stalls ~40 ms a mail (Nagle vs. delayed ACKs).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


Message = bytes | EmailMessage  # the wire bytes (CRLF) from outbox.message, or a built message
_LINE_END = re.compile(rb"\r\n|\r|\n")
# A dot-atom address with an ASCII domain: written as is in a header (outbox.mimewrite) and as
# "<address>" for an SMTP path (what smtplib.quoteaddr makes of it, without parsing it as an
# RFC 5322 address list first).
DOT_ATOM_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\Z")


def _path(address: str) -> str:
    return f"<{address}>" if DOT_ATOM_ADDRESS.match(address) else smtplib.quoteaddr(address)


class CrlfBytes(bytes):
    """Bytes whose every line end is CRLF: made so by crlf(), or written so by outbox.mimewrite
    (tests/outbox/test_mimewrite.py checks it for every shape it writes). `_SMTP.body` need not
    look again (three counts over a 60 KB mail, ~0.1 ms). Anything done to them (a slice, a
    concatenation) gives plain bytes, which are checked. `dot_lines` False: no line begins
    with "." (the writer knows; nothing to double), True: unknown or some do."""

    dot_lines: bool = True


def crlf(data: bytes) -> CrlfBytes:
    """`data` with every line end CRLF (as RFC 5321 has them on the wire)."""
    if type(data) is CrlfBytes:
        return data
    if data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r"):
        return CrlfBytes(data)
    return CrlfBytes(_LINE_END.sub(b"\r\n", data))


def wire_bytes(mime: Message) -> bytes:
    """The message as bytes: as given (outbox.message.message_bytes makes them), or an
    EmailMessage flattened with the SMTP policy. `_SMTP.body` makes every line end CRLF."""
    return mime if isinstance(mime, bytes) else mime.as_bytes(policy=policy.SMTP)


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP over a socket this module opened (resolved, checked, maybe TLS-wrapped)."""

    premade_socket: socket.socket | None = None
    body_sent = False  # the message's last line (".") went out; its reply is awaited

    def _get_socket(self, host, port, timeout):
        sock, self.premade_socket = self.premade_socket, None
        return sock

    def send(self, s) -> None:
        super().send(s)
        # smtplib.data() sends the whole body in one call, ending with the lone ".".
        if isinstance(s, bytes) and s.endswith(b"\r\n.\r\n"):
            self.body_sent = True

    def data_crlf(self, data: bytes) -> tuple[int, bytes]:
        """DATA for a message whose line ends are all CRLF already: smtplib's data() runs two
        regular expressions over the whole message (line ends, leading dots); here the dots are
        doubled with one bytes.replace (RFC 5321 §4.5.2)."""
        code, reply = self.docmd("data")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        return self.body(data)

    def body(self, data: bytes) -> tuple[int, bytes]:
        """After "354": the message, its leading dots doubled, and the final "."; its reply.

        Dot-stuffing by CRLF alone is right only when every line end is CRLF: bytes with a
        bare CR or LF (no caller of ours makes them) are made CRLF first, so no "\\n.\\n"
        can end the message early for a server that reads bare line ends (SMTP smuggling).
        """
        data = crlf(data)
        stuffed = data.replace(b"\r\n.", b"\r\n..") if data.dot_lines else data
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        self.send(stuffed + b".\r\n")
        return self.getreply()


def _tls_detail(sock: ssl.SSLSocket) -> str:
    cert = sock.getpeercert() or {}
    subject = dict(item[0] for item in cert.get("subject", ()))
    return f"{sock.version()}, {subject.get('commonName', '?')}, {cert.get('notAfter', '')}"


def resolve_host(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to; refuses loopback, private and link-local ones unless allowed.

    The check and the connection use the same address, so DNS cannot change it in between.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        # Whose fault? A provider's well-known server always exists, and when the platform
        # cannot look up any name at all, its own DNS or network is down: not a typo.
        if host.lower().rstrip(".") in WELL_KNOWN_HOSTS or not platform_resolves():
            raise TransientSendError(
                f"{type(error).__name__}: {error}",
                explanation="platform_offline",
                params={"host": host},
            ) from error
        raise
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        check_resolved(host, addresses)
    return addresses[0]


# Mail servers of the providers the card names (its presets and help): they exist, so a
# failure to look one up is the platform's, never the user's typo.
WELL_KNOWN_HOSTS = frozenset(
    {
        "smtp.gmail.com",
        "smtp.googlemail.com",
        "smtp.office365.com",
        "smtp-mail.outlook.com",
        "outlook.office365.com",
    }
)
_resolves_cache: dict[str, tuple[float, bool]] = {}


def platform_resolves() -> bool:
    """Whether the platform can look names up at all now: any answer from its resolver
    (DNS_NAMESERVERS, else the system's) about DNS_CANARY_HOST, "no such name" included,
    says yes; no answer says no. Remembered for 30 seconds."""
    import time

    import dns.exception
    import dns.resolver

    from .domaincheck import resolver

    canary = settings.DNS_CANARY_HOST
    now = time.monotonic()
    cached = _resolves_cache.get(canary)
    if cached and now - cached[0] < 30:
        return cached[1]
    ask = resolver()
    ask.lifetime = min(ask.lifetime, 3.0)
    try:
        ask.resolve(canary, "A", search=False)
        answered = True
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        answered = True
    except dns.exception.DNSException:
        answered = False
    _resolves_cache[canary] = (now, answered)
    return answered


def check_resolved(host: str, addresses: list[str]) -> None:
    """Refuse the connection when any address `host` resolved to is not public (IPv4 inside
    IPv6 included: smtp_settings.validation.address_is_public).

    The error names the host the user typed, never the address: a private address is the
    platform's network, not the user's business (issue 11, item 10).
    """
    if not all(address_is_public(address) for address in addresses):
        raise PermanentSendError("", explanation="private_host", params={"host": host})


def _same_host(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`address` as the host it reaches: IPv4-mapped IPv6 as its IPv4 address, no zone index."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _reaches_this_machine(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_loopback or ip.is_unspecified


def check_not_relay(host: str, address: str, port: int) -> None:
    """Refuse a user's "own" server that is the platform relay itself.

    The relay trusts the platform's connections (the local MTA, or one that lets the
    platform's addresses relay without a login): through it as an "own" SMTP server, a user
    would send From an unverified card e-mail (issue 11, item 3) past the relay's limits
    (item 4). It is the relay when the address connected to is one the relay's name resolves
    to: on any port (an MTA listens on 25 and 587 alike), except on a loopback address, where
    other services share the machine and only the relay's port counts, for any loopback
    address. A relay reachable under another address too (a public one beside EMAIL_URL's
    private one) must not let the platform relay without a login: this cannot know that one.
    """
    if settings.EMAIL_BACKEND != SMTP_BACKEND or not settings.EMAIL_HOST:
        return  # an ESP's API: no SMTP server of the platform's to reach
    relay_port = int(settings.EMAIL_PORT)
    target = _same_host(address)
    try:
        infos = socket.getaddrinfo(settings.EMAIL_HOST, relay_port, type=socket.SOCK_STREAM)
        relay = {_same_host(info[4][0]) for info in infos}
    except (OSError, ValueError):  # the relay does not resolve now: compare the name at least
        relay = set()
    local = _reaches_this_machine(target)
    is_relay = (
        (target in relay and (port == relay_port or not local))
        or (local and port == relay_port and any(map(_reaches_this_machine, relay)))
        or (
            port == relay_port
            and host.rstrip(".").lower() == settings.EMAIL_HOST.rstrip(".").lower()
        )
    )
    if is_relay:
        raise PermanentSendError(
            "", explanation="relay_as_own_server", params={"host": host, "port": port}
        )


def _first_refusal(
    stages: list[str], replies: list[tuple[int, bytes]]
) -> tuple[str, tuple[int, bytes]] | None:
    """The first MAIL or RCPT reply that refused (MAIL wants 250, RCPT 250 or 251), with its
    stage; None when all of those read so far accepted."""
    for stage, (code, reply) in zip(stages, replies, strict=False):
        if code not in ((250,) if stage == "mail" else (250, 251)):
            return stage, (code, reply)
    return None


class SmtpTransport(Transport):
    """An SMTP server: implicit TLS ("SSL"), StartTLS or none; AUTH only with a login."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: str,
        login: str = "",
        password: str = "",
        timeout: float | None = None,
        check_private: bool = True,
        unencrypted_auth_ok: bool = False,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.login, self._password = login, password
        self.timeout = settings.SMTP_TIMEOUT if timeout is None else timeout
        self.check_private = check_private
        # AUTH over a connection that is not encrypted, confirmed for exactly this server.
        self.unencrypted_auth_ok = unencrypted_auth_ok
        self.smtp: smtplib.SMTP | None = None
        self.stage = "connect"

    def __repr__(self) -> str:  # never the password
        return f"<SmtpTransport {self.host}:{self.port} {self.security} login={self.login!r}>"

    @property
    def authenticates(self) -> bool:
        """Whether AUTH runs: with a login (an empty one means no authentication, S3.3)."""
        return bool(self.login)

    @property
    def params(self) -> dict:
        """What an explanation may name: the server, never the password."""
        return {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "login": self.login,
        }

    def open(self) -> None:
        try:
            self._open()
        except SendError:
            self.close()
            raise
        except (OSError, smtplib.SMTPException) as error:
            self.close()
            raise error_from_exception(error, stage=self.stage, params=self.params) from None

    def _done(self, stage: str, detail: str = "") -> None:
        self.progress.append((stage, detail))

    def _open(self) -> None:
        self.progress: list[tuple[str, str]] = []
        self.stage = "dns"
        allow_private = settings.SMTP_ALLOW_PRIVATE_HOSTS or not self.check_private
        address = resolve_host(self.host, self.port, allow_private=allow_private)
        if self.check_private:  # a user's server: never the platform relay in disguise
            check_not_relay(self.host, address, self.port)
        # A private address is the platform's network: the report never names it.
        shown = address if address_is_public(address) else str(_("a private address"))
        self._done("dns", shown)
        self.stage = "connect"
        sock = _connect(address, self.port, self.timeout)
        self._done("connect", f"{shown}:{self.port}" if shown == address else shown)
        if self.security == Security.SSL:
            self.stage = "tls"
            sock = tls_context().wrap_socket(sock, server_hostname=self.host)
            self._done("tls", _tls_detail(sock))
        smtp = self.smtp = _SMTP(timeout=self.timeout)
        smtp.premade_socket = sock
        smtp._host = self.host  # STARTTLS verifies the certificate against this name
        self.stage = "connect"
        self._expect(*smtp.connect(self.host, self.port), 220)
        self.stage = "ehlo"
        self._expect(*smtp.ehlo(), 250)
        if self.security == Security.STARTTLS:
            self.stage = "starttls"
            if not smtp.has_extn("starttls"):
                raise PermanentSendError("", explanation="starttls_not_offered", params=self.params)
            self._expect(*smtp.starttls(context=tls_context()), 220)
            self._done("tls", _tls_detail(smtp.sock))
            self.stage = "ehlo"
            self._expect(*smtp.ehlo(), 250)
        self._done("ehlo", " ".join(sorted(smtp.esmtp_features)).upper())
        if self.authenticates:
            self.stage = "auth"
            encrypted = isinstance(smtp.sock, ssl.SSLSocket)
            if not encrypted and not self.unencrypted_auth_ok:
                # Never the password in clear unless confirmed for this server (issue 11).
                raise PermanentSendError(
                    "", explanation="unencrypted_auth_unconfirmed", params=self.params
                )
            if not smtp.has_extn("auth"):
                raise PermanentSendError("", explanation="auth_not_offered", params=self.params)
            code, reply = self._authenticate(smtp)
            self._done("auth", f"{code} {reply.decode(errors='replace')}")

    @sensitive_variables("response")
    def _authenticate(self, smtp: smtplib.SMTP) -> tuple[int, bytes]:
        """AUTH PLAIN or LOGIN with the password (smtplib picks what the server offers).

        smtplib sends only ASCII (its `auth` encodes the response as ASCII and raised
        UnicodeEncodeError, a server error on the card, with the password among the locals of
        its frame on a DEBUG page). A login or password with other characters goes as AUTH
        PLAIN in UTF-8, as RFC 4616 §2 defines it.
        """
        if (self.login + self._password).isascii():
            return smtp.login(self.login, self._password)
        if "PLAIN" not in smtp.esmtp_features.get("auth", "").upper().split():
            raise PermanentSendError("", explanation="auth_method_unsupported", params=self.params)
        response = f"\0{self.login}\0{self._password}".encode()
        code, reply = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(response).decode("ascii"))
        if code not in (235, 503):  # 503: already authenticated, as smtplib.login accepts
            raise smtplib.SMTPAuthenticationError(code, reply)
        return code, reply

    def _expect(self, code: int, reply: bytes | str, expected: int) -> None:
        if code != expected:
            text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
            raise error_from_reply(code, text, stage=self.stage, params=self.params)

    def send(self, mime: Message, envelope: Envelope) -> str:
        if self.smtp is None:  # never opened, or closed after a broken connection
            self.open()
        self.smtp.body_sent = False
        try:
            return self._send(mime, envelope)
        except SendError:
            self._reset()
            raise
        except UnicodeError:  # an address SMTP cannot carry (outbox.message makes them ASCII)
            self._reset()  # MAIL may have been accepted: the transaction is ended
            shown = ", ".join((envelope.mail_from, *envelope.recipients))[:200]
            raise PermanentSendError(
                "", explanation="bad_recipient", params={"address": shown}
            ) from None
        except (OSError, smtplib.SMTPException) as error:
            maybe_delivered = self.smtp is not None and self.smtp.body_sent
            self.close()  # the connection is in an unknown state
            failure = error_from_exception(error, stage=self.stage, params=self.params)
            failure.maybe_delivered = maybe_delivered  # e.g. a timeout waiting for "250"
            raise failure from None

    def _send(self, mime: Message, envelope: Envelope) -> str:
        smtp = self.smtp
        if smtp.has_extn("pipelining"):
            return self._send_pipelined(wire_bytes(mime), envelope)
        self.stage = "mail"
        self._expect(*smtp.mail(envelope.mail_from), 250)
        self.stage = "rcpt"
        for recipient in envelope.recipients:
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                # All or nothing: a mail never leaves with part of its recipients.
                self._expect(code, reply, 250)
        self.stage = "data"
        code, reply = smtp.data_crlf(wire_bytes(mime))
        self._expect(code, reply, 250)
        return f"{code} {reply.decode(errors='replace')}"

    def _send_pipelined(self, data: bytes, envelope: Envelope) -> str:
        """RFC 2920: MAIL, every RCPT and DATA in one write, their replies read in order; then
        the body. Half the round trips and half the client's CPU of one command at a time.

        All or nothing as without it: when MAIL or any RCPT is refused the body is never
        sent. If the server answered DATA with 354 all the same (some recipients were
        accepted), the connection is dropped without the final "." (a QUIT or a "." would be
        read as the message or end it), so nothing is delivered; the next mail reconnects.
        """
        smtp = self.smtp
        self.stage = "mail"
        commands = [f"MAIL FROM:{_path(envelope.mail_from)}"]
        commands += [f"RCPT TO:{_path(r)}" for r in envelope.recipients]
        commands.append("DATA")
        smtp.send("".join(f"{command}\r\n" for command in commands).encode("ascii"))
        stages = ["mail"] + ["rcpt"] * len(envelope.recipients)
        replies: list[tuple[int, bytes]] = []
        try:
            for _command in commands:
                replies.append(smtp.getreply())
        except (OSError, smtplib.SMTPException):
            # The server hung up after a refusal it meant (a 421 "slow down, closing", a 5xx):
            # that reply is the failure, not the closed connection.
            if (refused := _first_refusal(stages, replies)) is None:
                raise
            self._drop()
            self.stage, (code, reply) = refused
            self._expect(code, reply, 250)
        code, reply = replies[-1]  # DATA's
        if (refused := _first_refusal(stages, replies)) is not None:
            if code == 354:
                self._drop()
            self.stage, (code, reply) = refused
            self._expect(code, reply, 250)
        self.stage = "data"
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        code, reply = smtp.body(data)
        self._expect(code, reply, 250)
        return f"{code} {reply.decode(errors='replace')}"

    def _drop(self) -> None:
        """Close the socket without QUIT (in the middle of DATA nothing else is safe)."""
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()

    def _reset(self) -> None:
        try:
            if self.smtp is not None:
                self.smtp.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()


class XOAuth2Transport(SmtpTransport):
    """An OAuth provider's SMTP server (smtp_settings/providers/*): SMTP AUTH XOAUTH2 with an
    access token the provider's flow takes from the user's encrypted tokens. `token(server)`
    returns (address, token) and refuses any server but the one the account was connected for.
    https://developers.google.com/workspace/gmail/imap/xoauth2-protocol
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: str,
        login: str,
        token: Callable[[tuple[str, int]], tuple[str, str]],
    ) -> None:
        super().__init__(host=host, port=port, security=security, login=login)
        self.token = token

    @property
    def authenticates(self) -> bool:
        return True  # with the token; an empty login means the connected address

    @sensitive_variables("token", "xoauth2")
    def _authenticate(self, smtp: smtplib.SMTP) -> tuple[int, bytes]:
        address, token = self.token((self.host, self.port))
        login = self.login or address
        xoauth2 = f"user={login}\x01auth=Bearer {token}\x01\x01"
        # With an initial response; an error challenge (334 + JSON) is answered empty.
        return smtp.auth("XOAUTH2", lambda challenge=None: "" if challenge else xoauth2)


class RelaySmtpTransport(SmtpTransport):
    """The platform relay over SMTP (EMAIL_URL).

    Not reaching it, or not being let in, is the platform's trouble, not the sender's: the
    sender's message and Events say only that the relay does not answer (issue 11, item 10:
    its address, banner and replies are the platform's, and "check the server name" would send
    a Default user looking for a setting they do not have). The operator's log has the details.
    A "slow down" (421) keeps its own explanation: the worker backs off on it.
    """

    def open(self) -> None:
        try:
            super().open()
        except SendError as error:
            logger.warning(
                "platform relay %s:%s at %s: %s %s",
                self.host,
                self.port,
                self.stage,
                error.explanation,
                error.reply,
            )
            explanation = "throttled" if error.explanation == "throttled" else "relay_unavailable"
            hidden = type(error)("", explanation=explanation)
            hidden.maybe_delivered = error.maybe_delivered
            raise hidden from None


SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


class EspTransport(Transport):
    """The platform relay as an ESP through its anymail backend (EMAIL_BACKEND), or any other
    Django mail backend (console, file, locmem) named there.

    The message is still built once, by build_message; this hands its parts to the ESP's API
    (subject, bodies, attachments, Reply-To, Message-ID, envelope sender) and returns the ESP's
    status. https://anymail.dev/en/stable/sending/anymail_additions/
    """

    def __init__(self) -> None:
        self.connection = None

    def open(self) -> None:
        self.connection = get_connection(fail_silently=False)
        self.connection.open()

    def send(self, mime: Message, envelope: Envelope) -> str:
        if self.connection is None:
            self.open()
        if isinstance(mime, bytes):  # the API takes parts: the wire bytes read back
            mime = message_from_bytes(mime, policy=policy.default)
        email = _django_message(mime, envelope)
        try:
            self.connection.send_messages([email])
        except AnymailAPIError as error:
            status = error.status_code or 0
            reply = f"{status or ''} {' '.join(map(str, error.args))}".strip()
            # No answer, the ESP's own trouble or "too many requests": worth another try.
            if not status or status >= 500 or status == 429:
                raise TransientSendError(reply, explanation="temporary_failure") from None
            raise PermanentSendError(reply, explanation="rejected") from None
        except AnymailRecipientsRefused as error:
            raise PermanentSendError(str(error), explanation="rejected") from None
        status = getattr(email, "anymail_status", None)
        if status is None:  # a plain Django backend (console, file, locmem) took it
            return f"250 accepted by {type(self.connection).__module__}"
        return f"{', '.join(sorted(status.status or []))} {status.message_id or ''}".strip()

    def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()


def _django_message(mime: EmailMessage, envelope: Envelope) -> EmailMultiAlternatives:
    def addresses(header: str) -> list[str]:
        return [str(a) for group in mime.get_all(header, []) for a in group.addresses]

    to, cc = addresses("To"), addresses("Cc")
    visible = {a.split("<")[-1].rstrip(">").lower() for a in to + cc}
    text = mime.get_body(("plain",))
    html = mime.get_body(("html",))
    email = EmailMultiAlternatives(
        subject=str(mime["Subject"]),
        body=text.get_content() if text is not None else "",
        from_email=str(mime["From"]),
        to=to,
        cc=cc,
        bcc=[r for r in envelope.recipients if r.lower() not in visible],
        reply_to=addresses("Reply-To"),
        headers={"Message-ID": str(mime["Message-ID"]), "Date": str(mime["Date"])},
    )
    if html is not None:
        email.attach_alternative(html.get_content(), "text/html")
    for part in mime.iter_attachments():
        email.attach(part.get_filename(), part.get_content(), part.get_content_type())
    email.envelope_sender = envelope.mail_from
    # Round-trips through the ESP's tracking webhooks to find the message again
    # (bounces/webhooks.py); only a signed VERP address there is believed.
    email.metadata = {"verp": envelope.mail_from, "message_id": str(mime["Message-ID"])}
    return email


def relay_transport() -> Transport:
    """The platform relay (S1.1): EMAIL_URL's SMTP server, or an ESP's anymail backend.

    Configured by the platform, so the private-address guard does not apply.
    """
    if settings.EMAIL_BACKEND != SMTP_BACKEND:
        return EspTransport()
    security = (
        Security.SSL
        if settings.EMAIL_USE_SSL
        else Security.STARTTLS
        if settings.EMAIL_USE_TLS
        else Security.NONE
    )
    return RelaySmtpTransport(
        host=settings.EMAIL_HOST,
        port=int(settings.EMAIL_PORT),
        security=security,
        login=settings.EMAIL_HOST_USER or "",
        password=settings.EMAIL_HOST_PASSWORD or "",
        timeout=getattr(settings, "EMAIL_TIMEOUT", None) or settings.SMTP_TIMEOUT,
        check_private=False,
        unencrypted_auth_ok=True,  # the platform's own choice (EMAIL_URL), not a user's
    )


@sensitive_variables()
def transport_for(sender: SenderConfig) -> Transport:
    """The transport for a resolved sender, with its secret decrypted just for the connection."""
    if sender.transport == TransportKind.RELAY:
        return relay_transport()
    if sender.transport == TransportKind.SMTP:
        password, unencrypted_ok = _password(sender)
        return SmtpTransport(
            host=sender.host,
            port=sender.port,
            security=sender.security,
            login=sender.login,
            password=password,
            unencrypted_auth_ok=unencrypted_ok,
        )
    provider = providers.get(sender.transport)
    if provider is None or not provider.mode:
        raise SenderConfigError(
            "unknown_transport", _("Unknown mail transport: %(t)s") % {"t": sender.transport}
        )
    if sender.secret is None:
        raise SenderConfigError(
            "oauth_not_connected",
            _("%(provider)s is not connected yet: click its sign-in button on the user card first.")
            % {"provider": provider.name},
        )
    return provider.oauth.transport(sender)


def secret_server_check(
    *, bound: tuple[str, int, str] | None, host: str, port: int | None, security: str | None
) -> None:
    """Refuse to hand a secret to any server but the one it was entered for (issue 11, item 5).

    Called where the secret is decrypted, with the binding read from the database at that
    moment: no snapshot, form or admin edit made since can send it elsewhere.
    """
    if bound is not None and tuple(bound) == (host, port, security):
        return
    raise PermanentSendError(
        "",
        explanation="password_bound_elsewhere",
        params={"host": host, "port": port, "security": security},
    )


@sensitive_variables("ciphertext")
def _password(sender: SenderConfig) -> tuple[str, bool]:
    """The password for `sender`'s server, and whether it may go there unencrypted."""
    if sender.secret is None:
        return "", False
    row = SenderProfile.objects.filter(pk=sender.secret.id).first()
    if row is None or not row.password_encrypted:
        raise SenderConfigError(
            "password_missing",
            _("No password is stored for %(login)s any more. Enter it again on the card.")
            % {"login": sender.login},
        )
    secret_server_check(
        bound=row.password_server, host=sender.host, port=sender.port, security=sender.security
    )
    ciphertext = row.password_encrypted
    return crypto.decrypt(ciphertext), row.password_unencrypted_ok
