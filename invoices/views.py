"""Pages: the invoice list with its two send buttons (S1.2), a bulk job followed live, the jobs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from outbox.attachments import MB, size_limit
from outbox.limits import LimitReached, TooManyRecipients
from outbox.models import EventKind, JobState, MessageState
from outbox.services import bulk_job_cancel, bulk_job_progress
from smtp_settings.explain import explain
from smtp_settings.resolve import SenderConfig, SenderConfigError
from smtp_settings.selectors import company_get, sender_config_for

from .forms import (
    CustomerSelectionForm,
    InvoiceComposeForm,
    InvoiceSelectionForm,
    LetterPreviewForm,
    SendAtForm,
)
from .letters import (
    LetterForm,
    letter_editable_by,
    letter_errors,
    letter_render_error,
    render_letter,
)
from .models import Customer, Invoice, Letter, SendState
from .pdf import render_invoice_pdf
from .selectors import (
    invoice_history,
    invoice_latest_messages,
    invoices_filtered,
    job_rows,
    job_visible_to,
    jobs_visible_to,
    letter_delivered_customer_ids,
    letter_failed_customer_ids,
    letters_all,
)
from .services import (
    LETTER_SKIPS,
    InvoiceBusy,
    MassMailingLocked,
    invoice_compose_defaults,
    invoice_send_one,
    invoices_job_cancel,
    invoices_job_resume,
    invoices_send,
    letters_job_resume,
    letters_send,
    mass_mailing_sender,
)
from .unsubscribe import customer_letters_opt_out, unsubscribe_token_read

INVOICES_PER_PAGE = 50
CUSTOMERS_PER_PAGE = 100
ROWS_PER_PAGE = 100


def duration(seconds: int | None) -> str:
    """ "1:05:09", "5:09", "0:09": as static/js/progress.js shows the time left; "—" when it
    cannot be told yet (nothing sent)."""
    if seconds is None:
        return "—"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


def _when(moment) -> str:
    """A time as the pages show it: the user's time zone (accounts.middleware), short format."""
    return formats.date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")


def _send_at(request: HttpRequest, back: str):
    """The bulk buttons' optional "send at": (time or None, None), or (None, a redirect back
    with the reason) when it is refused."""
    form = SendAtForm(request.POST)
    if form.is_valid():
        return form.cleaned_data["send_at"], None
    messages.error(
        request,
        _("Nothing was sent: %(errors)s") % {"errors": " ".join(form.errors["send_at"])},
    )
    return None, redirect(back)


def _locked_reason(request: HttpRequest) -> str:
    """Why this user may not start a mass mailing (S1.2), or "" when they may."""
    try:
        mass_mailing_sender(user=request.user)
    except MassMailingLocked as locked:
        return locked.message
    return ""


@require_GET
@login_required
def invoice_list(request: HttpRequest) -> HttpResponse:
    filters = {
        "state": request.GET.get("state", "").strip(),
        "customer": request.GET.get("customer", "").strip(),
        "number": request.GET.get("number", "").strip(),
    }
    page = Paginator(invoices_filtered(**filters), INVOICES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    latest = invoice_latest_messages(invoices=page)
    rows = []
    for invoice in page:
        message = latest.get(invoice.pk)
        failure = None
        if invoice.send_state == SendState.FAILED and message and message.explanation:
            failure = explain(message.explanation, message.explanation_params)
        elif invoice.send_state == SendState.BOUNCED and message:
            bounce = message.events.filter(kind=EventKind.BOUNCED).first()
            if bounce:
                failure = explain(bounce.explanation, bounce.params)
        rows.append({"invoice": invoice, "message": message, "failure": failure})
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "invoices/list.html",
        {
            "page": page,
            "rows": rows,
            "filters": filters,
            "states": SendState.choices,
            "query": query.urlencode(),
            "locked": _locked_reason(request),
        },
    )


