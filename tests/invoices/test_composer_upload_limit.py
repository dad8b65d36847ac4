"""An attacker posts the composer a body far beyond any limit, over a real socket to the live
server: it is refused with a page, without the server reading it, and a large body under the
hard cap costs disk in chunks, not memory (issue 12, item 1)."""

from __future__ import annotations

import re
import socket
import time
import tracemalloc
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.middleware.csrf import _get_new_csrf_string

from outbox.models import Attachment, OutgoingMessage
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english", "transactional_db")]

BOUNDARY = "----limitTestBoundary"


def _session(client) -> str:
    factories.company()
    user = factories.user("BIG")
    factories.profile(user, mode=SenderMode.DEFAULT, security="")
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def _head(live_server, path: str, session: str, csrf: str, length: int) -> bytes:
    host = urlsplit(live_server.url).netloc
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Cookie: {django_settings.SESSION_COOKIE_NAME}={session}; "
        f"{django_settings.CSRF_COOKIE_NAME}={csrf}\r\n"
        f"Referer: {live_server.url}{path}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def _fields(csrf: str) -> bytes:
    parts = {"csrfmiddlewaretoken": csrf, "to": "ap@smith.example", "subject": "S", "body": "B"}
    return b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in parts.items()
    )


def _file_head() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="attachments"; '
        'filename="huge.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()


def _response(sock: socket.socket) -> bytes:
    """The response, read to its Content-Length, not to the end of the connection: Django's
    development server keeps reading an unread body after answering (gunicorn closes)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_body_of_gigabytes_is_refused_before_it_is_read(client, live_server):
    customer = invoice_factories.customer()
    session, csrf = _session(client), _get_new_csrf_string()
    path = f"/customers/{customer.pk}/write/"
    claimed = 20 * 10**9  # 20 GB announced; 1 MB actually sent

    started = time.monotonic()
    with socket.create_connection(urlsplit(live_server.url)[1].split(":"), timeout=10) as sock:
        sock.sendall(_head(live_server, path, session, csrf, claimed) + _fields(csrf))
        sock.sendall(_file_head() + b"\0" * 1_000_000)
        answer = _response(sock)

    assert time.monotonic() - started < 5
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"Too large to send" in answer and b"at most 26 MB in all" in answer
    assert not OutgoingMessage.objects.exists()


def test_a_large_body_under_the_cap_is_refused_on_the_form_with_bounded_memory(
    client, live_server, settings
):
    """12 MB of file, over the relay's 10 MB as sent: Django streams it to a temporary file
    (FILE_UPLOAD_MAX_MEMORY_SIZE), the form says why, the process's Python heap stays small."""
    customer = invoice_factories.customer()
    session, csrf = _session(client), _get_new_csrf_string()
    path = f"/customers/{customer.pk}/write/"
    size = 12 * 10**6
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    head = _fields(csrf) + _file_head()
    length = len(head) + size + len(tail)

    tracemalloc.start()
    try:
        with socket.create_connection(urlsplit(live_server.url)[1].split(":"), timeout=30) as sock:
            sock.sendall(_head(live_server, path, session, csrf, length) + head)
            chunk = b"\xa5" * 65536
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
            sock.sendall(b"\xa5" * (size % len(chunk)) + tail)
            answer = _response(sock)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"The message is too large for the platform&#x27;s mail server" in answer
    assert b"at most 10 MB" in answer
    assert peak < 6 * 10**6, f"peak Python memory {peak / 1e6:.1f} MB for a 12 MB upload"
    assert not OutgoingMessage.objects.exists() and not Attachment.objects.exists()
