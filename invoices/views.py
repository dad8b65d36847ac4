"""Pages: the invoice list with its two send buttons (S1.2), a bulk job followed live, the jobs."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_POST

from outbox.models import JobState
from outbox.services import bulk_job_progress
from smtp_settings.explain import explain

from .models import SendState
from .selectors import (
    invoice_latest_messages,
    invoices_filtered,
    job_rows,
    job_visible_to,
    jobs_visible_to,
)
from .services import (
    MassMailingLocked,
    invoices_job_cancel,
    invoices_job_resume,
    invoices_send,
    mass_mailing_sender,
)

INVOICES_PER_PAGE = 50
ROWS_PER_PAGE = 100


def duration(seconds: int) -> str:
    """ "1:05:09", "5:09", "0:09": as static/js/progress.js shows the time left."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


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
        invoice_ids = [int(pk) for pk in request.POST.getlist("invoice") if pk.isdigit()]
        if not invoice_ids:
            messages.error(request, _("Select the invoices to send first."))
            return redirect(back)
    try:
        job = invoices_send(user=request.user, invoice_ids=invoice_ids, unsent=unsent)
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
            "states": JobState,
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
        count = invoices_job_cancel(job=job)
        messages.success(
            request,
            ngettext(
                "Cancelled: %(count)s invoice will not be sent. A message already handed to "
                "the server is not called back.",
                "Cancelled: %(count)s invoices will not be sent. A message already handed to "
                "the server is not called back.",
                count,
            )
            % {"count": count},
        )
    return redirect("invoices:job", pk=job.pk)


@require_POST
@login_required
def job_resume(request: HttpRequest, pk: int) -> HttpResponse:
    job = job_visible_to(user=request.user, pk=pk)
    if job.state != JobState.CANCELLED:
        messages.info(request, _("Only a cancelled job can be resumed."))
        return redirect("invoices:job", pk=job.pk)
    locked = _locked_reason(request)
    if locked:  # S1.2 holds for resuming too: the sender may have changed since the start
        messages.error(request, locked)
        return redirect("invoices:job", pk=job.pk)
    count = invoices_job_resume(job=job)
    messages.success(
        request,
        ngettext(
            "Resumed: %(count)s invoice queued again.",
            "Resumed: %(count)s invoices queued again.",
            count,
        )
        % {"count": count},
    )
    return redirect("invoices:job", pk=job.pk)
