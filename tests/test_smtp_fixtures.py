"""The real-server fixtures themselves (tests/smtp_fixtures.py), driven by plain smtplib."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from django.conf import settings

from tests import factories

TIMEOUT = 5  # no test may hang on a server that forgot to answer


def _message(subject: str = "Invoice 1/2025", body: str = "Zażółć gęślą jaźń") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "anna@acme.example"
    message["To"] = "client@example.com"
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="acme.example")
    message.set_content(body)
    return message


def _send(server, message: EmailMessage | None = None, *, tls: str = "", login=None, **kwargs):
    """Send one message with smtplib: tls "" / "implicit" / "starttls"."""
    message = message or _message()
    context = kwargs.pop("context", None) or ssl.create_default_context()
    host = kwargs.pop("host", server.host)
    timeout = kwargs.pop("timeout", TIMEOUT)
    if tls == "implicit":
        client = smtplib.SMTP_SSL(host, server.port, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(host, server.port, timeout=timeout)
    with client:
        if tls == "starttls":
            client.starttls(context=context)
        if login:
            client.login(*login)
        client.send_message(message, **kwargs)
    return message


# ------------------------------------------------------------------------------
# test_ca and SSL_CERT_FILE
# ------------------------------------------------------------------------------
def test_default_context_made_after_the_session_started_trusts_the_test_ca(test_ca, smtp_servers):
    assert os.environ["SSL_CERT_FILE"] == str(test_ca.bundle_file)
    # REQUESTS_CA_BUNDLE (set on these machines) belongs to `requests`; ssl never reads it.
    requests_bundle = Path(os.environ.get("REQUESTS_CA_BUNDLE", os.devnull)).read_text()
    assert "directo_mail test CA" not in requests_bundle
    server = smtp_servers.implicit_tls
    for host in ("127.0.0.1", "localhost"):
        message = _send(server, tls="implicit", host=host, context=ssl.create_default_context())
        assert server.times_accepted(message["Message-ID"]) == 1


def test_the_bundle_keeps_the_system_roots(test_ca):
    roots = ssl.create_default_context().get_ca_certs()
    assert len(roots) > 1
    assert any(
        ("commonName", "directo_mail test CA") in rdn for cert in roots for rdn in cert["subject"]
    )


def test_a_fresh_process_given_ssl_cert_file_trusts_the_test_ca(test_ca, smtp_servers):
    """What the worker sees: SSL_CERT_FILE from its environment, REQUESTS_CA_BUNDLE untouched."""
    code = (
        "import smtplib, ssl, sys;"
        "s = smtplib.SMTP_SSL('127.0.0.1', int(sys.argv[1]), timeout=5,"
        " context=ssl.create_default_context()); print(s.noop()[0]); s.quit()"
    )
    env = {**os.environ, "SSL_CERT_FILE": str(test_ca.bundle_file)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(smtp_servers.implicit_tls.port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.strip() == "250", result.stderr


@pytest.mark.parametrize(
    ("server_name", "host", "error"),
    [
        ("expired_cert", "127.0.0.1", "certificate has expired"),
        ("wrong_host_cert", "127.0.0.1", "IP address mismatch"),
        ("wrong_host_cert", "localhost", "Hostname mismatch"),
    ],
)
def test_bad_certificates_fail_verification(smtp_servers, server_name, host, error):
    server = getattr(smtp_servers, server_name)
    with pytest.raises(ssl.SSLCertVerificationError, match=error):
        _send(server, tls="implicit", host=host)
    assert server.messages == []


def test_bad_certificates_are_signed_by_the_test_ca(test_ca, smtp_servers):
    """Only the named defect fails: without hostname checks the wrong-host leaf verifies."""
    context = test_ca.client_context()
    context.check_hostname = False
    _send(smtp_servers.wrong_host_cert, tls="implicit", context=context)
    assert len(smtp_servers.wrong_host_cert.messages) == 1


# ------------------------------------------------------------------------------
# smtp_servers: shapes, recording, authentication
# ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("server_name", "tls", "encrypted"),
    [
        ("implicit_tls", "implicit", True),
        ("starttls", "starttls", True),
        ("starttls_optional", "starttls", True),
        ("starttls_optional", "", False),
        ("plain", "", False),
    ],
)
def test_each_server_records_what_it_accepted(smtp_servers, server_name, tls, encrypted):
    server = getattr(smtp_servers, server_name)
    server.users["anna"] = password = factories.secret()
    message = _send(server, tls=tls, login=("anna", password), mail_options=["BODY=8BITMIME"])
    [received] = server.messages
    assert received.tls is encrypted
    assert received.auth_login == "anna"
    assert received.mail_from == "anna@acme.example"
    assert received.rcpt_tos == ["client@example.com"]
    assert "BODY=8BITMIME" in received.mail_options
    assert any(option.startswith("SIZE=") for option in received.mail_options)
    assert received.message["Subject"] == "Invoice 1/2025"
    assert received.message.get_content().strip() == "Zażółć gęślą jaźń"
    assert received.content.startswith(b"From: anna@acme.example")
    assert received.message_id == message["Message-ID"].strip("<>")
    assert server.times_accepted(message["Message-ID"]) == 1
    assert server.auth_attempts[-1].tls is encrypted


def test_starttls_server_refuses_a_client_that_skips_starttls(smtp_servers):
    server = smtp_servers.starttls
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        _send(server)
    assert refused.value.smtp_code == 530
    with smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # AUTH is only offered after STARTTLS
        assert client.has_extn("starttls")
    assert server.messages == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_mechanisms_accept_known_users(smtp_servers, mechanism):
    server = smtp_servers.implicit_tls
    server.users["anna@acme.example"] = password = factories.secret()
    with smtplib.SMTP_SSL(server.host, server.port, timeout=TIMEOUT) as client:
        client.user, client.password = "anna@acme.example", password
        client.ehlo()
        code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
    assert code == 235
    assert [(a.mechanism, a.login, a.success) for a in server.auth_attempts] == [
        (mechanism, "anna@acme.example", True)
    ]


def test_a_wrong_password_gets_535_rather_than_a_hang(smtp_servers):
    server = smtp_servers.implicit_tls
    server.users["anna"] = factories.secret()
    with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
        _send(server, tls="implicit", login=("anna", "wrong"))
    assert failed.value.smtp_code == 535
    assert {a.mechanism for a in server.auth_attempts} == {"PLAIN", "LOGIN"}  # smtplib tries both
    assert not any(a.success for a in server.auth_attempts)


def test_wait_for_waits_for_asynchronous_deliveries(smtp_servers):
    server = smtp_servers.plain
    threading.Timer(0.3, _send, args=(server,)).start()
    started = time.monotonic()
    [received] = server.wait_for(1, timeout=5)
    assert 0.2 < time.monotonic() - started < 5
    assert received.tls is False
    with pytest.raises(AssertionError, match="1 message"):
        server.wait_for(2, timeout=0.2)


def test_state_left_by_one_test(smtp_servers):
    server = smtp_servers.plain
    server.users["left"] = "over"
    server.script("MAIL", "451 4.3.0 Try again later", times=None)
    server.stall_at("EHLO", 30, times=None)
    server.messages.append("junk")


def test_is_gone_in_the_next(smtp_servers):
    server = smtp_servers.plain
    assert (server.users, server.messages, server.auth_attempts) == ({}, [], [])
    _send(server)
    assert len(server.messages) == 1


# ------------------------------------------------------------------------------
# smtp_servers: scripted replies, drops and stalls
# ------------------------------------------------------------------------------
def test_a_scripted_reply_is_given_once_then_the_server_is_normal_again(smtp_servers):
    server = smtp_servers.plain
    server.script("MAIL", "451 4.3.0 Try again later")
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        _send(server)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (451, b"4.3.0 Try again later")
    _send(server)
    assert len(server.messages) == 1


def test_a_multi_line_reply_reaches_the_client_whole(smtp_servers):
    server = smtp_servers.implicit_tls
    server.users["anna"] = password = factories.secret()
    server.script(
        "AUTH",
        "534-5.7.9 Application-specific password required. Learn more at\r\n"
        "534 5.7.9 https://support.google.com/mail/?p=InvalidSecondFactor",
        times=None,  # smtplib's login() tries PLAIN, then LOGIN
    )
    with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
        _send(server, tls="implicit", login=("anna", password))
    assert failed.value.smtp_code == 534
    assert failed.value.smtp_error == (
        b"5.7.9 Application-specific password required. Learn more at\n"
        b"5.7.9 https://support.google.com/mail/?p=InvalidSecondFactor"
    )
    assert server.auth_attempts == []  # the script answered before any credentials were checked


@pytest.mark.parametrize(
    ("stage", "reply", "error"),
    [
        ("EHLO", "554 5.7.1 Go away", smtplib.SMTPHeloError),
        ("RCPT", "550 5.1.1 No such user", smtplib.SMTPRecipientsRefused),
        ("DATA", "552 5.3.4 Message too big", smtplib.SMTPDataError),
    ],
)
def test_each_stage_can_be_scripted(smtp_servers, stage, reply, error):
    server = smtp_servers.plain
    server.script(stage, reply, times=None)  # EHLO: smtplib falls back to HELO, also scripted
    with pytest.raises(error):
        _send(server)
    assert server.messages == []


def test_times_counts_across_commands(smtp_servers):
    server = smtp_servers.plain
    server.script("RCPT", "550 5.1.1 No such user", times=1)
    message = _message()
    message["Cc"] = "second@example.com"
    refused = _send(server, message)
    assert refused is message
    [received] = server.messages
    assert received.rcpt_tos == ["second@example.com"]


def test_a_421_reply_closes_the_connection(smtp_servers):
    server = smtp_servers.plain
    server.script("MAIL", "421 4.7.0 Too many connections, closing")
    with smtplib.SMTP(server.host, server.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.mail("a@acme.example")[0] == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_malformed_replies_and_stages_are_refused(smtp_servers):
    server = smtp_servers.plain
    with pytest.raises(ValueError, match="not an SMTP reply"):
        server.script("MAIL", "451-no final line")
    with pytest.raises(ValueError, match="not an SMTP reply"):
        server.script("MAIL", "Try again later")
    with pytest.raises(ValueError, match="stage"):
        server.script("QUIT", "221 Bye")


@pytest.mark.parametrize("stage", ["EHLO", "MAIL", "RCPT", "DATA"])
def test_drop_connection_at_a_stage(smtp_servers, stage):
    server = smtp_servers.implicit_tls
    server.drop_connection_at(stage)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        _send(server, tls="implicit")
    assert server.messages == []
    _send(server, tls="implicit")  # the next connection is served normally
    assert len(server.messages) == 1


def test_drop_after_data_accepts_the_message_but_the_client_never_hears_so(smtp_servers):
    """The duplicate-delivery window: a retry delivers the same Message-ID a second time."""
    server = smtp_servers.plain
    server.drop_connection_at("AFTER_DATA")
    message = _message()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        _send(server, message)
    assert server.times_accepted(message["Message-ID"]) == 1
    _send(server, message)
    assert server.times_accepted(message["Message-ID"]) == 2


@pytest.mark.parametrize("stage", ["EHLO", "AUTH", "MAIL", "DATA", "AFTER_DATA"])
def test_stall_at_a_stage_times_the_client_out(smtp_servers, stage):
    server = smtp_servers.plain
    server.users["anna"] = password = factories.secret()
    server.stall_at(stage, 2)
    started = time.monotonic()
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        _send(server, login=("anna", password), timeout=0.3)
    assert time.monotonic() - started < 1.5
    # Only AFTER_DATA had accepted the message when the client gave up.
    assert len(server.messages) == (1 if stage == "AFTER_DATA" else 0)


def test_a_short_stall_only_delays(smtp_servers):
    server = smtp_servers.plain
    server.stall_at("DATA", 0.3)
    started = time.monotonic()
    _send(server)
    assert time.monotonic() - started >= 0.3
    assert len(server.messages) == 1


# ------------------------------------------------------------------------------
# Plain sockets for network failures; settings for in-process code
# ------------------------------------------------------------------------------
def test_refused_port_refuses(refused_port):
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", refused_port, timeout=TIMEOUT)


def test_silent_server_never_sends_a_banner(silent_server):
    started = time.monotonic()
    # smtplib reports a read timeout as a disconnection.
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        smtplib.SMTP(silent_server.host, silent_server.port, timeout=0.3)
    assert time.monotonic() - started < 2
    with socket.create_connection((silent_server.host, silent_server.port), timeout=1):
        pass  # the TCP connection itself succeeds


def test_settings_let_app_code_reach_every_test_server(smtp_servers, refused_port, silent_server):
    assert settings.SMTP_ALLOW_PRIVATE_HOSTS is True
    assert settings.SEND_RETRY_BASE_SECONDS == 0.2
    assert settings.SMTP_TIMEOUT == 3
    assert set(settings.SMTP_ALLOWED_PORTS) == {
        25,
        465,
        587,
        *smtp_servers.ports,
        smtp_servers.plain.relay_port,
        refused_port,
        silent_server.port,
    }
    # The platform relay is the plain server's second port: never a user's own server.
    assert settings.EMAIL_HOST == "127.0.0.1"
    assert smtp_servers.plain.relay_port == settings.EMAIL_PORT


# ------------------------------------------------------------------------------
# celery_worker
# ------------------------------------------------------------------------------
def test_the_worker_answers_a_ping(celery_worker):
    from directo_mail.celery import app

    replies = app.control.ping(destination=[celery_worker.nodename], timeout=5)
    assert replies == [{celery_worker.nodename: {"ok": "pong"}}], celery_worker.log_tail()


def test_the_worker_runs_tasks_sent_from_the_test_process(celery_worker):
    from directo_mail.celery import app

    # Celery 5 has no celery.ping task any more; celery.accumulate is built in and harmless.
    mark = celery_worker.log_position()
    task_id = app.send_task("celery.accumulate", args=["pong"]).id
    found = celery_worker.wait_for_log(
        rf"Task celery\.accumulate\[{task_id}\] succeeded in .*: (.*)", since=mark
    )
    assert found.group(1) == "('pong',)"


def test_the_worker_sees_rows_the_test_committed(celery_worker, transactional_db):
    company = factories.company(name="Shared Sp. z o.o.", slug="shared")
    result = celery_worker.manage(
        "shell",
        "--verbosity=0",  # no "N objects imported automatically" line
        "--command=from accounts.models import Company; print(Company.objects.get(slug='shared'))",
    )
    assert result.stdout.strip() == company.name, result.stderr


def test_the_worker_environment(celery_worker, test_ca, smtp_servers):
    env = celery_worker.env
    assert env["SSL_CERT_FILE"] == str(test_ca.bundle_file)
    assert env["SMTP_ALLOW_PRIVATE_HOSTS"] == "true"
    assert str(smtp_servers.implicit_tls.port) in env["SMTP_ALLOWED_PORTS"].split(",")
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        from directo_mail.celery import app

        assert env["CELERY_BROKER_DIR"] != str(settings.CELERY_BROKER_DIR)  # not var/broker
        folders = [v for v in app.conf.broker_transport_options.values() if isinstance(v, str)]
        assert folders
        assert all(folder.startswith(env["CELERY_BROKER_DIR"]) for folder in folders)
    assert "ready." in celery_worker.log_text()


def test_the_worker_can_be_killed_and_restarted(celery_worker):
    from directo_mail.celery import app

    before = celery_worker.pid
    celery_worker.kill()  # SIGKILL is instant; a graceful stop() takes 2-4 s
    celery_worker.restart()
    assert celery_worker.pid != before
    mark = celery_worker.log_position()
    task_id = app.send_task("celery.accumulate", args=["again"]).id
    celery_worker.wait_for_log(rf"Task celery\.accumulate\[{task_id}\] succeeded", since=mark)
