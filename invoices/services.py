"""Writes: bulk invoice sending (S1.2) — gate, claim each invoice once, a job, batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, models, transaction
from django.db.models import prefetch_related_objects
from django.db.models.functions import Cast
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.models import Company, User
from directo_mail.faults import fault_point
from directo_mail.placeholders import TemplateError
from filestore.storage import stored_sizes
from mail_templates.selectors import mail_template_error_text
from outbox.attachments import uploaded_attachments
from outbox.leases import lease_current
from outbox.limits import TOO_MANY_RECIPIENTS, TooManyRecipients
from outbox.models import BulkJob, JobState, MessageState, OutgoingMessage
from outbox.services import (
    Mail,
    batches_dispatch,
    bulk_job_cancel,
    bulk_job_dispatch,
    bulk_job_prepare_dispatch,
    bulk_job_progress,
    bulk_job_requeue,
    outbox_enqueue,
    outbox_enqueue_many,
    outbox_record_unsendable,
    to_broker,
)
from smtp_settings.resolve import SenderConfig, SenderConfigError
from smtp_settings.selectors import company_get, sender_config_for

from .letters import render_letter
from .mail import invoice_mail_render, mail_html
from .models import Customer, Invoice, Letter, LetterDelivery, SendState
from .pdf import invoice_pdf
from .unsubscribe import letter_unsubscribe


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
    if sender.needs_connection_test:
        raise MassMailingLocked(
            _(
                "Mass mailing through your own mail server unlocks after a passed connection "
                "test: open your user card and press “Test connection”. A change of "
                "server, port, security or user name asks for a new test."
            )
        )
    if not sender.mass_mailing_allowed:
        raise MassMailingLocked(
            _(
                "Mass mailing needs your own mail server: set the mail sender on your user "
                "card to SMTP (your company's server) or Microsoft 365 OAUTH. Mail through the "
                "platform's server goes one by one."
            )
        )
    return sender


PREPARE_TASK = "invoices.tasks.prepare_job"


def invoices_issued(*, invoice_ids: Sequence[int]) -> None:
    """Invoices were issued (the ERP made them): their PDFs are rendered now, by the bulk lane
    in chunks, once the caller's transaction commits. Sending them later (a month-end job, the
    composer) then attaches the kept file and costs only the mail: rendering is most of a
    mail's CPU (issue 13, item 6)."""
    _renders_dispatch(_chunks(sorted(invoice_ids)), what="issued invoices' PDFs")


def _chunks(ids: list[int]) -> list[list[int]]:
    size = settings.BULK_BATCH_SIZE
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def _renders_dispatch(chunks: list[list[int]], *, what: str) -> None:
    """Once the caller's transaction commits, a render task (bulk lane) for each chunk of
    invoice ids, in this order. A broker that is away stops it, logged: a PDF not rendered
    now is rendered by the job that sends its invoice."""
    from .tasks import render_pdfs  # tasks import services

    def dispatch() -> None:
        for chunk in chunks:
            if not to_broker(lambda c=chunk: render_pdfs.delay(c), what):
                return

    transaction.on_commit(dispatch, robust=True)


def invoices_render_pdfs(*, invoice_ids: Sequence[int]) -> int:
    """Render and keep the PDF of each of these invoices that has none (or whose kept file this
    storage lacks); returns how many were rendered. Safe to run twice: a kept PDF is reused."""
    company = company_get()
    seller = company.name if company else ""
    invoices = list(
        Invoice.objects.filter(pk__in=invoice_ids)
        .select_related("customer")
        .prefetch_related("lines")
        .order_by("pk")
    )
    kept = stored_sizes(default_storage, [i.pdf.name for i in invoices if i.pdf])
    missing = [i for i in invoices if not (i.pdf and i.pdf.name in kept)]
    for invoice in missing:
        invoice_pdf(invoice, seller=seller, kept=kept)
    return len(missing)


