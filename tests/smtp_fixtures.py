"""Real servers for sending tests: a throwaway CA, aiosmtpd SMTP servers, a Celery worker.

A pytest plugin (registered in tests/conftest.py). Everything listens on 127.0.0.1 and is
started once per session; per-test state (messages, scripts, users) is reset before each test.
tests/test_smtp_fixtures.py shows each fixture in use.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import ctypes
import datetime
import email
import email.policy
import ipaddress
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BASE_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (aiosmtpd needs an explicit one)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------
# A throwaway certificate authority
# ------------------------------------------------------------------------------
WRONG_HOST = "mail.other.test"


class TestCA:
    """A CA made for this session and leaves it signed, as PEM files in `directory`.

    Leaves: "valid" (127.0.0.1 and localhost), "expired" (same names, ended yesterday),
    "wrong_host" (only mail.other.test). `bundle_file` is the system bundle plus this CA,
    which the session puts in SSL_CERT_FILE.
    """

    __test__ = False  # not a test class, despite the name
    LEAVES = ("valid", "expired", "wrong_host")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "directo_mail test CA")])
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        day = datetime.timedelta(days=1)
        localhost = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
        self.leaf_files: dict[str, tuple[Path, Path]] = {
            "valid": self._leaf("valid", localhost, now - day, now + 30 * day),
            "expired": self._leaf("expired", localhost, now - 30 * day, now - day),
            "wrong_host": self._leaf(
                "wrong_host", [x509.DNSName(WRONG_HOST)], now - day, now + 30 * day
            ),
        }
        self.bundle_file = directory / "bundle.pem"
        self.bundle_file.write_bytes(_system_bundle() + b"\n" + self.ca_file.read_bytes())

    def _leaf(self, kind: str, names: list, not_before, not_after) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        first = names[0].value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first))]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_file, key_file = self.directory / f"{kind}.pem", self.directory / f"{kind}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file

    def server_context(self, leaf: str = "valid") -> ssl.SSLContext:
        """A server-side context presenting one of the leaves."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*map(str, self.leaf_files[leaf]))
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context trusting only this CA (independent of SSL_CERT_FILE)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _system_bundle() -> bytes:
    """The CA bundle the process trusted before the session changed SSL_CERT_FILE."""
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_bytes()
    return b""


@pytest.fixture(scope="session", autouse=True)
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCA]:
    """The session's CA; SSL_CERT_FILE points at a bundle trusting it while the session runs.

    OpenSSL reads SSL_CERT_FILE whenever a default context is built, so
    `ssl.create_default_context()` made after this point (in this process or the worker)
    verifies the test servers. Autouse so that even the first context of the session trusts it.
    """
    ca = TestCA(tmp_path_factory.mktemp("tls"))
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(ca.bundle_file)
    yield ca
    if before is None:
        os.environ.pop("SSL_CERT_FILE", None)
    else:
        os.environ["SSL_CERT_FILE"] = before


# ------------------------------------------------------------------------------
# SMTP servers (aiosmtpd) with scripted failures
# ------------------------------------------------------------------------------
# Stages a test can script. EHLO covers HELO too; DATA is the reply after the message body
# (except drop_connection_at("DATA"), which hangs up once the body has started arriving);
# AFTER_DATA acts after the message was accepted and counted, before the client hears "250".
STAGES = ("EHLO", "AUTH", "MAIL", "RCPT", "DATA", "AFTER_DATA")
_REPLY_LINE = re.compile(r"\d{3}([ -].*)?")


def _smtp_reply(reply: str) -> str:
    """A reply normalised to CRLF line ends; refuses malformed multi-line replies."""
    lines = re.split(r"\r?\n", reply.strip("\r\n"))
    codes = {line[:3] for line in lines}
    shaped = all(_REPLY_LINE.fullmatch(line) for line in lines) and len(codes) == 1
    continued = all(line[3:4] == "-" for line in lines[:-1]) and lines[-1][3:4] in ("", " ")
    if not (shaped and continued):
        raise ValueError(f"not an SMTP reply (RFC 5321 4.2): {reply!r}")
    return "\r\n".join(lines)


_KINDS = ("reply", "drop", "stall")


@dataclass
class _Action:
    kind: str  # "reply", "drop" or "stall"
    reply: str = ""
    seconds: float = 0.0
    remaining: int | None = 1  # None: every time