@require_POST
@login_required
def invoice_send(request: HttpRequest) -> HttpResponse:
    """ "Send selected" (action=selected, invoice=<pk>…) or "Send all unsent" (action=unsent)."""
    back = reverse("invoices:list")
    if request.GET:
        back += "?" + request.GET.urlencode()
    unsent = request.POST.get("action") == "unsent"
    invoice_ids = None
    if not unsent:
        selection = InvoiceSelectionForm(request.POST)
        if not selection.is_valid():
            messages.error(request, _("Nothing was sent: the selection is not a list of invoices."))
            return redirect(back)
        invoice_ids = selection.cleaned_data["invoice"]
        if not invoice_ids:
            messages.error(request, _("Select the invoices to send first."))
            return redirect(back)
    send_after, refused = _send_at(request, back)
    if refused:
        return refused
    try:
        job = invoices_send(
            user=request.user,
            invoice_ids=invoice_ids,
            unsent=unsent,
            include_bounced=request.POST.get("include_bounced") == "on",
            send_after=send_after,
        )
    except MassMailingLocked as locked:
        messages.error(request, locked.message)
        return redirect(back)
    if not job.total:
        messages.info(
            request,
            _("Nothing to send: there are no unsent invoices.")
            if unsent
            else _("Nothing to send: the selected invoices are already sent or being sent."),
        )
        return redirect(back)
    return redirect("invoices:job", pk=job.pk)


def _message_failure(message) -> dict[str, str] | None:
    """Why a message failed or came back, in the reader's language, or None."""
    bounce = next((e for e in message.events.all() if e.kind == EventKind.BOUNCED), None)
    if bounce is not None:
        return explain(bounce.explanation, bounce.params)
    if message.explanation:
        return explain(message.explanation, message.explanation_params)
    return None


@require_GET
@login_required
def invoice_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """An invoice: its data, its PDF, "Send by e-mail" and every message about it (its
    history). Every user sees every invoice (single-company ERP, README "Mass mailing"); a
    message is its sender's (and staff's), so another user's shows only its time and state."""
    invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=pk)
    messages_ = invoice_history(invoice=invoice)
    history = history_rows(request, messages_, invoices={m.pk: invoice for m in messages_})
    return render(request, "invoices/detail.html", {"invoice": invoice, "history": history})


def history_rows(
    request: HttpRequest, messages_: Iterable, *, invoices: dict[int, Invoice]
) -> list[dict]:
    """The rows of a record's history (templates/invoices/_history.html). Every row shows
    when, who sent it, and its state; the recipients, the server's reply, the explanation and
    the message's page are its sender's and staff's (outbox.selectors.message_visible_to).
    "Send again" for a failed or bounced message: an invoice's opens the invoice composer
    (every user may send an invoice); a letter's opens the customer composer prefilled with
    the message, so only for those who may read it."""
    rows = []
    for message in messages_:
        own = request.user.is_staff or message.user_id == request.user.pk
        invoice = invoices.get(message.pk)
        again = None
        if message.state == MessageState.FAILED or message.bounced_at:
            if invoice is not None:
                again = reverse("invoices:invoice_compose", args=[invoice.pk])
            elif own and message.related_id:
                again = (
                    reverse("invoices:customer_write", args=[message.related_id])
                    + f"?again={message.pk}"
                )
        rows.append(
            {
                "message": message,
                "own": own,
                "failure": _message_failure(message) if own else None,
                "invoice": invoice,
                "again": again,
            }
        )
    return rows


@require_GET
@login_required
def invoice_pdf_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """The invoice's PDF, shown in the browser: the kept file a message attaches, or, before
    any message, the same rendering made for this view (a GET writes nothing). One page, a few
    kilobytes: read whole."""
    invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=pk)
    content = None
    if invoice.pdf:
        # Kept where this storage cannot read it: rendered again below.
        with contextlib.suppress(FileNotFoundError), invoice.pdf.open("rb") as pdf:
            content = pdf.read()
    if content is None:
        company = company_get()
        content = render_invoice_pdf(invoice, seller=company.name if company else "")
    response = HttpResponse(content, content_type="application/pdf")
    filename = f"{invoice.number.replace('/', '-')}.pdf"
    response["Content-Disposition"] = content_disposition_header(False, filename)
    return response


