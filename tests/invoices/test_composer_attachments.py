"""Extra attachments in the composer and the letter to one customer, sent for real: the web
request queues, the real worker delivers to aiosmtpd (issue 12, items 1 and 3).

`transactional_db`: the worker reads the database in its own connection. In Default mode the
worker's platform relay is smtp_servers.plain too (tests/smtp_fixtures.py).
"""

from __future__ import annotations

import time
from pathlib import Path, PurePosixPath

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from invoices.models import SendState
from outbox.models import MessageState, OutgoingMessage
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english", "celery_worker", "transactional_db")]

CSV = "zestawienie-płatności.csv"  # non-ASCII: an RFC 2231 filename


def _user(mode: str, server):
    factories.company()
    if mode == SenderMode.SMTP:
        return invoice_factories.smtp_sender("SENDER", server)
    user = factories.user("SENDER", email="sender@acme.example")
    factories.profile(user, mode=mode, security="")
    return user


def _files():
    return [
        SimpleUploadedFile(CSV, b"nr;kwota\n1;123,00\n", content_type="text/html"),
        SimpleUploadedFile("umowa.pdf", b"%PDF-1.4 contract", content_type="image/png"),
    ]


def _sent(message: OutgoingMessage, timeout: float = 15) -> OutgoingMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message.refresh_from_db()
        if message.is_final:
            return message
        time.sleep(0.1)
    raise AssertionError(f"message {message.pk} still {message.state}")


def _parts(mail) -> dict[str, tuple[str, bytes]]:
    return {
        part.get_filename(): (part.get_content_type(), part.get_content())
        for part in mail.message.iter_attachments()
    }


@pytest.mark.parametrize("mode", [SenderMode.DEFAULT, SenderMode.SMTP])
def test_the_invoice_composer_sends_the_pdf_and_two_files_with_their_names(
    client, smtp_servers, mode
):
    server = smtp_servers.plain
    client.force_login(_user(mode, server))
    invoice = invoice_factories.invoice("FV/21/2026")

    response = client.post(
        f"/invoices/{invoice.pk}/send/",
        {
            "to": "ap@smith.example",
            "subject": "Invoice FV/21/2026",
            "body": "Attached.",
            "attachments": _files(),
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    [mail] = server.wait_for(1)
    message = _sent(OutgoingMessage.objects.get())
    assert message.state == MessageState.SENT
    parts = _parts(mail)
    assert set(parts) == {"FV-21-2026.pdf", CSV, "umowa.pdf"}
    assert parts["FV-21-2026.pdf"][0] == "application/pdf"
    # The type comes from the name, never from what the browser claimed.
    assert parts[CSV] == ("text/csv", "nr;kwota\n1;123,00\n")
    assert parts["umowa.pdf"] == ("application/pdf", b"%PDF-1.4 contract")
    assert b"filename*=utf-8''zestawienie-p%C5%82atno%C5%9Bci.csv" in mail.content
    invoice.refresh_from_db()
    assert invoice.send_state == SendState.SENT


@pytest.mark.parametrize("mode", [SenderMode.DEFAULT, SenderMode.SMTP])
def test_a_letter_to_one_customer_arrives_and_shows_sent_in_its_history(client, smtp_servers, mode):
    server = smtp_servers.plain
    user = _user(mode, server)
    client.force_login(user)
    customer = invoice_factories.customer("Smith Ltd", emails=["ap@smith.example"])

    response = client.post(
        f"/customers/{customer.pk}/write/",
        {
            "to": "ap@smith.example",
            "cc": "boss@smith.example",
            "subject": "Our new address",
            "body": "We moved.",
            "attachments": _files()[:1],
        },
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    assert response["Location"] == f"/customers/{customer.pk}/"
    [mail] = server.wait_for(1)
    message = _sent(OutgoingMessage.objects.get())
    assert (message.state, message.sender["mode"], message.related) == (
        MessageState.SENT,
        mode,
        customer,
    )
    assert sorted(mail.rcpt_tos) == ["ap@smith.example", "boss@smith.example"]
    assert mail.message["Subject"] == "Our new address"
    assert list(_parts(mail)) == [CSV]
    html = client.get(f"/customers/{customer.pk}/").content.decode()
    assert f'data-message="{message.pk}"' in html
    assert '<span class="state-sent">sent</span>' in html


def _multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart body written by hand: the file names go in as an attacker writes them,
    `filename*=` (RFC 2231, which Django decodes: %0D%0A becomes CR LF) included."""
    boundary = "----attacker7MA4YWxkTrZu0gW"
    lines = []
    for name, value in fields.items():
        lines += [f"--{boundary}", f'Content-Disposition: form-data; name="{name}"', "", value]
    for disposition, content in files:
        lines += [
            f"--{boundary}",
            f'Content-Disposition: form-data; name="attachments"; {disposition}',
            "Content-Type: text/html",
            "",
            content.decode(),
        ]
    lines.append(f"--{boundary}--")
    return "\r\n".join(lines).encode(), f"multipart/form-data; boundary={boundary}"


def test_a_file_named_to_escape_storage_or_inject_headers_arrives_as_a_plain_name(
    client, smtp_servers, settings
):
    server = smtp_servers.plain
    client.force_login(_user(SenderMode.DEFAULT, server))
    customer = invoice_factories.customer("Smith Ltd", emails=["ap@smith.example"])
    body, content_type = _multipart(
        {"to": "ap@smith.example", "subject": "Files", "body": "x"},
        [
            ('filename="../../etc/passwd"', b"root:x:0:0"),
            ("filename*=utf-8''..%2F..%2Fetc%2Fshadow", b"root:!:1"),
            (
                "filename*=utf-8''a.txt%0D%0ABcc%3A%20victim%40evil.example%0D%0AX-Evil%3A%201",
                b"hello",
            ),
        ],
    )

    response = client.post(f"/customers/{customer.pk}/write/", body, content_type=content_type)

    assert response.status_code == 302, response.content.decode()[:3000]
    [mail] = server.wait_for(1)
    message = _sent(OutgoingMessage.objects.get())
    assert message.state == MessageState.SENT
    assert mail.rcpt_tos == ["ap@smith.example"]  # no Bcc smuggled into the envelope…
    assert "X-Evil" not in mail.message and "Bcc" not in mail.message  # …nor into a header
    for part in mail.message.iter_attachments():
        assert "X-Evil" not in part and "Bcc" not in part
    # Django's parser drops the line breaks first (outbox.attachments would make them spaces).
    assert sorted(_parts(mail)) == [
        "a.txtBcc: victim@evil.exampleX-Evil: 1",
        "passwd",
        "shadow",
    ]
    for attachment in message.attachments.all():  # the storage's name (disk or database)
        name = PurePosixPath(attachment.file.name)
        assert name.parts[0] == "outbox" and ".." not in name.parts, name
        assert name.name.startswith("attachment") and "\\" not in str(name), name
        if settings.FILE_STORAGE == "local":
            media = Path(str(settings.MEDIA_ROOT)).resolve()
            assert Path(attachment.file.path).resolve().is_relative_to(media)
