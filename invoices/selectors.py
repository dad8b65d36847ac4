"""Reads: the invoice list with each invoice's latest message, and bulk jobs a user may see."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import User
from outbox.models import BulkJob, OutgoingMessage

from .models import Invoice, SendState


def invoices_filtered(
    *, state: str = "", customer: str = "", number: str = ""
) -> QuerySet[Invoice]:
    """Invoices by send state, part of the customer's name and part of the number."""
    invoices = Invoice.objects.select_related("customer")
    if state in SendState.values:
        invoices = invoices.filter(send_state=state)
    if customer:
        invoices = invoices.filter(customer__name__icontains=customer)
    if number:
        invoices = invoices.filter(number__icontains=number)
    return invoices


def invoice_latest_messages(*, invoices: Iterable[Invoice]) -> dict[int, OutgoingMessage]:
    """Each invoice's most recent message (by pk), keyed by invoice pk; one query."""
    ids = [str(invoice.pk) for invoice in invoices]
    if not ids:
        return {}
    latest: dict[int, OutgoingMessage] = {}
    messages = OutgoingMessage.objects.filter(
        related_type=ContentType.objects.get_for_model(Invoice), related_id__in=ids
    ).order_by("pk")
    for message in messages:  # ascending: the last one wins
        latest[int(message.related_id)] = message
    return latest


def jobs_visible_to(*, user: User) -> QuerySet[BulkJob]:
    """The user's own jobs that had something to send, newest first (staff open others' jobs
    by link)."""
    return BulkJob.objects.filter(user=user, total__gt=0)


def job_visible_to(*, user: User, pk: int) -> BulkJob:
    """A job its owner or staff may see; 404 for anyone else (no hint it exists)."""
    jobs = BulkJob.objects.select_related("user")
    if not user.is_staff:
        jobs = jobs.filter(user=user)
    return get_object_or_404(jobs, pk=pk)


@dataclass(frozen=True)
class JobRow:
    message: OutgoingMessage
    invoice: Invoice | None  # None if the invoice was deleted since


def job_rows(*, messages: Iterable[OutgoingMessage]) -> list[JobRow]:
    """A job's messages with the invoice each is about (two queries)."""
    messages = list(messages)
    invoice_type = ContentType.objects.get_for_model(Invoice)
    ids = {int(m.related_id) for m in messages if m.related_type_id == invoice_type.pk}
    invoices = Invoice.objects.select_related("customer").in_bulk(ids)
    return [
        JobRow(m, invoices.get(int(m.related_id)) if m.related_type_id == invoice_type.pk else None)
        for m in messages
    ]
