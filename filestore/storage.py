"""Django file storage in the database (issue 13, item 5: files on every machine).

The invoices' PDFs and the composer's attachments are written by one process (the web, a
worker building a job) and read by another (any worker, on any machine). On local disk
(FileSystemStorage, the embedded default) a worker on a second machine does not find them and
fails the message; in the database every worker does. Chosen by FILE_STORAGE=database (the
default whenever DATABASE_URL is not SQLite).

Why not a library: django-db-file-storage keeps base64 text and serves files through its own
view; this one keeps bytes (BinaryField), serves nothing (the app's views read files and check
who may), and a file written inside a transaction (an attachment with its message) is
committed or rolled back with it. Files are small (a PDF of tens of KB, attachments within
ATTACHMENT_LIMITS_MB), so each is read and written whole: a 25 MB attachment costs a few
times that in the process that writes or sends it, bounded by UPLOAD_MAX_MB.

Upgrading from local disk: a file not in the table is read from MEDIA_ROOT on this machine, so
what was queued before the switch still goes from the machine that kept it.
"""

from __future__ import annotations

import contextlib

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, Storage
from django.db import IntegrityError, transaction
from django.utils.deconstruct import deconstructible

from .models import StoredFile


@deconstructible(path="filestore.storage.DatabaseStorage")
class DatabaseStorage(Storage):
    def _open(self, name: str, mode: str = "rb") -> File:
        if any(flag in mode for flag in "wa+"):
            raise ValueError("files in the database are written with save(), not open()")
        content = StoredFile.objects.filter(name=name).values_list("content", flat=True).first()
        if content is None:
            if (kept := self._kept_before(name)) is None:
                raise FileNotFoundError(f"no stored file {name!r}")
            return ContentFile(kept, name=name)
        return ContentFile(bytes(content), name=name)

    def _kept_before(self, name: str) -> bytes | None:
        """A file kept on this machine's disk (MEDIA_ROOT) before FILE_STORAGE became
        "database": read from there, so an upgrade loses nothing queued. Only names inside
        MEDIA_ROOT (FileSystemStorage's own check)."""
        legacy = FileSystemStorage(location=settings.MEDIA_ROOT)
        try:
            with legacy.open(name, "rb") as stream:
                return stream.read()
        except (FileNotFoundError, SuspiciousFileOperation, IsADirectoryError):
            return None

    def exists(self, name: str) -> bool:
        if StoredFile.objects.filter(name=name).exists():
            return True
        try:  # kept on this disk before the switch (without reading it)
            return FileSystemStorage(location=settings.MEDIA_ROOT).exists(name)
        except SuspiciousFileOperation:
            return False

    def _save(self, name: str, content: File) -> str:
        data = b"".join(content.chunks()) if hasattr(content, "chunks") else content.read()
        if isinstance(data, str):
            data = data.encode()
        while True:
            try:
                with transaction.atomic():  # a savepoint: a taken name leaves nothing behind
                    StoredFile.objects.create(name=name, content=data, size=len(data))
                return name
            except IntegrityError:  # another process took the name meanwhile
                name = self.get_available_name(name)

    def delete(self, name: str) -> None:
        StoredFile.objects.filter(name=name).delete()

    def size(self, name: str) -> int:
        size = StoredFile.objects.filter(name=name).values_list("size", flat=True).first()
        if size is None:
            try:  # kept on this disk before the switch
                return FileSystemStorage(location=settings.MEDIA_ROOT).size(name)
            except (SuspiciousFileOperation, OSError):
                raise FileNotFoundError(f"no stored file {name!r}") from None
        return size

    def url(self, name: str) -> str:
        # Not served from here: the app's own views (the PDF preview) read the file after
        # checking who asks. As with local storage, MEDIA_URL is not routed.
        return f"{settings.MEDIA_URL}{name}"

    def get_created_time(self, name: str):
        created = StoredFile.objects.filter(name=name).values_list("created_at", flat=True).first()
        if created is None:
            raise FileNotFoundError(f"no stored file {name!r}")
        return created

    get_modified_time = get_created_time
    get_accessed_time = get_created_time


def stored_sizes(storage: Storage, names: list[str]) -> dict[str, int]:
    """The size of each of `names` that `storage` has (a missing one is left out): for the
    database storage one query for them all (a job's chunk of PDFs), for others one look each.
    """
    sizes: dict[str, int] = {}
    if isinstance(storage, DatabaseStorage):
        sizes = dict(StoredFile.objects.filter(name__in=names).values_list("name", "size"))
    for name in names:
        if name not in sizes:
            with contextlib.suppress(FileNotFoundError, SuspiciousFileOperation, OSError):
                sizes[name] = storage.size(name)
    return sizes


# A batch reads its files in one query up to this many bytes in all; the rest one by one.
READ_MANY_MAX_BYTES = 16 * 1024 * 1024


def read_many(storage: Storage, names: list[str]) -> dict[str, bytes]:
    """The contents of `names` in one query when `storage` is the database (a batch's PDFs:
    one round trip instead of one a mail), as many as fit in READ_MANY_MAX_BYTES together.
    Empty for other storages; the caller reads what is not here as before."""
    if not isinstance(storage, DatabaseStorage) or not names:
        return {}
    chosen, total = [], 0
    for name, size in StoredFile.objects.filter(name__in=names).values_list("name", "size"):
        if total + size <= READ_MANY_MAX_BYTES:
            chosen.append(name)
            total += size
    rows = StoredFile.objects.filter(name__in=chosen).values_list("name", "content")
    return {name: bytes(content) for name, content in rows}