@dataclass(frozen=True)
class ReceivedMessage:
    """One message a server accepted (one DATA transaction)."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    message: EmailMessage
    tls: bool  # the connection was really encrypted (implicit TLS or STARTTLS)
    auth_login: str | None  # who authenticated on that connection
    mail_options: list[str]  # e.g. ["SIZE=1234", "BODY=8BITMIME"]
    rcpt_options: list[str]
    helo: str | None

    @property
    def message_id(self) -> str:
        return _message_id(self.message.get("Message-ID"))


@dataclass(frozen=True)
class AuthAttempt:
    mechanism: str
    login: str
    success: bool
    tls: bool


def _message_id(value: str | None) -> str:
    return (value or "").strip().strip("<>")


def _is_encrypted(smtp: SMTP) -> bool:
    # session.ssl stays None under implicit TLS (aiosmtpd counts only STARTTLS): ask the transport.
    return smtp.transport is not None and smtp.transport.get_extra_info("ssl_object") is not None


@dataclass(eq=False)
class SMTPTestServer:
    """An aiosmtpd server on 127.0.0.1 whose replies a test can script.

    users: login -> password accepted by AUTH PLAIN and LOGIN (empty after each reset).
    messages: what was accepted, in order; accepted: Message-ID -> times accepted.
    """

    name: str
    host: str = HOST
    port: int = 0
    implicit_tls: bool = False
    starttls: bool = False
    messages: list[ReceivedMessage] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)
    auth_attempts: list[AuthAttempt] = field(default_factory=list)
    accepted: collections.Counter = field(default_factory=collections.Counter)
    # A second port of the same server (same replies, same inbox), for the platform relay: a
    # user's own server is never the relay (smtp_settings.transports.check_not_relay), so a
    # test pointing a user at `port` and the relay at `relay_port` reaches one inbox by both.
    relay_port: int | None = None
    # Advertise PIPELINING (RFC 2920) in the EHLO reply, as Postfix and most servers do: the
    # client then sends MAIL, RCPT… and DATA at once. Off after each reset.
    pipelining: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._actions: dict[str, list[_Action]] = {stage: [] for stage in STAGES}
        self.controller: Controller | None = None

    def __repr__(self) -> str:
        return f"<SMTPTestServer {self.name} {self.host}:{self.port}>"

    # --- scripting, called by tests ---------------------------------------------------------
    def script(self, stage: str, reply: str, times: int | None = 1) -> None:
        """Answer `reply` (a full reply, multi-line allowed) at `stage`; times=None: always.

        A scripted reply replaces the command: a 2xx one does not perform it. A 421 reply
        also closes the connection, as RFC 5321 4.2.3 has it.
        """
        self._add(stage, _Action("reply", reply=_smtp_reply(reply), remaining=times))

    def drop_connection_at(self, stage: str, times: int | None = 1) -> None:
        """Close the socket without a reply when the client reaches `stage`."""
        self._add(stage, _Action("drop", remaining=times))

    def stall_at(self, stage: str, seconds: float, times: int | None = 1) -> None:
        """Wait `seconds` at `stage`, then carry on normally (if the client is still there)."""
        self._add(stage, _Action("stall", seconds=seconds, remaining=times))

    def _add(self, stage: str, action: _Action) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        with self._lock:
            self._actions[stage].append(action)

    # --- inspecting, called by tests --------------------------------------------------------
    def wait_for(self, n: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least `n` messages arrived; the list of messages."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(
                    f"{self.name}: {len(self.messages)} message(s), not {n}, after {timeout} s"
                )
            return list(self.messages)

    def times_accepted(self, message_id: str) -> int:
        """How many times a message (by Message-ID, with or without <>) was accepted."""
        with self._lock:
            return self.accepted[_message_id(message_id)]

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.users.clear()
            self.auth_attempts.clear()
            self.accepted.clear()
            self.pipelining = False
            for actions in self._actions.values():
                actions.clear()

    # --- used by the server thread ----------------------------------------------------------
    def _take(self, stage: str, kinds: tuple[str, ...] = _KINDS) -> _Action | None:
        with self._lock:
            actions = self._actions[stage]
            if not actions or actions[0].kind not in kinds:
                return None
            action = actions[0]
            if action.remaining is not None:
                action.remaining -= 1
                if action.remaining <= 0:
                    actions.pop(0)
            return action

    def _record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self.messages.append(message)
            self.accepted[message.message_id] += 1
            self._lock.notify_all()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        with self._lock:
            success = login in self.users and self.users[login] == password
            self.auth_attempts.append(AuthAttempt(mechanism, login, success, _is_encrypted(server)))
        if success:
            return AuthResult(success=True, auth_data=SimpleNamespace(login=login))
        # handled=False, or aiosmtpd sends nothing and the client waits forever.
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Authentication credentials invalid"
        )


class _Handler:
    """aiosmtpd event handler. Never give it an `auth_*` attribute: it would become a mechanism."""

    def __init__(self, server: SMTPTestServer) -> None:
        self.server = server

    async def handle_EHLO(
        self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list
    ) -> list[str]:
        session.host_name = hostname
        if self.server.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, smtp: _ScriptedSMTP, session: Session, envelope: Envelope) -> str:
        action = self.server._take("DATA")
        if action is not None and (reply := await smtp.act(action)) is not None:
            return reply
        content = bytes(envelope.original_content or b"")
        self.server._record(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                content=content,
                message=email.message_from_bytes(content, policy=email.policy.default),
                tls=_is_encrypted(smtp),
                auth_login=session.login_data,
                mail_options=list(envelope.mail_options),
                rcpt_options=list(envelope.rcpt_options),
                helo=session.host_name,
            )
        )
        action = self.server._take("AFTER_DATA")
        if action is not None and (reply := await smtp.act(action)) is not None:
            return reply
        return f"250 2.0.0 OK queued as {uuid.uuid4().hex[:12]}"


class _ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP where each command first looks at the server's script."""

    _INTERCEPTED = {"EHLO": "EHLO", "HELO": "EHLO", "AUTH": "AUTH", "MAIL": "MAIL", "RCPT": "RCPT"}

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.test_server = handler.server
        self._close_after_reply = False
        for command, stage in self._INTERCEPTED.items():
            self._smtp_methods[command] = self._intercepting(stage, self._smtp_methods[command])
        self._smtp_methods["DATA"] = self._data(self._smtp_methods["DATA"])

    def _intercepting(self, stage: str, method: Callable[[str], Awaitable[None]]):
        async def command(arg: str) -> None:
            action = self.test_server._take(stage)
            if action is None:
                await method(arg)
                return
            reply = await self.act(action)
            if action.kind == "stall":
                await method(arg)
            elif reply is not None:
                await self.push(reply)
                self._maybe_close()

        return command

    def _data(self, method: Callable[[str], Awaitable[None]]):
        async def command(arg: str) -> None:
            recipients = self.envelope is not None and self.envelope.rcpt_tos
            if recipients and self.test_server._take("DATA", kinds=("drop",)) is not None:
                # Mid-DATA: let the body start arriving, then hang up.
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                await self._reader.readuntil(b"\r\n")
                self.transport.abort()
                return
            await method(arg)  # handle_DATA applies the other DATA and AFTER_DATA actions
            self._maybe_close()

        return command

    async def act(self, action: _Action) -> str | None:
        """Carry out an action; the reply to send instead of the normal one, if any."""
        if action.kind == "stall":
            await asyncio.sleep(action.seconds)
            return None
        if action.kind == "drop":
            # abort(): no FIN handshake, no buffered reply; aiosmtpd then ends the session.
            self.transport.abort()
            return None
        self._close_after_reply = action.reply.startswith("421")
        return action.reply

    def _maybe_close(self) -> None:
        if self._close_after_reply and self.transport is not None:
            self.transport.close()


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _ScriptedSMTP(self.handler, **self.SMTP_kwargs)


