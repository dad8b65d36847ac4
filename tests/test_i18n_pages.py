"""Polish and Estonian pages (issue 14, item 5): no English left in what they show, dates and
numbers in the viewer's locale, stored labels (a job's title) in the viewer's language,
invoice numbers in natural order, and a job's progress shown the same way everywhere.

The English check is generic: every text of the English catalogue whose Polish (Estonian)
translation differs must not appear on the Polish (Estonian) page, so a label someone forgets
to mark for translation, or a message stored in the language of whoever caused it, shows up.
"""

from __future__ import annotations

import datetime
import html
import re
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.utils import timezone

from invoices.services import invoices_send
from outbox.models import BulkJob
from outbox.services import bulk_job_progress
from smtp_settings.models import SenderMode
from tests import factories
from tests.invoices import factories as invoice_factories

pytestmark = pytest.mark.django_db
PAGES = ["/accounts/card/", "/invoices/", "/jobs/", "/customers/", "/letters/", "/events/"]


def _english_texts(language: str) -> set[str]:
    """English msgids (as pages show them: escaped) whose `language` text differs: words a
    page in that language must not show. Short ones (one word, names) are left out."""
    po = polib.pofile(
        str(Path(settings.BASE_DIR) / "locale" / language / "LC_MESSAGES" / "django.po")
    )
    texts = set()
    for entry in po:
        text = entry.msgid
        if "%" in text or "{" in text or entry.msgid_plural or entry.msgstr == text:
            continue
        if len(text.split()) < 3:
            continue
        texts.add(html.escape(text, quote=False))
    return texts


def _visible(page: str) -> str:
    """The page's text between tags (not attributes, scripts or styles)."""
    page = re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S)
    return " ".join(re.findall(r">([^<]+)<", page))


@pytest.fixture
def piotr(client):
    factories.company(slug="acme")
    user = invoice_factories.smtp_user_without_server("PIOTR")
    client.force_login(user)
    return user


@pytest.mark.parametrize("language", ["pl", "et"])
@pytest.mark.parametrize("mode", [SenderMode.DEFAULT, SenderMode.SMTP, SenderMode.REPLY_TO])
def test_no_english_left_on_the_pages(client, piotr, language, mode):
    piotr.sender_profile.mode = mode
    piotr.sender_profile.save()
    piotr.language = language
    piotr.save()
    invoice_factories.invoices(3)
    invoices_send(user=piotr, unsent=True) if mode == SenderMode.SMTP else None
    english = _english_texts(language)
    pages = PAGES + [f"/jobs/{job.pk}/" for job in BulkJob.objects.all()]
    left = {}
    for path in pages:
        text = _visible(client.get(path, HTTP_ACCEPT_LANGUAGE=language).content.decode())
        if found := sorted(t for t in english if t in text):
            left[path] = found
    assert not left, left


@pytest.mark.parametrize(
    ("language", "date"), [("pl", r"\b07\.12\.2026 14:55\b"), ("et", r"\b07\.12\.2026 14:55\b")]
)
def test_dates_in_the_viewers_locale(client, piotr, language, date, settings):
    piotr.language = language
    piotr.time_zone = "Europe/Warsaw"
    piotr.save()
    invoice_factories.invoices(2)
    job = invoices_send(user=piotr, unsent=True)
    moment = timezone.make_aware(
        datetime.datetime(2026, 12, 7, 14, 55), timezone.get_fixed_timezone(60)
    )
    BulkJob.objects.filter(pk=job.pk).update(created_at=moment)
    page = client.get("/jobs/").content.decode()
    assert re.search(date, page), re.findall(r"\d+[./-]\d+[./-]\d+[^<]{0,12}", page)
    assert not re.search(r"\b12/07/2026\b", page)  # the US form Estonian fell back to


def test_a_jobs_title_is_in_the_language_of_whoever_looks(client, piotr):
    piotr.language = "en"
    piotr.save()
    invoice_factories.invoices(10)
    job = invoices_send(user=piotr, unsent=True)
    assert "10 invoices" in client.get(f"/jobs/{job.pk}/").content.decode()
    piotr.language = "pl"
    piotr.save()
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "10 faktur" in page and "10 invoices" not in page


def test_invoice_numbers_in_natural_order(client, piotr):
    for number in ("FV/1/2026", "FV/2/2026", "FV/9/2026", "FV/10/2026", "FV/11/2026"):
        invoice_factories.invoice(number)
    page = client.get("/invoices/").content.decode()
    shown = re.findall(r"FV/\d+/2026", page)
    order = list(dict.fromkeys(shown))
    assert order == ["FV/11/2026", "FV/10/2026", "FV/9/2026", "FV/2/2026", "FV/1/2026"]


def test_progress_is_shown_alike_and_no_time_left_before_the_first_mail(client, piotr):
    piotr.language = "pl"
    piotr.save()
    invoice_factories.invoices(3)
    job = invoices_send(user=piotr, unsent=True)
    progress = bulk_job_progress(job=job)
    assert progress["seconds_left"] is None  # nothing sent: nothing to tell the time by
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    time_left = re.search(r'data-field="seconds_left"[^>]*>([^<]*)<', page)[1]
    assert time_left == "—"
    BulkJob.objects.filter(pk=job.pk).update(state="cancelled")
    job.messages.update(state="cancelled")
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    percent = re.search(r'data-field="percent">([^<]*)<', page)[1]
    assert percent == "100"  # as the live page's Intl.NumberFormat shows it, not "100.0"
