"""filestore.storage.DatabaseStorage: files in the database (issue 13, item 5)."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.db import transaction

from filestore.models import StoredFile
from filestore.storage import DatabaseStorage

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF"  # every byte value, NUL included


def test_a_file_is_kept_whole_and_read_back_byte_for_byte():
    storage = DatabaseStorage()
    name = storage.save("invoices/2026/FV-1-2026.pdf", ContentFile(PDF))
    assert name == "invoices/2026/FV-1-2026.pdf"
    assert storage.exists(name) and storage.size(name) == len(PDF)
    with storage.open(name, "rb") as stored:
        assert stored.read() == PDF
    assert storage.get_modified_time(name) == StoredFile.objects.get().created_at
    storage.delete(name)
    assert not storage.exists(name)
    with pytest.raises(FileNotFoundError):
        storage.open(name)
    with pytest.raises(FileNotFoundError):
        storage.size(name)


def test_a_taken_name_gets_another_and_nothing_is_overwritten():
    storage = DatabaseStorage()
    first = storage.save("outbox/2026/12/attachment.pdf", ContentFile(b"first"))
    second = storage.save("outbox/2026/12/attachment.pdf", ContentFile(b"second"))
    assert first != second and second.startswith("outbox/2026/12/attachment_")
    assert storage.open(first).read() == b"first" and storage.open(second).read() == b"second"


def test_a_name_taken_between_the_check_and_the_write_is_retried(monkeypatch):
    """Two processes saving the same name at once: the loser takes another, its write kept."""
    storage = DatabaseStorage()
    storage.save("race.pdf", ContentFile(b"winner"))
    calls = []  # the first check answers "free" (it ran before the winner's write)
    real_exists = storage.exists

    def exists_late(name):
        calls.append(name)
        return False if len(calls) == 1 else real_exists(name)

    monkeypatch.setattr(storage, "exists", exists_late)
    name = storage.save("race.pdf", ContentFile(b"loser"))
    assert name != "race.pdf"
    assert storage.open("race.pdf").read() == b"winner" and storage.open(name).read() == b"loser"


def test_a_file_written_in_a_rolled_back_transaction_is_gone_with_it():
    storage = DatabaseStorage()
    with pytest.raises(RuntimeError), transaction.atomic():
        storage.save("outbox/attachment.txt", ContentFile(b"with its message"))
        raise RuntimeError("the message was refused")
    assert not storage.exists("outbox/attachment.txt")


def test_open_for_writing_is_refused():
    storage = DatabaseStorage()
    storage.save("a.txt", ContentFile(b"x"))
    for mode in ("wb", "ab", "r+b"):
        with pytest.raises(ValueError):
            storage.open("a.txt", mode)


def test_a_batch_reads_its_files_in_one_round_and_within_its_bound(
    monkeypatch, django_assert_num_queries
):
    """read_many (issue 13, item 6): a send batch's PDFs in two queries, never more bytes at
    once than READ_MANY_MAX_BYTES (a batch of large files cannot make a worker hold them all),
    the rest left to be read one by one; sizes by stored_sizes in one query."""
    from django.core.files.storage import FileSystemStorage

    from filestore import storage as module

    storage = DatabaseStorage()
    names = [storage.save(f"invoices/FV-{n}.pdf", ContentFile(PDF + bytes([n]))) for n in range(5)]
    monkeypatch.setattr(module, "READ_MANY_MAX_BYTES", 3 * (len(PDF) + 1))

    with django_assert_num_queries(2):
        contents = module.read_many(storage, [*names, "invoices/missing.pdf"])
    assert len(contents) == 3
    assert all(contents[name] == PDF + bytes([int(name[-5])]) for name in contents)
    with django_assert_num_queries(1):
        sizes = module.stored_sizes(storage, names)
    assert sizes == {name: len(PDF) + 1 for name in names}
    assert module.read_many(FileSystemStorage(), names) == {}