@require_http_methods(["GET", "POST"])
@login_required
def invoice_compose(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Send by e-mail": the composer, prefilled; "Send" queues it through the user's sender
    in any mode and shows the invoice with its history."""
    invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=pk)
    sender, sender_error = composer_sender(user=request.user)
    form = InvoiceComposeForm(
        request.POST or None,
        request.FILES or None,
        initial=invoice_compose_defaults(invoice=invoice, user=request.user),
    )
    if request.method == "POST" and form.is_valid() and sender is not None:
        message, sender_error = composer_send(
            form, lambda **mail: invoice_send_one(user=request.user, invoice=invoice, **mail)
        )
        if message:
            if message.send_after:
                text = _(
                    "Invoice %(number)s will be sent at %(when)s; until then you can cancel it "
                    "on its message's page."
                ) % {"number": invoice.number, "when": _when(message.send_after)}
            else:
                text = _("Invoice %(number)s is queued for sending; its state is below.") % {
                    "number": invoice.number
                }
            messages.success(request, text)
            return redirect("invoices:invoice", pk=invoice.pk)
    return render(
        request,
        "invoices/compose.html",
        composer_context(
            form=form, sender=sender, sender_error=sender_error, customer=invoice.customer
        )
        | {"invoice": invoice},
    )


# The composer's fields a sending service takes as they are (invoice_send_one, customer_send_one).
COMPOSER_MAIL_FIELDS = ("to", "cc", "bcc", "subject", "body", "attachments")


def composer_sender(*, user) -> tuple[SenderConfig | None, str | None]:
    """The user's effective sender for the composer, or None and why it cannot send."""
    try:
        return sender_config_for(user=user), None
    except SenderConfigError as error:
        return None, str(error.message)


def composer_send(form, send: Callable[..., object]) -> tuple[object | None, str | None]:
    """Call `send` (a service queueing one mail) with a valid composer form's mail fields and
    its "send at": (the message, None) once queued, else None with the refusal on the form's
    field (or above it) or, when the user's sender cannot send, its explanation."""
    try:
        message = send(
            **{name: form.cleaned_data[name] for name in COMPOSER_MAIL_FIELDS},
            send_after=form.cleaned_data["send_at"],
        )
    except SenderConfigError as error:
        return False, str(error.message)
    except TooManyRecipients as error:
        form.add_error("to", error.messages[0])
    except (InvoiceBusy, LimitReached) as error:
        form.add_error(None, error.messages[0])
    except ValidationError as error:
        if hasattr(error, "error_dict"):
            for field, errors in error.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            form.add_error(None, error.messages)
    else:
        return message, None
    return None, None


def composer_context(*, form, sender, sender_error, customer: Customer) -> dict:
    """What the composer template shows besides the form: the sender, the customer's bounced
    addresses (left out of To) and how large a message the sender's server takes."""
    limit = size_limit(sender) if sender is not None else None
    return {
        "form": form,
        "sender": sender,
        "sender_error": sender_error,
        "bounced": [a for a in customer.emails if a.lower() in customer.bounced_emails],
        "size_limit": {"mb": limit[0] // MB, "server": limit[1]} if limit else None,
        "max_files": settings.ATTACHMENTS_MAX_FILES,
    }


@require_GET
@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(jobs_visible_to(user=request.user), 50).get_page(request.GET.get("page"))
    # Progress also marks a job finished once nothing is left, even if nobody watched it.
    rows = [(job, bulk_job_progress(job=job)) for job in page]
    return render(request, "invoices/jobs.html", {"page": page, "rows": rows})


@require_GET
@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = job_visible_to(user=request.user, pk=pk)
    progress = bulk_job_progress(job=job)
    page = Paginator(job.messages.order_by("pk"), ROWS_PER_PAGE).get_page(request.GET.get("page"))
    rows = [
        {
            "row": row,
            "explanation": explain(row.message.explanation, row.message.explanation_params)
            if row.message.explanation
            else None,
        }
        for row in job_rows(messages=page)
    ]
    return render(
        request,
        "invoices/job.html",
        {
            "job": job,
            "progress": progress,
            "time_left": duration(progress["seconds_left"]),
            "page": page,
            "rows": rows,
            "built": page.paginator.count,
            "states": JobState,
            "skipped": letters_skipped_lines(job.options.get("skipped") or {})
            if job.kind == "letters"
            else [],
        },
    )


@require_GET
@transaction.non_atomic_requests  # polled every second: no write lock held for a read
@login_required
def job_progress(request: HttpRequest, pk: int) -> JsonResponse:
    job = job_visible_to(user=request.user, pk=pk)
    return JsonResponse(bulk_job_progress(job=job))


@require_POST
@login_required
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = job_visible_to(user=request.user, pk=pk)
    if job.state != JobState.RUNNING:
        messages.info(request, _("The job is no longer running."))
    else:
        cancel = bulk_job_cancel if job.kind == "letters" else invoices_job_cancel
        count = cancel(job=job)
        if job.kind == "letters":
            text = ngettext(
                "Cancelled: %(count)s letter will not be sent. A message already handed to "
                "the server is not called back.",
                "Cancelled: %(count)s letters will not be sent. A message already handed to "
                "the server is not called back.",
                count,
            )
        else:
            text = ngettext(
                "Cancelled: %(count)s invoice will not be sent. A message already handed to "
                "the server is not called back.",
                "Cancelled: %(count)s invoices will not be sent. A message already handed to "
                "the server is not called back.",
                count,
            )
        messages.success(request, text % {"count": count})
    return redirect("invoices:job", pk=job.pk)


@require_POST
@login_required
def job_resume(request: HttpRequest, pk: int) -> HttpResponse:
    job = job_visible_to(user=request.user, pk=pk)
    if job.state != JobState.CANCELLED:
        messages.info(request, _("Only a cancelled job can be resumed."))
        return redirect("invoices:job", pk=job.pk)
    resume = letters_job_resume if job.kind == "letters" else invoices_job_resume
    try:
        count = resume(job=job)
    except MassMailingLocked as error:  # S1.2 for the job's owner: the sender may have changed
        messages.error(request, error.message)
        return redirect("invoices:job", pk=job.pk)
    if job.kind == "letters":
        text = ngettext(
            "Resumed: %(count)s letter queued again.",
            "Resumed: %(count)s letters queued again.",
            count,
        )
    else:
        text = ngettext(
            "Resumed: %(count)s invoice queued again.",
            "Resumed: %(count)s invoices queued again.",
            count,
        )
    messages.success(request, text % {"count": count})
    return redirect("invoices:job", pk=job.pk)


def letters_skipped_lines(skipped: dict) -> list[str]:
    """Why customers were left out of a letter job, one translated line per reason."""
    texts = {
        "opted_out": lambda n: ngettext(
            "%(count)s customer opted out of letters.",
            "%(count)s customers opted out of letters.",
            n,
        ),
        "no_address": lambda n: ngettext(
            "%(count)s customer has no e-mail address.",
            "%(count)s customers have no e-mail address.",
            n,
        ),
        "bounced": lambda n: ngettext(
            "%(count)s customer: every address bounced before.",
            "%(count)s customers: every address bounced before.",
            n,
        ),
        "taken": lambda n: ngettext(
            "%(count)s customer already has this letter (or it is being sent).",
            "%(count)s customers already have this letter (or it is being sent).",
            n,
        ),
    }
    return [
        texts[why](skipped[why]) % {"count": skipped[why]}
        for why in LETTER_SKIPS
        if skipped.get(why)
    ]


# -- letters to customers ----------------------------------------------------------------------
@require_GET
@login_required
def letter_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(letters_all(), 50).get_page(request.GET.get("page"))
    return render(request, "invoices/letters.html", {"page": page})


def _letter_forbidden(request: HttpRequest, letter: Letter) -> HttpResponse:
    """403 with the reason: the letter is the company's to read, its author's to change."""
    return render(request, "invoices/letters_forbidden.html", {"letter": letter}, status=403)


@require_http_methods(["GET", "POST"])
@login_required
def letter_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """A new letter (/letters/new/) or an existing one's subject and body (its author and staff
    only); the templates are tried on a sample customer before saving, so an error shows here."""
    letter = get_object_or_404(letters_all(), pk=pk) if pk is not None else None
    if letter is not None and not letter_editable_by(letter=letter, user=request.user):
        return _letter_forbidden(request, letter)
    data = request.POST or None
    if data is None and letter is not None and letter_render_error(letter):
        # A letter stored before the placeholder language (or by the admin) that no longer
        # renders: show its errors on the fields right away, not only after "Save".
        data = {"subject": letter.subject, "body": letter.body}
    form = LetterForm(data, instance=letter)
    if request.method == "POST" and form.is_valid():
        saved = form.save(commit=False)
        if letter is None:
            saved.created_by = request.user
        saved.save()
        messages.success(request, _("The letter is saved."))
        return redirect("invoices:letter", pk=saved.pk)
    return render(request, "invoices/letters_form.html", {"form": form, "letter": letter})


@require_GET
@login_required
def letter_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The letter, its preview for a chosen customer (?customer=<pk>) and the customers to
    send it to."""
    letter = get_object_or_404(letters_all(), pk=pk)
    customers = Customer.objects.order_by("name", "pk")
    choice = LetterPreviewForm(request.GET)
    chosen = choice.cleaned_data["customer"] if choice.is_valid() else None
    preview_customer = customers.filter(pk=chosen).first() if chosen else None
    if preview_customer is None:  # none chosen, or not a customer: the first one
        preview_customer = customers.first()
    preview = preview_error = None
    if preview_customer is not None:
        try:
            subject, body = render_letter(letter, preview_customer)
            preview = {"subject": subject, "body": body}
        except ValidationError as error:
            preview_error = letter_errors(error)
    page = Paginator(customers, CUSTOMERS_PER_PAGE).get_page(request.GET.get("page"))
    delivered = letter_delivered_customer_ids(letter=letter)
    failed = letter_failed_customer_ids(letter=letter)
    rows = [
        {
            "customer": c,
            "delivered": c.pk in delivered,
            "failed": c.pk in failed,
            "bounced": bool(c.emails) and all(a.lower() in c.bounced_emails for a in c.emails),
        }
        for c in page
    ]
    return render(
        request,
        "invoices/letters_detail.html",
        {
            "letter": letter,
            "customers": customers,
            "preview_customer": preview_customer,
            "preview": preview,
            "preview_error": preview_error,
            "page": page,
            "rows": rows,
            "locked": _locked_reason(request),
            "editable": letter_editable_by(letter=letter, user=request.user),
            "failed_count": len(failed),
        },
    )


@require_POST
@login_required
def letter_send(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Send to selected" (customer=<pk>…): a job like the invoices', then its page."""
    letter = get_object_or_404(letters_all(), pk=pk)
    if not letter_editable_by(letter=letter, user=request.user):
        return _letter_forbidden(request, letter)
    back = reverse("invoices:letter", args=[letter.pk])
    if request.POST.get("action") == "failed":  # "Send again to the customers whose … failed"
        customer_ids = sorted(letter_failed_customer_ids(letter=letter))
    else:
        selection = CustomerSelectionForm(request.POST)
        if not selection.is_valid():
            messages.error(
                request, _("Nothing was sent: the selection is not a list of customers.")
            )
            return redirect(back)
        customer_ids = selection.cleaned_data["customer"]
    if not customer_ids:
        messages.error(request, _("Select the customers to send the letter to first."))
        return redirect(back)
    send_after, refused = _send_at(request, back)
    if refused:
        return refused
    try:
        job = letters_send(
            user=request.user,
            letter=letter,
            customer_ids=customer_ids,
            include_bounced=request.POST.get("include_bounced") == "on",
            send_after=send_after,
        )
    except MassMailingLocked as locked:
        messages.error(request, locked.message)
        return redirect(back)
    except ValidationError as error:  # a stored letter the language refuses: nothing is queued
        messages.error(
            request,
            _("The letter was not sent: %(errors)s") % {"errors": " ".join(letter_errors(error))},
        )
        return redirect(back)
    if not job.total:
        messages.info(
            request,
            " ".join(
                [
                    _("Nothing to send:"),
                    *letters_skipped_lines(job.options.get("skipped") or {}),
                ]
            ),
        )
        return redirect(back)
    return redirect("invoices:job", pk=job.pk)


# -- a letter's unsubscribe link (RFC 8058), public -------------------------------------------
@csrf_exempt  # the mailbox provider's one-click POST has no cookie and no token (RFC 8058 §3.2)
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """A letter's unsubscribe link; no login (the signed token is the proof).

    GET shows the company and a button: link scanners follow GETs, so a GET changes nothing.
    POST (the button, or the provider's `List-Unsubscribe=One-Click`) opts out the one customer
    the token names, idempotently, and sends no mail. Without CSRF protection, what a forged
    cross-site POST can do is exactly this, for a customer whose link the attacker holds: no
    more than that link's recipient could do. A forged or altered token is a 404 page.
    """
    named = unsubscribe_token_read(token)
    customer = None
    if named is not None:
        customer_id, letter_id = named
        if request.method == "POST":
            customer = customer_letters_opt_out(customer_id=customer_id, letter_id=letter_id)
        else:
            customer = Customer.objects.filter(pk=customer_id).first()
    company = company_get()
    context = {
        "company": company.name if company else "",
        "valid": customer is not None,
        "done": customer is not None and customer.letters_opted_out_at is not None,
    }
    response = render(
        request, "invoices/unsubscribe.html", context, status=200 if customer else 404
    )
    response["Referrer-Policy"] = "no-referrer"  # the token must not leak to another site
    return response