@dataclass
class SMTPServers:
    """The session's SMTP servers, one per shape."""

    implicit_tls: SMTPTestServer
    starttls: SMTPTestServer
    plain: SMTPTestServer
    expired_cert: SMTPTestServer
    wrong_host_cert: SMTPTestServer
    starttls_optional: SMTPTestServer

    def __iter__(self) -> Iterator[SMTPTestServer]:
        return iter(vars(self).values())

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self]


_started_servers: list[SMTPTestServer] = []


def _start_server(name: str, ca: TestCA, **options: Any) -> SMTPTestServer:
    leaf = options.pop("leaf", "valid")
    server = SMTPTestServer(
        name=name,
        port=free_port(),
        implicit_tls=options.get("implicit_tls", False),
        starttls=options.get("starttls", False),
    )
    kwargs: dict[str, Any] = {
        "hostname": HOST,
        "port": server.port,
        "server_hostname": "localhost",  # the banner name; the default asks DNS for the FQDN
        "authenticator": server._authenticate,
        "auth_require_tls": options.get("auth_require_tls", False),
    }
    if server.implicit_tls:
        kwargs["ssl_context"] = ca.server_context(leaf)
    if server.starttls:
        kwargs["tls_context"] = ca.server_context(leaf)
        kwargs["require_starttls"] = options.get("require_starttls", False)
    server.controller = _Controller(_Handler(server), **kwargs)
    server.controller.start()
    server.relay_controller = None
    if options.get("relay_port"):
        server.relay_port = free_port()
        server.relay_controller = _Controller(
            _Handler(server), **{**kwargs, "port": server.relay_port}
        )
        server.relay_controller.start()
    _started_servers.append(server)
    return server


