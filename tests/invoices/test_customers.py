"""Customers: the list with search, the customer page with its history (its own messages and
its invoices'), "Send again", the letter composer, and the composer's attachment limits
(issue 12, items 1 and 3).

Plain `db`: the request's transaction is the test's, so a queued message stays queued and can
be looked at; tests/invoices/test_composer_attachments.py sends for real.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from django.utils.html import escape

from invoices.models import Letter
from outbox.models import Attachment, Event, EventKind, MessageState, OutgoingMessage
from outbox.services import outbox_enqueue
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = [pytest.mark.usefixtures("english"), pytest.mark.django_db]


def _html(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def _default_user(code: str = "DORA", **card):
    factories.company()
    user = factories.user(code, **card)
    factories.profile(user, mode=SenderMode.DEFAULT, security="")
    return user


def _letter(**fields) -> dict:
    return {"to": "ap@smith.example", "subject": "Hello", "body": "Dear customer.", **fields}


def _message(user, related, **fields) -> OutgoingMessage:
    made = outbox_enqueue(
        user=user, to=["ap@smith.example"], subject="Hello", body_text="Text", related=related
    )
    if fields:
        OutgoingMessage.objects.filter(pk=made.pk).update(**fields)
        made.refresh_from_db()
    return made


# -- the list ----------------------------------------------------------------------------------


def test_every_customer_page_needs_a_login(client):
    customer = invoice_factories.customer()
    for url in ("/customers/", f"/customers/{customer.pk}/", f"/customers/{customer.pk}/write/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_the_list_searches_by_name_and_address_and_pages_keep_the_search(client):
    invoice_factories.customer("Kowalski Sp. j.", emails=["biuro@kowalski.example"])
    invoice_factories.customer("Smith Ltd", emails=["ap@smith.example"])
    for n in range(55):
        invoice_factories.customer(f"Nowak {n:02}", emails=[f"n{n}@nowak.example"])
    client.force_login(_default_user())

    html = _html(client.get("/invoices/"))
    assert 'href="/customers/">Customers</a>' in html  # in the navigation
    assert "Kowalski" in _html(client.get("/customers/?q=kowal"))
    by_address = _html(client.get("/customers/?q=smith.example"))
    assert "Smith Ltd" in by_address and "Kowalski" not in by_address
    first = _html(client.get("/customers/?q=nowak"))
    assert first.count('class="customer"') == 50
    assert "?page=2&amp;q=nowak" in first
    assert _html(client.get("/customers/?q=nowak&page=2")).count('class="customer"') == 5
    assert "No customer matches." in _html(client.get("/customers/?q=nobody"))


def test_the_invoice_list_and_page_link_the_customer(client):
    invoice = invoice_factories.invoice()
    client.force_login(_default_user())
    link = f'href="/customers/{invoice.customer_id}/"'
    assert link in _html(client.get("/invoices/"))
    assert link in _html(client.get(f"/invoices/{invoice.pk}/"))


# -- the customer page and its history -----------------------------------------------------------


def test_the_page_shows_the_customer_and_the_history_of_it_and_its_invoices(
    client, django_assert_max_num_queries
):
    user = _default_user()
    customer = invoice_factories.customer(
        "Smith Ltd",
        emails=["ap@smith.example", "gone@smith.example"],
        language="en",
        address="1 High Street\nLondon",
    )
    customer.bounced_emails = {"gone@smith.example": "2026-11-01"}
    customer.save()
    invoice = invoice_factories.invoice("FV/30/2026", customer=customer)
    other = invoice_factories.invoice("FV/31/2026")  # another customer's
    sent = _message(
        user, invoice, state=MessageState.SENT, sent_at=timezone.now(), last_reply="250 Ok"
    )
    letter = _message(
        user,
        customer,
        state=MessageState.FAILED,
        last_reply="550 5.1.1 no such user",
        explanation="recipient_unknown",
    )
    bounced = _message(
        user, customer, state=MessageState.SENT, sent_at=timezone.now(), bounced_at=timezone.now()
    )
    Event.objects.create(
        user=user, message=bounced, kind=EventKind.BOUNCED, explanation="mailbox_full"
    )
    twice = _message(user, invoice, possibly_duplicated=True)
    elsewhere = _message(user, other)
    for _ in range(5):  # more rows cost no more queries
        _message(user, invoice_factories.invoice(customer=customer))
    client.force_login(user)

    with django_assert_max_num_queries(12):
        html = _html(client.get(f"/customers/{customer.pk}/"))

    assert "<h1>Smith Ltd</h1>" in html and "1 High Street<br>London" in html
    assert "gone@smith.example</s>" in html and "English" in html
    assert f'href="/customers/{customer.pk}/write/"' in html
    assert html.count('class="history-row') == 9
    assert f'data-message="{elsewhere.pk}"' not in html
    assert f'href="/invoices/{invoice.pk}/">Invoice FV/30/2026</a>' in html
    assert '<span class="state-sent">sent</span>' in html
    assert '<span class="state-failed">failed</span>' in html
    assert '<span class="state-bounced">bounced</span>' in html
    assert '<span class="state-queued">queued</span>' in html and "possibly sent twice" in html
    assert "250 Ok" in html and "550 5.1.1 no such user" in html
    from smtp_settings.explain import explain

    for key in ("recipient_unknown", "mailbox_full"):
        assert escape(explain(key)["title"]) in html
    assert '<td class="sent-by">DORA</td>' in html
    # Send again: the failed and the bounced letter reopen the composer with the message.
    for made in (letter, bounced):
        assert f'href="/customers/{customer.pk}/write/?again={made.pk}"' in html
    assert html.count('class="send-again"') == 2
    assert html.index(f'data-message="{twice.pk}"') < html.index(f'data-message="{sent.pk}"')


def test_a_failed_invoice_message_offers_the_invoice_composer(client):
    user = _default_user()
    invoice = invoice_factories.invoice()
    _message(user, invoice, state=MessageState.FAILED)
    client.force_login(user)
    for url in (f"/customers/{invoice.customer_id}/", f"/invoices/{invoice.pk}/"):
        html = _html(client.get(url))
        assert f'<a href="/invoices/{invoice.pk}/send/" class="send-again">' in html


def test_another_users_messages_show_who_and_state_but_not_their_content(client):
    anna, bob = _default_user("ANNA"), factories.user("BOB")
    staff = factories.user("BOSS", is_staff=True)
    customer = invoice_factories.customer()
    made = outbox_enqueue(
        user=anna,
        to=["secret-partner@smith.example"],
        subject="Private terms",
        body_text="x",
        related=customer,
    )
    OutgoingMessage.objects.filter(pk=made.pk).update(
        state=MessageState.FAILED, last_reply="550 private reply"
    )
    for user, sees in ((anna, True), (bob, False), (staff, True)):
        client.force_login(user)
        html = _html(client.get(f"/customers/{customer.pk}/"))
        assert '<td class="sent-by">ANNA</td>' in html
        assert '<span class="state-failed">failed</span>' in html
        for detail in (
            "secret-partner@smith.example",
            "Private terms",
            "550 private reply",
            f"/outbox/{made.pk}/",
            f"?again={made.pk}",
        ):
            assert (detail in html) is sees, (user.code, detail)


def test_a_name_or_subject_with_script_is_shown_as_text(client):
    user = _default_user()
    customer = invoice_factories.customer("<script>alert('name')</script>")
    _message(user, customer)
    OutgoingMessage.objects.update(subject="<img src=x onerror=alert(1)>")
    client.force_login(user)
    for url in ("/customers/", f"/customers/{customer.pk}/", f"/customers/{customer.pk}/write/"):
        html = _html(client.get(url))
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in html


# -- the letter composer -------------------------------------------------------------------------


def test_the_composer_is_prefilled_with_the_addresses_that_did_not_bounce(client):
    user = _default_user(email="dora@acme.example", bcc="archive@acme.example")
    customer = invoice_factories.customer(emails=["ok@smith.example", "gone@smith.example"])
    customer.bounced_emails = {"gone@smith.example": "2026-11-01"}
    customer.save()
    letter = Letter.objects.create(subject="Hi", body="x", created_by=user)
    client.force_login(user)

    html = _html(client.get(f"/customers/{customer.pk}/write/"))

    assert 'name="to" value="ok@smith.example"' in html
    assert '<s class="bounced-address">gone@smith.example</s>' in html
    assert "archive@acme.example" in html  # the card's BCC
    assert 'enctype="multipart/form-data"' in html and 'type="file"' in html
    assert "takes messages up to 10 MB" in html  # the relay's limit
    assert f'<option value="{letter.pk}">Hi</option>' in html
    assert ".pdf</a>" not in html  # no invoice PDF


def test_an_opted_out_customer_is_marked_and_left_out_of_to(client):
    user = _default_user()
    customer = invoice_factories.customer(emails=["ap@smith.example"])
    customer.letters_opted_out_at = timezone.now()
    customer.save()
    client.force_login(user)

    page = _html(client.get(f"/customers/{customer.pk}/"))
    assert "Opted out on" in page
    html = _html(client.get(f"/customers/{customer.pk}/write/"))
    assert "opted out of letters" in html
    assert 'name="to" value="ap@smith.example"' not in html
    # Typed on purpose (they asked for this mail), it goes: the opt-out is about letter jobs.
    response = client.post(f"/customers/{customer.pk}/write/", _letter())
    assert response.status_code == 302
    assert OutgoingMessage.objects.get().to == ["ap@smith.example"]


def test_a_stored_letter_prefills_subject_and_body_rendered_for_the_customer(client):
    author = factories.user("AUTHOR")  # another user's letter: the company's to use
    letter = Letter.objects.create(
        subject="News for {{ customer.name }}", body="Dear {{ customer.name }},", created_by=author
    )
    customer = invoice_factories.customer("Smith Ltd")
    client.force_login(_default_user())

    html = _html(client.get(f"/customers/{customer.pk}/write/?letter={letter.pk}"))

    assert 'value="News for Smith Ltd"' in html and "Dear Smith Ltd," in html
    assert client.get(f"/customers/{customer.pk}/write/?letter=999999").status_code == 404
    # Not a number: ignored, the composer opens empty (never a 500).
    assert 'value="News for' not in _html(client.get(f"/customers/{customer.pk}/write/?letter=1e3"))


def test_send_queues_one_message_about_the_customer_through_the_users_own_sender(client):
    dora = _default_user("DORA", email="dora@acme.example")
    other = factories.user("OTHER", email="other@acme.example")
    factories.profile(other, host="smtp.other.example", port=587, security="starttls")
    customer = invoice_factories.customer()
    client.force_login(dora)

    # Fields naming another user or sender are not the form's: they change nothing.
    response = client.post(
        f"/customers/{customer.pk}/write/",
        _letter(user=str(other.pk), sender="other@acme.example", from_email="other@acme.example"),
    )

    assert response.status_code == 302
    assert response["Location"] == f"/customers/{customer.pk}/"
    [message] = OutgoingMessage.objects.all()
    assert message.user == dora and message.related == customer and message.job is None
    assert message.sender["mode"] == SenderMode.DEFAULT
    assert message.sender["from_email"] == "dora@acme.example"
    assert (message.to, message.subject, message.body_text) == (
        ["ap@smith.example"],
        "Hello",
        "Dear customer.",
    )
    html = _html(client.get(response["Location"]))
    assert "queued for sending" in html and f'data-message="{message.pk}"' in html


def test_send_again_prefills_the_message_only_for_who_may_read_it(client):
    anna = _default_user("ANNA")
    customer, another = invoice_factories.customer(), invoice_factories.customer()
    made = outbox_enqueue(
        user=anna,
        to=["a@smith.example", "b@smith.example"],
        cc=["c@smith.example"],
        subject="Private terms",
        body_text="Secret body",
        related=customer,
    )
    url = f"/customers/{customer.pk}/write/?again={made.pk}"
    client.force_login(anna)
    html = _html(client.get(url))
    assert 'value="a@smith.example, b@smith.example"' in html
    assert 'value="c@smith.example"' in html and 'value="Private terms"' in html
    assert "Secret body" in html
    # About another customer: not this composer's message.
    assert client.get(f"/customers/{another.pk}/write/?again={made.pk}").status_code == 404

    client.force_login(factories.user("BOB"))
    response = client.get(url)
    assert response.status_code == 404
    assert b"Secret body" not in response.content and b"Private terms" not in response.content


def test_attachments_are_stored_with_the_message_named_and_typed_by_us(client):
    client.force_login(_default_user())
    customer = invoice_factories.customer()
    files = [
        SimpleUploadedFile("cennik.xlsx", b"PK\x03\x04 sheet", content_type="text/html"),
        SimpleUploadedFile("notatka.txt", b"note", content_type="application/x-evil"),
    ]

    response = client.post(f"/customers/{customer.pk}/write/", _letter(attachments=files))

    assert response.status_code == 302
    stored = {a.filename: a for a in Attachment.objects.all()}
    assert set(stored) == {"cennik.xlsx", "notatka.txt"}
    assert stored["notatka.txt"].content_type == "text/plain"
    assert stored["cennik.xlsx"].content_type.endswith("spreadsheetml.sheet")
    assert stored["notatka.txt"].file.read() == b"note"


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ([SimpleUploadedFile("empty.txt", b"")], "“empty.txt” is empty"),
        (
            [SimpleUploadedFile(f"f{n}.txt", b"x") for n in range(4)],
            "Attach at most 3 files to one message.",
        ),
    ],
)
def test_too_many_or_empty_files_are_refused_on_the_field(client, settings, files, error):
    settings.ATTACHMENTS_MAX_FILES = 3
    client.force_login(_default_user())
    customer = invoice_factories.customer()

    html = _html(client.post(f"/customers/{customer.pk}/write/", _letter(attachments=files)))

    assert error in html and 'class="field has-error"' in html
    assert not OutgoingMessage.objects.exists() and not Attachment.objects.exists()


@pytest.mark.parametrize("language", ["en", "pl"])
def test_a_message_over_its_servers_limit_is_refused_naming_the_limit_and_server(
    client, settings, language
):
    """1 MB of files is 1.37 MB as sent: over a 1 MB relay, within a 2 MB SMTP server."""
    settings.ATTACHMENT_LIMITS_MB = {**settings.ATTACHMENT_LIMITS_MB, "relay": 1}
    user = _default_user()
    user.language = language
    user.save()
    client.force_login(user)
    customer = invoice_factories.customer()
    invoice = invoice_factories.invoice(customer=customer)
    big = SimpleUploadedFile("scan.pdf", b"%" * 1_000_000)

    for url in (f"/customers/{customer.pk}/write/", f"/invoices/{invoice.pk}/send/"):
        big.seek(0)
        html = _html(client.post(url, _letter(attachments=[big])))
        if language == "en":
            assert "The message is too large for the platform&#x27;s mail server" in html
            assert "at most 1 MB" in html and "it comes to 1." in html
        else:
            assert "Wiadomość jest za duża" in html and "1 MB" in html
        assert 'class="field has-error"' in html
    assert not OutgoingMessage.objects.exists() and not Attachment.objects.exists()
    invoice.refresh_from_db()
    assert invoice.send_state == "unsent"  # the claim rolled back with the refusal


def test_the_limit_follows_the_users_server(client, settings):
    settings.ATTACHMENT_LIMITS_MB = {"relay": 1, "smtp": 2, "microsoft365": 25}
    user = invoice_factories.smtp_user_without_server("SMTPU")
    client.force_login(user)
    customer = invoice_factories.customer()
    big = SimpleUploadedFile("scan.pdf", b"%" * 1_000_000)

    response = client.post(f"/customers/{customer.pk}/write/", _letter(attachments=[big]))

    assert response.status_code == 302  # 1.4 MB as sent: within the SMTP server's 2 MB
    settings.ATTACHMENT_LIMITS_MB = {**settings.ATTACHMENT_LIMITS_MB, "smtp.acme.example": 1}
    big.seek(0)
    html = _html(client.post(f"/customers/{customer.pk}/write/", _letter(attachments=[big])))
    assert "too large for the SMTP server smtp.acme.example" in html


def test_a_body_over_the_upload_limit_is_refused_unread_with_a_page_in_the_users_language(
    client, settings
):
    """The declared length decides: the page comes back before anything reads the body (the
    test client's body here is small; test_composer_upload_limit.py sends a real one)."""
    settings.UPLOAD_MAX_MB = 1
    user = _default_user()
    client.force_login(user)
    customer = invoice_factories.customer()
    for language, text in (("en", "at most 1 MB in all"), ("pl", "1 MB")):
        user.language = language
        user.save()
        response = client.post(
            f"/customers/{customer.pk}/write/",
            b"x" * 100,
            content_type="multipart/form-data; boundary=x",
            CONTENT_LENGTH=str(5 * 10**9),
        )
        assert response.status_code == 413
        assert text in response.content.decode()
        assert f'href="/customers/{customer.pk}/write/"' in response.content.decode()
    assert not OutgoingMessage.objects.exists()


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\..\\secret.txt", "secret.txt"),
        ("a.txt\r\nBcc: victim@evil.example", "a.txt Bcc: victim@evil.example"),
        ("\u202eexe.pdf\u2028x", "exe.pdf x"),
        ("...", "attachment"),
        (".htaccess", "htaccess"),
        ("x" * 300 + ".pdf", "x" * 146 + ".pdf"),
        ("zażółć.pdf", "zażółć.pdf"),
    ],
)
def test_the_service_keeps_a_safe_name_whatever_reaches_it(given, kept):
    """Django's parser already drops path parts and unprintable characters from an upload's
    name; the service does not rely on it (a name may come from elsewhere)."""
    from invoices.services import customer_send_one

    user = _default_user()
    customer = invoice_factories.customer()
    # SimpleUploadedFile keeps whatever name it is given: the service sees it raw.
    upload = SimpleUploadedFile("placeholder", b"data")
    upload.name = given
    message = customer_send_one(
        user=user,
        customer=customer,
        to=["ap@smith.example"],
        subject="S",
        body="B",
        attachments=[upload],
    )
    [attachment] = message.attachments.all()
    assert attachment.filename == kept
    assert attachment.file.name.rsplit("/", 1)[-1].startswith("attachment")
