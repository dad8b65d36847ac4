"""Reads: the invoice list with each invoice's latest message, and bulk jobs a user may see."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.contenttypes.models import ContentType
from django.db.models import CharField, Q, QuerySet
from django.db.models.functions import Cast
from django.shortcuts import get_object_or_404

from accounts.models import User
from outbox.models import BulkJob, MessageState, OutgoingMessage

from .models import Customer, Invoice, Letter, LetterDelivery, SendState


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
    invoice: Invoice | None  # None if the invoice was deleted since, or for a letter
    customer: Customer | None  # the invoice's customer, or the letter's recipient


def job_rows(*, messages: Iterable[OutgoingMessage]) -> list[JobRow]:
    """A job's messages with the invoice or the customer each is about (three queries)."""
    messages = list(messages)
    invoice_type = ContentType.objects.get_for_model(Invoice)
    customer_type = ContentType.objects.get_for_model(Customer)

    def ids(content_type) -> set[int]:
        return {int(m.related_id) for m in messages if m.related_type_id == content_type.pk}

    invoices = Invoice.objects.select_related("customer").in_bulk(ids(invoice_type))
    customers = Customer.objects.in_bulk(ids(customer_type))
    rows = []
    for message in messages:
        invoice = customer = None
        if message.related_type_id == invoice_type.pk:
            invoice = invoices.get(int(message.related_id))
            customer = invoice.customer if invoice else None
        elif message.related_type_id == customer_type.pk:
            customer = customers.get(int(message.related_id))
        rows.append(JobRow(message, invoice, customer))
    return rows


def letters_all() -> QuerySet[Letter]:
    return Letter.objects.select_related("created_by")


def letter_delivered_customer_ids(*, letter: Letter) -> set[int]:
    """Customers this letter is sent, being sent or queued to, or possibly sent to: the ones
    letters_send would not take again (a cancelled or failed delivery it would)."""
    return set(
        LetterDelivery.objects.filter(letter=letter)
        .exclude(message__state__in=[MessageState.CANCELLED, MessageState.FAILED])
        .values_list("customer_id", flat=True)
    ) | set(
        LetterDelivery.objects.filter(
            letter=letter, message__state=MessageState.FAILED, message__possibly_duplicated=True
        ).values_list("customer_id", flat=True)
    )


def letter_failed_customer_ids(*, letter: Letter) -> set[int]:
    """Customers whose delivery of this letter failed (and cannot have arrived): the ones
    "Send again" offers."""
    return set(
        LetterDelivery.objects.filter(
            letter=letter, message__state=MessageState.FAILED, message__possibly_duplicated=False
        ).values_list("customer_id", flat=True)
    )


def invoice_history(*, invoice: Invoice) -> list[OutgoingMessage]:
    """Every message about the invoice, newest first, with its events and sender (two
    queries)."""
    return list(
        OutgoingMessage.objects.filter(
            related_type=ContentType.objects.get_for_model(Invoice), related_id=str(invoice.pk)
        )
        .select_related("user")
        .order_by("-pk")
        .prefetch_related("events")
    )


def customers_filtered(*, text: str = "") -> QuerySet[Customer]:
    """Customers whose name or one of whose addresses contains `text` (addresses are a JSON
    list: searched as text), by name."""
    customers = Customer.objects.order_by("name", "pk")
    if text:
        customers = customers.filter(Q(name__icontains=text) | Q(emails__icontains=text))
    return customers


def customer_history(*, customer: Customer) -> QuerySet[OutgoingMessage]:
    """Every message about the customer (letters, free mail) and about any of its invoices,
    newest first, with its sender; page it, then `customer_history_invoices` (one query for the
    page, one for its events, one for its invoices: no query per row)."""
    invoice_ids = (
        Invoice.objects.filter(customer=customer)
        .annotate(key=Cast("pk", output_field=CharField()))
        .values("key")
    )
    return (
        OutgoingMessage.objects.filter(
            Q(related_type=ContentType.objects.get_for_model(Customer), related_id=str(customer.pk))
            | Q(related_type=ContentType.objects.get_for_model(Invoice), related_id__in=invoice_ids)
        )
        .select_related("user")
        .prefetch_related("events")
        .order_by("-pk")
    )


def customer_history_invoices(*, messages: Iterable[OutgoingMessage]) -> dict[int, Invoice]:
    """The invoices the given messages are about, by message pk."""
    invoice_type = ContentType.objects.get_for_model(Invoice)
    messages = [m for m in messages if m.related_type_id == invoice_type.pk]
    invoices = Invoice.objects.in_bulk({int(m.related_id) for m in messages})
    return {m.pk: invoices[int(m.related_id)] for m in messages if int(m.related_id) in invoices}