@pytest.fixture(scope="session")
def smtp_servers(test_ca: TestCA) -> Iterator[SMTPServers]:
    """SMTP servers on 127.0.0.1, each with its own port.

    implicit_tls (465-style), starttls (STARTTLS required before AUTH/MAIL: 530 otherwise),
    plain (no TLS), expired_cert and wrong_host_cert (implicit TLS with a bad leaf),
    starttls_optional (offers STARTTLS, accepts AUTH and mail without it).
    """
    servers = SMTPServers(
        implicit_tls=_start_server("implicit_tls", test_ca, implicit_tls=True),
        # aiosmtpd counts only STARTTLS as encryption; AUTH stays refused (538) until then.
        starttls=_start_server(
            "starttls", test_ca, starttls=True, require_starttls=True, auth_require_tls=True
        ),
        plain=_start_server("plain", test_ca, relay_port=True),  # also the platform relay
        expired_cert=_start_server("expired_cert", test_ca, implicit_tls=True, leaf="expired"),
        wrong_host_cert=_start_server(
            "wrong_host_cert", test_ca, implicit_tls=True, leaf="wrong_host"
        ),
        starttls_optional=_start_server("starttls_optional", test_ca, starttls=True),
    )
    yield servers
    for server in servers:
        server.controller.stop()
        if server.relay_controller is not None:
            server.relay_controller.stop()
        _started_servers.remove(server)


@pytest.fixture(autouse=True)
def _reset_smtp_servers() -> None:
    """Each test starts with no messages, no scripts and no users on every started server."""
    for server in _started_servers:
        server.reset()


@pytest.fixture(scope="session")
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 where connecting is refused.

    The socket is bound but never listens: the kernel refuses connections, and nobody else can
    take the port while the session holds it.
    """
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


class SilentServer:
    """Accepts TCP connections and never says a word (no SMTP banner): for timeouts."""

    def __init__(self) -> None:
        self.host = HOST
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener was closed
            while True:
                connection, _ = self._listener.accept()
                self.connections.append(connection)

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)
        for connection in self.connections:
            connection.close()


@pytest.fixture(scope="session")
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def test_server_ports(
    smtp_servers: SMTPServers, refused_port: int, silent_server: SilentServer
) -> list[int]:
    """Every port a test may point the app at."""
    relay_ports = [server.relay_port for server in smtp_servers if server.relay_port]
    return [*smtp_servers.ports, *relay_ports, refused_port, silent_server.port]


_SERVER_FIXTURES = {"smtp_servers", "refused_port", "silent_server", "celery_worker"}


@pytest.fixture(autouse=True)
def smtp_settings_for_tests(request: pytest.FixtureRequest) -> None:
    """In-process app code may reach the local test servers, quickly.

    Autouse, but only for tests that use a server fixture: the others keep the real settings
    (some assert the stock "Use one of: 25, 465, 587." message) and start no server.
    """
    if _SERVER_FIXTURES.isdisjoint(request.fixturenames):
        return
    settings = request.getfixturevalue("settings")
    settings.SMTP_ALLOW_PRIVATE_HOSTS = True
    settings.SEND_RETRY_BASE_SECONDS = 0.2
    settings.SMTP_TIMEOUT = 3
    settings.SMTP_ALLOWED_PORTS = [25, 465, 587, *request.getfixturevalue("test_server_ports")]
    relay = request.getfixturevalue("smtp_servers").plain
    settings.EMAIL_HOST, settings.EMAIL_PORT = relay.host, relay.relay_port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    # pytest-django swaps in the locmem backend; the relay here is the real plain server.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


# ------------------------------------------------------------------------------
# Database and broker shared with a worker process
# ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """SQLite tests use a file, not memory: the worker process must see the test database."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "directo_mail.sqlite":
        path = tmp_path_factory.mktemp("db") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


