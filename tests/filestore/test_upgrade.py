"""Upgrading to FILE_STORAGE=database (issue 13, item 5): nothing kept before is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from filestore.models import StoredFile
from filestore.storage import DatabaseStorage
from invoices.pdf import invoice_pdf
from tests.invoices import factories as invoice_factories

pytestmark = pytest.mark.django_db


def test_a_file_kept_on_this_disk_before_the_switch_is_still_read(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    (tmp_path / "outbox" / "2026" / "11").mkdir(parents=True)
    (tmp_path / "outbox" / "2026" / "11" / "attachment_x.pdf").write_bytes(b"%PDF queued before")
    storage = DatabaseStorage()
    name = "outbox/2026/11/attachment_x.pdf"
    assert storage.exists(name) and storage.size(name) == len(b"%PDF queued before")
    assert storage.open(name).read() == b"%PDF queued before"
    assert not StoredFile.objects.exists()  # read from the disk, not copied


def test_the_disk_fallback_stays_inside_media_root(settings, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (tmp_path / "secret.txt").write_text("not a stored file")
    settings.MEDIA_ROOT = str(media)
    storage = DatabaseStorage()
    for name in ("../secret.txt", str(tmp_path / "secret.txt"), "/etc/passwd"):
        assert not storage.exists(name), name
        with pytest.raises(FileNotFoundError):
            storage.open(name)


def test_an_invoice_pdf_kept_where_this_storage_cannot_read_it_is_rendered_again(
    settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "filestore.storage.DatabaseStorage"},
    }
    invoice = invoice_factories.invoice("FV/5/2026")
    invoice.pdf.name = "invoices/2026/FV-5-2026_elsewhere.pdf"  # another machine's disk
    invoice.save(update_fields=["pdf"])
    invoice.refresh_from_db()
    name = invoice_pdf(invoice, seller="Acme")
    assert name != "invoices/2026/FV-5-2026_elsewhere.pdf"
    assert DatabaseStorage().open(name).read().startswith(b"%PDF")
    invoice.refresh_from_db()
    assert invoice.pdf.name == name
    assert invoice_pdf(invoice, seller="Acme") == name  # kept and reused from now on
    assert not Path(tmp_path, name).exists()
