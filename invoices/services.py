"""Writes: bulk invoice sending (S1.2) — gate, claim each invoice once, a job, batches."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.models import User
from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
from outbox.services import bulk_job_dispatch, bulk_job_requeue, outbox_enqueue
from smtp_settings.resolve import SenderConfig, SenderConfigError
from smtp_settings.selectors import company_get, sender_config_for

from .letters import render_letter
from .models import Customer, Invoice, Letter, LetterDelivery, SendState
from .pdf import invoice_pdf


class MassMailingLocked(Exception):
    """S1.2: the user's effective sender is the platform relay; `message` says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def mass_mailing_sender(*, user: User) -> SenderConfig:
    """The sender for a mass mailing, or MassMailingLocked saying why there is none."""
    try:
        sender = sender_config_for(user=user)
    except SenderConfigError as error:
        raise MassMailingLocked(str(error.message)) from None
    if not sender.mass_mailing_allowed:
        raise MassMailingLocked(
            _(
                "Mass mailing needs your own mail server: set the mail sender on your user "
                "card to SMTP (your company's server) or Microsoft 365 OAUTH. Mail through the "
                "platform's server goes one by one."
            )
        )
    return sender


def invoices_send(
    *, user: User, invoice_ids: list[int] | None = None, unsent: bool = False
) -> BulkJob:
    """Start a job sending the chosen invoices (or every unsent one) with their PDFs.

    Each invoice is claimed (unsent/failed → sending) under a row lock in the transaction that
    creates its message, so clicking again or another user's job finds it taken: an invoice
    never goes twice. Returns the job; its batches leave once the transaction commits.
    """
    sender = mass_mailing_sender(user=user)
    company = company_get()
    seller = company.name if company else ""
    with transaction.atomic():
        states = [SendState.UNSENT] if unsent else [SendState.UNSENT, SendState.FAILED]
        chosen = Invoice.objects.select_for_update().filter(send_state__in=states)
        if invoice_ids is not None:
            chosen = chosen.filter(pk__in=invoice_ids)
        invoices = list(chosen.select_related("customer").order_by("pk"))
        Invoice.objects.filter(pk__in=[i.pk for i in invoices]).update(send_state=SendState.QUEUED)
        job = BulkJob.objects.create(
            user=user,
            kind="invoices",
            total=len(invoices),
            description=ngettext("%(count)s invoice", "%(count)s invoices", len(invoices))
            % {"count": len(invoices)},
        )
        for invoice in invoices:
            _enqueue_invoice(invoice, user=user, sender=sender, job=job, seller=seller)
        if not invoices:
            BulkJob.objects.filter(pk=job.pk).update(state=JobState.FINISHED)
        bulk_job_dispatch(job=job)
    return job


def _enqueue_invoice(invoice: Invoice, *, user, sender, job, seller: str) -> None:
    context = {"invoice": invoice}
    with translation.override(invoice.customer.language):
        subject = render_to_string("emails/invoice/subject.txt", context).strip()
        text = render_to_string("emails/invoice/body.txt", context)
        html = render_to_string("emails/invoice/body.html", context)
    pdf = invoice_pdf(invoice, seller=seller)
    outbox_enqueue(
        user=user,
        to=invoice.customer.emails,
        subject=subject,
        body_text=text,
        body_html=html,
        attachments=[(f"{invoice.number.replace('/', '-')}.pdf", pdf, "application/pdf")],
        related=invoice,
        job=job,
        sender=sender,
    )


@transaction.atomic
def invoices_job_resume(*, job: BulkJob) -> int:
    """Resume with the cancelled invoices that are still unsent: one sent meanwhile by another
    job stays cancelled here, so it does not go twice."""
    mass_mailing_sender(user=job.user)  # still allowed to mass-mail (S1.2)?
    messages = job.messages.filter(state=MessageState.CANCELLED)
    invoice_ids = {
        int(pk): message_pk for message_pk, pk in messages.values_list("pk", "related_id")
    }
    still_unsent = list(
        Invoice.objects.select_for_update()
        .filter(pk__in=invoice_ids, send_state=SendState.UNSENT)
        .values_list("pk", flat=True)
    )
    Invoice.objects.filter(pk__in=still_unsent).update(send_state=SendState.QUEUED)
    return bulk_job_requeue(job=job, message_ids=[invoice_ids[pk] for pk in still_unsent])


# -- letters to customers ----------------------------------------------------------------------
def _letter_claim(letter: Letter, customer: Customer) -> LetterDelivery | None:
    """Take `letter` for `customer` in the current transaction, or None if it is taken: sent,
    being sent or queued by this or another job. A claim whose message was cancelled is free."""
    delivery = (
        LetterDelivery.objects.select_for_update().filter(letter=letter, customer=customer).first()
    )
    if delivery is None:
        try:
            with transaction.atomic():  # a savepoint: another job may insert it meanwhile
                return LetterDelivery.objects.create(letter=letter, customer=customer)
        except IntegrityError:
            return None
    if delivery.message_id is None:
        return None  # its message was deleted: never risk sending twice
    state = OutgoingMessage.objects.filter(pk=delivery.message_id).values_list("state", flat=True)
    if state.first() != MessageState.CANCELLED:
        return None
    return delivery


def letters_send(*, user: User, letter: Letter, customer_ids: list[int]) -> BulkJob:
    """Start a job sending `letter` to the chosen customers (each to all their addresses).

    Like invoices_send: the S1.2 gate, then each customer is claimed (LetterDelivery, unique
    per letter and customer) in the transaction that queues its message, so sending again or
    another user's job skips the customers already taken. Raises ValidationError if the letter
    does not render for a customer (nothing is queued then).
    """
    sender = mass_mailing_sender(user=user)
    with transaction.atomic():
        customers = list(Customer.objects.filter(pk__in=customer_ids).order_by("pk"))
        job = BulkJob.objects.create(user=user, kind="letters")
        count = 0
        for customer in customers:
            if not customer.emails:
                continue
            delivery = _letter_claim(letter, customer)
            if delivery is None:
                continue
            subject, body = render_letter(letter, customer)
            message = outbox_enqueue(
                user=user,
                to=customer.emails,
                subject=subject,
                body_text=body,
                related=customer,
                job=job,
                sender=sender,
            )
            LetterDelivery.objects.filter(pk=delivery.pk).update(message=message)
            count += 1
        job.total = count
        job.description = (
            ngettext(
                "Letter “%(subject)s” to %(count)s customer",
                "Letter “%(subject)s” to %(count)s customers",
                count,
            )
            % {"subject": letter.subject, "count": count}
        )[:200]
        job.state = JobState.RUNNING if count else JobState.FINISHED
        job.save(update_fields=["total", "description", "state"])
        bulk_job_dispatch(job=job)
    return job


@transaction.atomic
def letters_job_resume(*, job: BulkJob) -> int:
    """Re-queue this job's cancelled messages whose claim is still theirs: a customer another
    job has taken meanwhile stays cancelled here, so the letter does not go twice."""
    mass_mailing_sender(user=job.user)
    cancelled = list(job.messages.filter(state=MessageState.CANCELLED).values_list("pk", flat=True))
    still_ours = list(
        LetterDelivery.objects.select_for_update()
        .filter(message_id__in=cancelled)
        .values_list("message_id", flat=True)
    )
    return bulk_job_requeue(job=job, message_ids=still_ours)