@dataclass
class Broker:
    url: str
    env: dict[str, str]  # what a worker needs to use the same broker


@pytest.fixture(scope="session", autouse=True)
def celery_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's own broker: nothing a test enqueues reaches var/broker or a later run.

    Filesystem broker: fresh folders, set on the in-process Celery app before anything is sent.
    Other brokers (CI's redis://): the configured URL; `celery_worker` purges it before starting.
    """
    from django.conf import settings

    from directo_mail.celery import app

    url = settings.CELERY_BROKER_URL
    env = {"CELERY_BROKER_URL": url}
    before = app.conf.broker_transport_options
    if url.startswith("filesystem://"):
        # settings.py derives the folders from CELERY_BROKER_DIR, which the worker gets; here
        # the same options are moved to the new folder. No producer pool exists yet: Celery makes
        # it at the first send, from the options of that moment.
        old, new = str(settings.CELERY_BROKER_DIR), tmp_path_factory.mktemp("broker")
        options = dict(before)
        for key, value in options.items():
            if isinstance(value, str) and value.startswith(old):
                options[key] = str(new) + value[len(old) :]
                Path(options[key]).mkdir(parents=True, exist_ok=True)  # kombu does not
        app.conf.broker_transport_options = options
        env["CELERY_BROKER_DIR"] = str(new)
    yield Broker(url=url, env=env)
    app.conf.broker_transport_options = before


def queued_payloads(queue: str, *, forget_queue: bool = False) -> list[bytes]:
    """The raw task messages waiting in `queue` on the session's broker, oldest first; takes
    them out. `forget_queue`: also drop what the broker keeps about the queue (a test's own
    throwaway queue; never a lane, whose binding later publishes still need)."""
    from directo_mail.celery import app

    url = app.conf.broker_url
    if url.startswith("filesystem://"):
        folder = Path(app.conf.broker_transport_options["data_folder_out"])
        files = sorted(folder.glob(f"*.{queue}.msg"))
        payloads = [path.read_bytes() for path in files]
        for path in files:
            path.unlink()
        return payloads
    if url.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(url)
        try:
            payloads = client.lrange(queue, 0, -1)
            client.delete(queue)
            if forget_queue:  # the exchange is named after the queue
                client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        finally:
            client.close()
        return list(reversed(payloads))  # LPUSH: newest first
    pytest.fail(f"no reader for the broker {url}: add one, do not skip")


def _worker_database_url() -> str:
    """DATABASE_URL of the test database (after pytest-django created it)."""
    from django.db import connection

    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        if name == ":memory:" or "mode=memory" in str(name):
            raise RuntimeError("the SQLite test database is in memory: no worker can see it")
        return f"sqlite:///{Path(name).resolve()}"
    if "DATABASE_URL" not in os.environ:
        raise RuntimeError(f"cannot give a worker the {connection.vendor} test database")
    # Same server, user and options; only the database name becomes the test one.
    return urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}").geturl()


# ------------------------------------------------------------------------------
# A real Celery worker
# ------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when pytest dies, even by SIGKILL."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_logged(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start a server process of the tests in its own process group, appending its output to
    `log_path`; it dies with pytest."""
    with log_path.open("ab") as log:
        return subprocess.Popen(  # preexec_fn only calls prctl
            command,
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def stop_group(process: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL after `grace` seconds (None or exited: nothing)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        kill_group(process)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group now, as a crash would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(5)


def lanes() -> tuple[str, ...]:
    """The Celery queues of the app (CELERY_TASK_QUEUES): "interactive" and "bulk"."""
    from django.conf import settings

    return tuple(queue.name for queue in settings.CELERY_TASK_QUEUES)


class CeleryWorker:
    """`celery -A directo_mail worker --pool=solo` in a subprocess, logging to `log_path`;
    it consumes `queues` (default: every lane)."""

    READY = re.compile(rb"\bready\.")

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        nodename: str,
        queues: tuple[str, ...] | None = None,
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.nodename = nodename
        self.queues = queues or lanes()
        self.process: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "directo_mail",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            f"--hostname={self.nodename}",
            f"--queues={','.join(self.queues)}",
            # No cluster chatter: faster start, and no talk with other workers on a shared redis.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 30.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = spawn_logged(self.command, self.env, self.log_path)
        deadline = time.monotonic() + timeout
        while not self.READY.search(self._log_bytes(offset)):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the Celery worker exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the Celery worker was not ready in {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (warm shutdown: the current task finishes), SIGKILL after `grace` seconds.

        Takes 2-4 s when idle: the worker's loop polls the broker in 2 s rounds (1 s sleeps on
        the filesystem broker) and only then notices the signal.
        """
        process, self.process = self.process, None
        stop_group(process, grace)

    def kill(self) -> None:
        """SIGKILL now, as a crash would: an unacknowledged task stays in the broker."""
        process, self.process = self.process, None
        if process is not None:
            kill_group(process)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _log_bytes(self, offset: int = 0) -> bytes:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read()
        except FileNotFoundError:
            return b""

    def log_text(self) -> str:
        """Everything every run of the worker logged this session."""
        return self._log_bytes().decode("utf-8", "replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_position(self) -> int:
        """A mark for wait_for_log(since=...): only what is logged after it counts."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def wait_for_log(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match:
        """Block until the log (from `since`) matches the regex `pattern`; the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self._log_bytes(since).decode("utf-8", "replace"))
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the worker log:\n{self.log_tail()}")
            time.sleep(0.05)

    def manage(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """`manage.py ARGS` with the worker's environment (same database, broker, settings)."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: None,
    celery_broker: Broker,
    test_ca: TestCA,
    smtp_servers: SMTPServers,
    test_server_ports: list[int],
    m365_worker_env: dict[str, str],  # tests/m365_fixtures.py; see the block below
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CeleryWorker]:
    """A real Celery worker sharing the test database and the session's broker.

    Started once per session (~1-2 s). The worker reads the database in its own connection, so
    a test using it must commit what the worker should see: request `transactional_db` (plain
    `db` keeps everything in a transaction the worker never sees). Its log (both runs after a
    restart) is `celery_worker.log_path`; `log_text()`, `wait_for_log()` read it.
    """
    env = {
        **os.environ,
        **celery_broker.env,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "directo_mail.settings"),
        "DATABASE_URL": _worker_database_url(),
        "SSL_CERT_FILE": str(test_ca.bundle_file),
        "SMTP_ALLOW_PRIVATE_HOSTS": "true",
        "SMTP_ALLOWED_PORTS": ",".join(map(str, [25, 465, 587, *test_server_ports])),
        "SEND_RETRY_BASE_SECONDS": "0.2",
        "SMTP_TIMEOUT": "3",
        # The platform relay is the plain test server, as in-process (smtp_settings_for_tests).
        "EMAIL_URL": f"smtp://{smtp_servers.plain.host}:{smtp_servers.plain.relay_port}",
        "CELERY_BROKER_POLLING_INTERVAL": "0.05",
        "PYTHONUNBUFFERED": "1",
    }
    # --- Microsoft 365 stand-ins (tests/m365_fixtures.py) -----------------------------------
    # The worker starts once per session, so it always gets them: M365_* pointing at the local
    # provider and XOAUTH2 server, REQUESTS_CA_BUNDLE trusting the test CA (msal uses requests),
    # and SMTP_ALLOWED_PORTS above extended with the XOAUTH2 server's port.
    env.update(m365_worker_env)
    # --------------------------------------------------------------------------------------------
    from directo_mail.celery import app

    app.control.purge()  # a shared broker may hold tasks an earlier run left behind
    log_path = tmp_path_factory.mktemp("worker") / "celery-worker.log"
    worker = CeleryWorker(env, log_path, nodename=f"directo-test-{uuid.uuid4().hex[:8]}@localhost")
    atexit.register(worker.kill)  # should teardown never run
    worker.start()
    yield worker
    worker.stop()
    atexit.unregister(worker.kill)
