"""Transports: deliver a built message over one connection (open → send… → close).

`transport_for(sender)` picks the transport for a resolved sender and is the only place a
stored secret is decrypted. Every failure becomes a `SendError` carrying the server's reply
and an explanation key (smtp_settings.explain); nothing here retries.
"""

from __future__ import annotations

import ipaddress
import logging
import smtplib
import socket
import ssl
from email import policy
from email.message import EmailMessage
from typing import Protocol

from django.conf import settings
from django.utils.translation import gettext_lazy as _

from . import crypto
from .errors import PermanentSendError, SendError
from .explain import error_from_exception, error_from_reply
from .models import Security, SenderProfile
from .resolve import SenderConfig, SenderConfigError, TransportKind

logger = logging.getLogger(__name__)


class Envelope(Protocol):
    mail_from: str
    recipients: tuple[str, ...]


class Transport:
    """Delivers messages over one connection: a batch opens once and closes once."""

    def open(self) -> None:
        raise NotImplementedError

    def send(self, mime: EmailMessage, envelope: Envelope) -> str:
        """Deliver one message; return the server's final reply."""
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


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP over a socket this module opened (resolved, checked, maybe TLS-wrapped)."""

    premade_socket: socket.socket | None = None

    def _get_socket(self, host, port, timeout):
        sock, self.premade_socket = self.premade_socket, None
        return sock


def _tls_detail(sock: ssl.SSLSocket) -> str:
    cert = sock.getpeercert() or {}
    subject = dict(item[0] for item in cert.get("subject", ()))
    return f"{sock.version()}, {subject.get('commonName', '?')}, {cert.get('notAfter', '')}"


def resolve_host(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to; refuses loopback, private and link-local ones unless allowed.

    The check and the connection use the same address, so DNS cannot change it in between.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not ip.is_global:
                raise PermanentSendError(
                    "",
                    explanation="private_host",
                    params={"host": host, "address": address},
                )
    return addresses[0]


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
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.login, self._password = login, password
        self.timeout = settings.SMTP_TIMEOUT if timeout is None else timeout
        self.check_private = check_private
        self.smtp: smtplib.SMTP | None = None
        self.stage = "connect"

    def __repr__(self) -> str:  # never the password
        return f"<SmtpTransport {self.host}:{self.port} {self.security} login={self.login!r}>"

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
        self._done("dns", address)
        self.stage = "connect"
        sock = _connect(address, self.port, self.timeout)
        self._done("connect", f"{address}:{self.port}")
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
        if self.login:
            self.stage = "auth"
            if not smtp.has_extn("auth"):
                raise PermanentSendError("", explanation="auth_not_offered", params=self.params)
            code, reply = smtp.login(self.login, self._password)
            self._done("auth", f"{code} {reply.decode(errors='replace')}")

    def _expect(self, code: int, reply: bytes | str, expected: int) -> None:
        if code != expected:
            text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
            raise error_from_reply(code, text, stage=self.stage, params=self.params)

    def send(self, mime: EmailMessage, envelope: Envelope) -> str:
        if self.smtp is None:  # never opened, or closed after a broken connection
            self.open()
        try:
            return self._send(mime, envelope)
        except SendError:
            self._reset()
            raise
        except (OSError, smtplib.SMTPException) as error:
            self.close()  # the connection is in an unknown state
            raise error_from_exception(error, stage=self.stage, params=self.params) from None

    def _send(self, mime: EmailMessage, envelope: Envelope) -> str:
        smtp = self.smtp
        self.stage = "mail"
        self._expect(*smtp.mail(envelope.mail_from), 250)
        self.stage = "rcpt"
        for recipient in envelope.recipients:
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                # All or nothing: a mail never leaves with part of its recipients.
                self._expect(code, reply, 250)
        self.stage = "data"
        code, reply = smtp.data(mime.as_bytes(policy=policy.SMTP))
        self._expect(code, reply, 250)
        return f"{code} {reply.decode(errors='replace')}"

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


def relay_transport() -> SmtpTransport:
    """The platform relay (S1.1) from EMAIL_URL: configured by the platform, so no host guard."""
    security = (
        Security.SSL
        if settings.EMAIL_USE_SSL
        else Security.STARTTLS
        if settings.EMAIL_USE_TLS
        else Security.NONE
    )
    return SmtpTransport(
        host=settings.EMAIL_HOST,
        port=int(settings.EMAIL_PORT),
        security=security,
        login=settings.EMAIL_HOST_USER or "",
        password=settings.EMAIL_HOST_PASSWORD or "",
        timeout=getattr(settings, "EMAIL_TIMEOUT", None) or settings.SMTP_TIMEOUT,
        check_private=False,
    )


def transport_for(sender: SenderConfig) -> Transport:
    """The transport for a resolved sender, with its secret decrypted just for the connection."""
    if sender.transport == TransportKind.RELAY:
        return relay_transport()
    if sender.transport == TransportKind.SMTP:
        return SmtpTransport(
            host=sender.host,
            port=sender.port,
            security=sender.security,
            login=sender.login,
            password=_password(sender),
        )
    raise SenderConfigError(
        "m365_not_available",
        _("Sending through Microsoft 365 is not available on this platform yet."),
    )


def _password(sender: SenderConfig) -> str:
    if sender.secret is None:
        return ""
    ciphertext = (
        SenderProfile.objects.filter(pk=sender.secret.id)
        .values_list("password_encrypted", flat=True)
        .first()
    )
    if not ciphertext:
        raise SenderConfigError(
            "password_missing",
            _("No password is stored for %(login)s any more. Enter it again on the card.")
            % {"login": sender.login},
        )
    return crypto.decrypt(ciphertext)
