"""outbox.compiled (issue 13, item 6): the hot path's statements are built once, and what they
write is exactly what the ORM would write (the same columns, in the same stored form)."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection, models
from django.utils import timezone

from outbox.compiled import RowsInsert, RowUpdate, _prepared
from outbox.models import Attachment, BulkJob, MessageState, OutgoingMessage
from tests import factories

pytestmark = pytest.mark.django_db

WHEN = datetime.datetime(2026, 12, 7, 10, 30, 15, 123456, tzinfo=datetime.UTC)


def _raw(model, pks) -> list[dict]:
    """The rows as the database stores them (no field converts them back), minus what differs
    by design (keys, Message-IDs, creation times)."""
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id IN ({', '.join(map(str, pks))})")  # noqa: S608
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    skip = {"id", "message_id", "created_at", "updated_at", "message_id_id"}
    return sorted(
        ({k: v for k, v in row.items() if k not in skip} for row in rows),
        key=lambda r: r["subject"],
    )


def _messages(user, job, tag: str) -> list[OutgoingMessage]:
    snapshot = {"transport": "smtp", "host": "smtp.acme.test", "from_name": "Zażółć Sp. z o.o."}
    return [
        OutgoingMessage(
            user=user,
            sender=snapshot,  # one dict for every row: dumped once, written to each
            message_id=f"<{tag}{n}@acme.test>",
            envelope_from="anna@acme.test",
            to=[f"p{n}@klient.test", "ewa@klient.test"],
            cc=[] if n % 2 else ["szef@klient.test"],
            subject=f"FV/{n}/2026 — zażółć \u00a0 😀",
            body_text=f"Dzień dobry {n}\r\n.\r\n",
            body_html="" if n % 3 else "<p>x</p>",
            extra_headers={} if n % 2 else {"List-Unsubscribe": "<https://erp.test/u>"},
            state=MessageState.QUEUED,
            send_after=None if n % 2 else WHEN,
            related_id=str(n),
            job=job if n % 4 else None,
        )
        for n in range(100)  # more than one statement's worth on SQLite (999 parameters)
    ]


def test_rows_insert_writes_what_bulk_create_writes():
    user = factories.user("ANNA")
    job = BulkJob.objects.create(user=user, kind="invoices", sender={})
    by_orm = OutgoingMessage.objects.bulk_create(_messages(user, job, "orm"))
    compiled = _messages(user, job, "compiled")

    RowsInsert(OutgoingMessage).run(compiled)

    assert all(m.pk and not m._state.adding for m in compiled)
    assert len({m.pk for m in compiled}) == 100
    assert _raw(OutgoingMessage, [m.pk for m in compiled]) == _raw(
        OutgoingMessage, [m.pk for m in by_orm]
    )
    # The instances are the rows: their keys name them (a chunk's files hang on them).
    for message in compiled[:3]:
        assert OutgoingMessage.objects.get(pk=message.pk).message_id == message.message_id
        assert message.created_at is not None  # auto_now_add, as pre_save sets it


def test_rows_insert_keeps_files_by_name():
    user = factories.user("ANNA")
    (message,) = _messages(user, None, "f")[:1]
    message.save()
    files = [
        Attachment(message=message, filename=f"FV-{n}.pdf", file=f"invoices/FV-{n}.pdf")
        for n in range(3)
    ]

    RowsInsert(Attachment).run(files)

    stored = Attachment.objects.filter(message=message).order_by("pk")
    assert [(a.pk, a.file.name, a.content_type) for a in stored] == [
        (f.pk, f"invoices/FV-{n}.pdf", "application/octet-stream") for n, f in enumerate(files)
    ]


def test_row_update_writes_what_update_writes():
    user = factories.user("ANNA")
    one, two = _messages(user, None, "one")[0], _messages(user, None, "two")[0]
    one.save()
    two.save()
    values = {
        "state": MessageState.SENT,
        "sent_at": WHEN,
        "last_reply": "250 2.0.0 Ok: queued as ABC",
        "explanation": "",
        "explanation_params": {"address": "jan@klient.test"},
    }
    OutgoingMessage.objects.filter(pk=one.pk).update(**values, attempts=models.F("attempts") + 1)

    update = RowUpdate(
        OutgoingMessage, sets=tuple(values), increments=("attempts",), where="{pk} = %s"
    )
    assert update.run(values, {"pk": two.pk}) == 1

    assert _raw(OutgoingMessage, [one.pk]) == _raw(OutgoingMessage, [two.pk])


class _Scrambled(models.TextField):
    """A field that changes every value on its way to the database (as an encrypted one does)."""

    def get_db_prep_save(self, value, connection):
        return f"scrambled:{value}"


class _Aware(models.DateTimeField):
    def get_db_prep_save(self, value, connection):
        return "my own form"


def test_only_djangos_own_plain_fields_skip_the_field():
    """A field of any other class (a subclass too) prepares its values itself: a shortcut for
    plain text must never write an encrypted field's clear text."""
    scrambled, aware = _Scrambled(), _Aware()
    scrambled.set_attributes_from_name("secret")
    aware.set_attributes_from_name("when")

    assert _prepared(scrambled, "hunter2", connection) == "scrambled:hunter2"
    assert _prepared(aware, timezone.now(), connection) == "my own form"
    assert _prepared(models.TextField(), "hunter2", connection) == "hunter2"
    naive = datetime.datetime(2026, 12, 7, 10, 30)  # the field warns and converts
    plain = models.DateTimeField()
    plain.set_attributes_from_name("when")
    with pytest.warns(RuntimeWarning):
        assert _prepared(plain, naive, connection) == plain.get_db_prep_save(naive, connection)


def test_rows_insert_checks_related_objects_as_bulk_create_does():
    user = factories.user("ANNA")
    job = BulkJob(user=user, kind="invoices", sender={})
    (message,) = _messages(user, None, "r")[:1]
    message.job = job

    with pytest.raises(ValueError, match="unsaved related object"):
        RowsInsert(OutgoingMessage).run([message])  # never a NULL job in place of the job

    job.save()  # saved after it was assigned: its id is written
    RowsInsert(OutgoingMessage).run([message])
    assert OutgoingMessage.objects.get(pk=message.pk).job_id == job.pk


def test_rows_insert_keeps_one_statement_a_model():
    """Chunks of every size up to the full one are written, but only the full chunk's statement
    is kept: a long-lived worker does not collect one for every count it ever wrote."""
    user = factories.user("ANNA")
    insert = RowsInsert(OutgoingMessage)
    for count in (1, 7, 33, 34, 100, 101):
        batch = _messages(user, None, f"c{count}-")[:count] if count <= 100 else None
        if batch is None:
            batch = _messages(user, None, "c101a-") + _messages(user, None, "c101b-")[:1]
        insert.run(batch)
        assert all(m.pk for m in batch)
    assert len(insert._sql) == 1
    assert OutgoingMessage.objects.count() == 1 + 7 + 33 + 34 + 100 + 101