def invoices_send(
    *,
    user: User,
    invoice_ids: list[int] | None = None,
    unsent: bool = False,
    include_bounced: bool = False,
    send_after: datetime | None = None,
) -> BulkJob:
    """Start a job sending the chosen invoices (or every unsent one) with their PDFs.

    The invoices are claimed (unsent/failed → queued, this job's) in one short transaction:
    one UPDATE, so clicking again or another user's job finds them taken and an invoice never
    goes twice. A task then builds their messages chunk by chunk (`invoices_job_prepare`), so
    the click returns at once and memory does not grow with the job. Customer addresses that
    hard-bounced before are skipped unless `include_bounced` (S7.4). With `send_after` ("send
    at", checked by the caller) every message of the job is held until then.
    """
    sender = mass_mailing_sender(user=user)
    states = [SendState.UNSENT] if unsent else [SendState.UNSENT, SendState.FAILED]
    with transaction.atomic():
        job = BulkJob.objects.create(
            user=user,
            kind="invoices",
            sender=sender.to_snapshot(),
            prepared=False,
            prepare_task=PREPARE_TASK,
            options={"include_bounced": include_bounced},
            send_after=send_after,
        )
        chosen = Invoice.objects.filter(send_state__in=states)
        if invoice_ids is not None:
            chosen = chosen.filter(pk__in=invoice_ids)
        job.total = chosen.update(send_state=SendState.QUEUED, job=job)
        job.description = ngettext("%(count)s invoice", "%(count)s invoices", job.total) % {
            "count": job.total
        }
        if job.total:
            job.save(update_fields=["total", "description"])
            bulk_job_prepare_dispatch(job=job)
        else:
            job.state, job.prepared = JobState.FINISHED, True
            job.finished_at = job.created_at
            job.save(update_fields=["total", "description", "state", "prepared", "finished_at"])
    return job


def invoices_job_prepare(*, job_id: int) -> int:
    """Build the messages of the job's claimed invoices, a chunk (BULK_BATCH_SIZE) at a time,
    and hand each chunk to the workers as soon as it commits.

    The slow part (templates and PDFs) is done outside any transaction; only writing the
    chunk's rows holds the database, briefly, so the senders' claims are never kept waiting
    (SQLite has one writer at a time). Safe to run again or twice at once (the sweeper
    restarts it if it died): each chunk is written under the job's row lock and skips invoices
    that have their message meanwhile. A job cancelled meanwhile gives its invoices without a
    message back (unsent), for resume. Returns how many messages this run built.
    """
    # A long-lived worker must not trust content type ids it cached once (a test database is
    # flushed and refilled under it); one query a job.
    ContentType.objects.clear_cache()
    # This worker builds it now: if it dies, the sweep restarts the job once its lease expired.
    BulkJob.objects.filter(pk=job_id, prepared=False).update(worker=lease_current())
    company = company_get()
    built = last_pk = 0
    shared_out = False
    while True:
        job = BulkJob.objects.get(pk=job_id)
        if job.state != JobState.RUNNING:
            return built + _prepare_stop(job)
        # The next claimed invoices in order, then those of them with a message left out: two
        # indexed reads of a chunk's size (not a scan of every message of the job per chunk).
        candidates = list(
            Invoice.objects.filter(job=job, send_state=SendState.QUEUED, pk__gt=last_pk)
            .select_related("customer")
            .order_by("pk")[: settings.BULK_BATCH_SIZE]
        )
        built_already = _with_message(job, [invoice.pk for invoice in candidates])
        chunk = [invoice for invoice in candidates if invoice.pk not in built_already]
        if candidates and not chunk:  # a run before this one built them: on to the next
            last_pk = candidates[-1].pk
            continue
        if not chunk:
            fault_point("prepare.before_prepared")
            with transaction.atomic():
                job = BulkJob.objects.select_for_update().get(pk=job_id)
                BulkJob.objects.filter(pk=job.pk).update(prepared=True, updated_at=timezone.now())
                bulk_job_progress(job=job)  # finished, if every message has gone meanwhile
            return built
        # Which PDFs the storage has, in one query; lines only for those still to render
        # (kept since the invoice was issued: none).
        kept = stored_sizes(default_storage, [i.pdf.name for i in chunk if i.pdf])
        prefetch_related_objects([i for i in chunk if i.pdf.name not in kept], "lines")
        sources: dict = {}  # each template read once a chunk (a change applies from the next)
        drafts = [
            _invoice_draft(invoice, job=job, company=company, sources=sources, kept=kept)
            for invoice in chunk
        ]
        sender = SenderConfig.from_snapshot(job.sender)
        fault_point("prepare.chunk_rendered")
        with transaction.atomic():
            job = BulkJob.objects.select_for_update().get(pk=job_id)
            if job.state == JobState.RUNNING:
                drafted = [draft.invoice.pk for draft in drafts]
                claimed = Invoice.objects.filter(
                    job=job, send_state=SendState.QUEUED, pk__in=drafted
                )
                still = set(claimed.values_list("pk", flat=True)) - _with_message(job, drafted)
                ids = _enqueue_drafts(
                    [draft for draft in drafts if draft.invoice.pk in still],
                    sender=sender,
                    job=job,
                )
                BulkJob.objects.filter(pk=job.pk).update(updated_at=timezone.now())
                batches_dispatch(message_ids=ids, send_after=job.send_after)
                built += len(ids)
        fault_point("prepare.chunk_written")
        last_pk = chunk[-1].pk
        if not shared_out:  # once the first chunk's batch is on its way: the first mails go
            shared_out = True  # out at once, then the others' PDFs are rendered meanwhile
            _render_ahead(job_id, after=last_pk)


def _render_ahead(job_id: int, *, after: int) -> int:
    """The PDFs this job still has to render past invoice `after` (its invoices never rendered:
    issued before PDFs were kept at issue, or imported) are shared out: every chunk but the
    next goes to the bulk lane as a render task, last chunk first, while this task goes on
    from the next. Idle worker processes (on any machine) render from the end, this one finds
    their PDFs kept and only writes those chunks, and where both meet one chunk may be rendered
    twice (invoice_pdf keeps one file). Called once the first chunk's batch is with the broker,
    so the first mails do not wait behind the rendering. Without it one process rendered every
    PDF of the job while the others had little to send. A task that comes too late costs a
    query. Returns how many tasks."""
    ids = list(
        Invoice.objects.filter(job_id=job_id, send_state=SendState.QUEUED, pdf="", pk__gt=after)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    ahead = _chunks(ids)[1:]  # the next chunk is this task's own
    # After the batches committed before it, in their order; a broker away: the builder
    # renders them, as it always could.
    _renders_dispatch(ahead[::-1], what=f"job {job_id}'s PDFs")
    return len(ahead)


def _unbuilt(job: BulkJob) -> models.QuerySet:
    """The job's claimed invoices whose message is not built yet, in order."""
    return (
        Invoice.objects.filter(job=job, send_state=SendState.QUEUED)
        .exclude(pk__in=_invoice_ids_with_message(job))
        .order_by("pk")
    )


@transaction.atomic
def _prepare_stop(job: BulkJob) -> int:
    """The job was cancelled: its invoices without a message are unsent again."""
    job = BulkJob.objects.select_for_update().get(pk=job.pk)
    _unbuilt(job).update(send_state=SendState.UNSENT)
    BulkJob.objects.filter(pk=job.pk).update(prepared=True)
    return 0


def _with_message(job: BulkJob, invoice_ids: list[int]) -> set[int]:
    """Of these invoices, those whose message in `job` is built (a run of the job before this
    one, or one at the same time, wrote it)."""
    if not invoice_ids:
        return set()
    related = job.messages.filter(  # the (related_type, related_id) index: a lookup an id
        related_type=ContentType.objects.get_for_model(Invoice),
        related_id__in=[str(pk) for pk in invoice_ids],
    )
    return {int(pk) for pk in related.order_by().values_list("related_id", flat=True)}


def _invoice_ids_with_message(job: BulkJob) -> models.QuerySet:
    """The invoices of `job` whose message is built (a subquery: never a list in memory)."""
    return job.messages.annotate(
        invoice_id=Cast("related_id", output_field=models.IntegerField())
    ).values("invoice_id")


@dataclass
class _Draft:
    """An invoice's message, rendered and with its PDF stored, before any row is written."""

    invoice: Invoice
    subject: str
    text: str = ""
    html: str = ""
    to: list[str] = field(default_factory=list)
    pdf: str = ""  # storage name of the kept PDF
    unsendable: str = ""  # why it cannot go: a catalogue key ("" for the address check)
    params: dict[str, str] = field(default_factory=dict)  # the catalogue entry's parameters


def _invoice_draft(
    invoice: Invoice, *, job: BulkJob, company: Company | None, sources: dict, kept: dict
) -> _Draft:
    try:
        # A template's error is told in the sender's language (it is stored on the message).
        with translation.override(job.user.language or settings.LANGUAGE_CODE):
            subject, text = invoice_mail_render(
                invoice=invoice, user=job.user, company=company, sources=sources
            )
    except TemplateError as error:
        # This invoice's message fails with the reason; the job goes on with the others.
        reason = {"message": mail_template_error_text(error)}
        return _Draft(invoice, invoice.number, unsendable="template_error", params=reason)
    html = mail_html(text)
    to = invoice.customer.emails
    if not job.options.get("include_bounced"):
        bounced = invoice.customer.bounced_emails
        to = [address for address in to if address.lower() not in bounced]
        if invoice.customer.emails and not to:
            return _Draft(invoice, subject, unsendable="address_bounced")
    seller = company.name if company else ""
    return _Draft(invoice, subject, text, html, to, invoice_pdf(invoice, seller=seller, kept=kept))


def _enqueue_drafts(drafts: list[_Draft], *, sender: SenderConfig, job: BulkJob) -> list[int]:
    """Queue the drafts' messages (outbox_enqueue_many: two INSERTs for the chunk); one that
    cannot go (its addresses bounced before, or are missing or invalid) is recorded failed
    with its reason. Returns the messages' ids."""
    ready = [draft for draft in drafts if not draft.unsendable]
    unsendable = [draft for draft in drafts if draft.unsendable]
    results = outbox_enqueue_many(
        user=job.user,
        sender=sender,
        job=job,
        send_after=job.send_after,
        mails=[
            Mail(
                to=draft.to,
                subject=draft.subject,
                body_text=draft.text,
                body_html=draft.html,
                stored_attachments=[(_pdf_filename(draft.invoice), draft.pdf, "application/pdf")],
                related=draft.invoice,
            )
            for draft in ready
        ],
    )
    ids = []
    for draft, result in zip(ready, results, strict=True):
        if isinstance(result, TooManyRecipients):
            draft.unsendable = TOO_MANY_RECIPIENTS
        elif not isinstance(result, ValidationError):
            ids.append(result.pk)
            continue
        ids.append(_record_unsendable(draft, sender=sender, job=job))
    ids += [_record_unsendable(draft, sender=sender, job=job) for draft in unsendable]
    return ids


def _pdf_filename(invoice: Invoice) -> str:
    return f"{invoice.number.replace('/', '-')}.pdf"


def _record_unsendable(draft: _Draft, *, sender: SenderConfig, job: BulkJob) -> int:
    invoice = draft.invoice
    return outbox_record_unsendable(
        user=job.user,
        subject=draft.subject,
        addresses=invoice.customer.emails,
        related=invoice,
        job=job,
        sender=sender,
        explanation=draft.unsendable,
        params=draft.params,
    ).pk


@transaction.atomic
def invoices_job_cancel(*, job: BulkJob) -> int:
    """Cancel the job: its queued messages, and its invoices whose message is not built yet
    (unsent again at once). Returns how many invoices will not be sent."""
    job = BulkJob.objects.select_for_update().get(pk=job.pk)  # waits for a chunk being built
    cancelled = bulk_job_cancel(job=job)
    unbuilt = (
        Invoice.objects.filter(job=job, send_state=SendState.QUEUED)
        .exclude(pk__in=_invoice_ids_with_message(job))
        .update(send_state=SendState.UNSENT)
    )
    BulkJob.objects.filter(pk=job.pk).update(prepared=True)
    return cancelled + unbuilt


@transaction.atomic
def invoices_job_resume(*, job: BulkJob) -> int:
    """Resume with the job's invoices that are still unsent: those whose message was cancelled,
    and those cancelled before their message was built. One sent meanwhile by another job
    (or taken by it: the invoice names its last job) stays out, so it does not go twice."""
    mass_mailing_sender(user=job.user)  # still allowed to mass-mail (S1.2)?
    job = BulkJob.objects.select_for_update().get(pk=job.pk)
    messages = job.messages.filter(state=MessageState.CANCELLED)
    invoice_ids = {
        int(pk): message_pk for message_pk, pk in messages.values_list("pk", "related_id")
    }
    still_unsent = list(
        Invoice.objects.filter(pk__in=invoice_ids, send_state=SendState.UNSENT).values_list(
            "pk", flat=True
        )
    )
    Invoice.objects.filter(pk__in=still_unsent, send_state=SendState.UNSENT).update(
        send_state=SendState.QUEUED, job=job
    )
    count = bulk_job_requeue(job=job, message_ids=[invoice_ids[pk] for pk in still_unsent])
    unbuilt = (
        Invoice.objects.filter(job=job, send_state=SendState.UNSENT)
        .exclude(pk__in=_invoice_ids_with_message(job))
        .update(send_state=SendState.QUEUED)
    )
    if unbuilt:
        BulkJob.objects.filter(pk=job.pk).update(prepared=False)
        bulk_job_prepare_dispatch(job=job)
    return count + unbuilt


# -- letters to customers ----------------------------------------------------------------------
def _letter_claim(letter: Letter, customer: Customer) -> LetterDelivery | None:
    """Take `letter` for `customer` in the current transaction, or None if it is taken: sent,
    being sent or queued by this or another job, or possibly sent already.

    A claim whose message was cancelled is free, and so is one whose message failed: that
    message is retired (failed → cancelled, its reply and Event kept) by a conditional UPDATE,
    so staff's "retry" of it in the outbox and this new message cannot both go. A message
    flagged "possibly sent twice" may have arrived: its claim is never taken again.
    """
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
    free = OutgoingMessage.objects.filter(pk=delivery.message_id, possibly_duplicated=False)
    if free.filter(state=MessageState.CANCELLED).exists():
        return delivery
    if free.filter(state=MessageState.FAILED).update(
        state=MessageState.CANCELLED, updated_at=timezone.now()
    ):
        return delivery
    return None


# Why letters_send left a customer out (BulkJob.options["skipped"], shown on the job's page).
LETTER_SKIPS = ("opted_out", "no_address", "bounced", "taken")


def _letter_recipients(customer: Customer, *, include_bounced: bool) -> tuple[list[str], str]:
    """The addresses a letter goes to, or ([], why none): the customer opted out of letters,
    has no address, or every address hard-bounced before (unless `include_bounced`, S7.4)."""
    if customer.letters_opted_out_at is not None:
        return [], "opted_out"
    if not customer.emails:
        return [], "no_address"
    to = customer.emails
    if not include_bounced:
        to = [address for address in to if address.lower() not in customer.bounced_emails]
    return to, "" if to else "bounced"


def letters_send(
    *,
    user: User,
    letter: Letter,
    customer_ids: list[int],
    include_bounced: bool = False,
    send_after: datetime | None = None,
) -> BulkJob:
    """Start a job sending `letter` to the chosen customers (each to all their addresses).

    Like invoices_send: the S1.2 gate, then each customer is claimed (LetterDelivery, unique
    per letter and customer) in the transaction that queues its message, so sending again or
    another user's job skips the customers already taken. Customers who opted out of letters,
    have no address or whose addresses all bounced (unless `include_bounced`) are skipped and
    counted in the job's options. Each letter carries its one-click unsubscribe link (header
    and last line, invoices.unsubscribe). Raises ValidationError if the letter does not render
    for a customer (nothing is queued then).
    """
    sender = mass_mailing_sender(user=user)
    company = company_get()
    company_name = company.name if company else sender.from_name or sender.from_email
    with transaction.atomic():
        customers = list(Customer.objects.filter(pk__in=customer_ids).order_by("pk"))
        job = BulkJob.objects.create(user=user, kind="letters", send_after=send_after)
        count = 0
        skipped = dict.fromkeys(LETTER_SKIPS, 0)
        for customer in customers:
            to, why = _letter_recipients(customer, include_bounced=include_bounced)
            if why:
                skipped[why] += 1
                continue
            delivery = _letter_claim(letter, customer)
            if delivery is None:
                skipped["taken"] += 1
                continue
            subject, body = render_letter(letter, customer)
            line, headers = letter_unsubscribe(
                letter=letter, customer=customer, company=company_name
            )
            message = outbox_enqueue(
                user=user,
                to=to,
                subject=subject,
                body_text=f"{body.rstrip()}\n\n{line}\n",
                related=customer,
                job=job,
                sender=sender,
                extra_headers=headers,
                send_after=send_after,
            )
            LetterDelivery.objects.filter(pk=delivery.pk).update(message=message)
            count += 1
        job.total = count
        job.options = {
            "include_bounced": include_bounced,
            "skipped": skipped,
            "subject": letter.subject[:200],  # the title, in each viewer's language (BulkJob.title)
        }
        job.description = (
            ngettext(
                "Letter “%(subject)s” to %(count)s customer",
                "Letter “%(subject)s” to %(count)s customers",
                count,
            )
            % {"subject": letter.subject, "count": count}
        )[:200]
        job.state = JobState.RUNNING if count else JobState.FINISHED
        job.save(update_fields=["total", "options", "description", "state"])
        bulk_job_dispatch(job=job)
    return job


@transaction.atomic
def letters_job_resume(*, job: BulkJob) -> int:
    """Re-queue this job's cancelled messages whose claim is still theirs: a customer another
    job has taken meanwhile stays cancelled here, so the letter does not go twice, and so does
    one who opted out of letters meanwhile."""
    mass_mailing_sender(user=job.user)
    cancelled = list(job.messages.filter(state=MessageState.CANCELLED).values_list("pk", flat=True))
    still_ours = list(
        LetterDelivery.objects.select_for_update()
        .filter(message_id__in=cancelled, customer__letters_opted_out_at__isnull=True)
        .values_list("message_id", flat=True)
    )
    return bulk_job_requeue(job=job, message_ids=still_ours)


# -- one invoice by e-mail (the composer, issue 12) --------------------------------------------
class InvoiceBusy(ValidationError):
    """The invoice is being sent (a bulk job or another composer claimed it): not sent twice."""


def invoice_compose_defaults(*, invoice: Invoice, user: User | None = None) -> dict[str, str]:
    """The composer's prefilled fields: the customer's addresses that did not bounce, and the
    subject and body of the company's invoice mail template in the customer's language (as
    bulk jobs send it). If the company's template does not render for this invoice, the
    shipped default fills them: the user reads and can change them before sending."""
    try:
        subject, body = invoice_mail_render(invoice=invoice, user=user)
    except TemplateError:
        subject, body = invoice_mail_render(invoice=invoice, user=user, shipped=True)
    bounced = invoice.customer.bounced_emails
    to = [address for address in invoice.customer.emails if address.lower() not in bounced]
    return {"to": ", ".join(to), "subject": subject, "body": body}


def invoice_send_one(
    *,
    user: User,
    invoice: Invoice,
    to: list[str],
    cc: list[str] = (),
    bcc: list[str] = (),
    subject: str,
    body: str,
    attachments: Sequence[File] = (),
    send_after: datetime | None = None,
) -> OutgoingMessage:
    """Send one invoice with its PDF (and any files the user attached) through the user's
    effective sender, in every mode (only mass mailing is gated, S1.2): outbox_enqueue applies
    the recipient cap, the relay's limits and the server's size limit.

    The invoice is claimed (→ queued, no job) by one conditional UPDATE in the enqueue's
    transaction: an invoice a bulk job (or another click) holds is refused with InvoiceBusy, and
    a bulk job started afterwards finds it taken, so nothing goes twice by accident. An invoice
    already sent may be sent again on purpose. A refusal leaves the invoice as it was.
    With `send_after` ("send at", checked by the caller) the message is held until then; the
    invoice stays queued meanwhile, and cancelling the message gives it back (unsent).
    """
    company = company_get()
    pdf = invoice_pdf(invoice, seller=company.name if company else "")
    with transaction.atomic():  # a refusal below rolls the claim back with the message
        claimed = (
            Invoice.objects.filter(pk=invoice.pk)
            .exclude(send_state=SendState.QUEUED)
            .update(send_state=SendState.QUEUED, job=None)
        )
        if not claimed:
            raise InvoiceBusy(
                _("This invoice is being sent right now; wait until it is sent or has failed.")
            )
        return outbox_enqueue(
            user=user,
            to=to,
            cc=cc,
            bcc=bcc,
            subject=subject,
            body_text=body,
            attachments=uploaded_attachments(attachments),
            stored_attachments=[
                (f"{invoice.number.replace('/', '-')}.pdf", pdf, "application/pdf")
            ],
            related=invoice,
            send_after=send_after,
        )


def customer_send_one(
    *,
    user: User,
    customer: Customer,
    to: list[str],
    cc: list[str] = (),
    bcc: list[str] = (),
    subject: str,
    body: str,
    attachments: Sequence[File] = (),
    send_after: datetime | None = None,
) -> OutgoingMessage:
    """A letter (or any free mail) to one customer, through the user's effective sender in every
    mode: one mail the user writes and sends, not mass mailing, so S1.2 does not gate it. It is
    about the customer (the customer's history lists it). It takes no LetterDelivery: its text is
    the user's, even when a stored letter prefilled it, so a letter job may still send that
    letter to the customer."""
    return outbox_enqueue(
        user=user,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject,
        body_text=body,
        attachments=uploaded_attachments(attachments),
        related=customer,
        send_after=send_after,
    )
