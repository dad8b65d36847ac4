"""Pages: the Events module ("Zdarzenia"), a message's delivery status, the test e-mail, and
staff's outbox (every user's messages, their raw form and the retry / send now / cancel actions)."""

from __future__ import annotations

import email
import logging
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from accounts.decorators import staff_required
from directo_mail.paging import filter_query
from mail_templates.kinds import mail_test_context
from mail_templates.models import MailTemplateKind
from mail_templates.selectors import mail_template_render
from smtp_settings.explain import explain
from smtp_settings.resolve import SenderConfigError
from smtp_settings.selectors import company_get

from .catcher import caught_messages, caught_version
from .forms import OutboxFilterForm
from .models import MessageState, OutgoingMessage
from .selectors import events_visible_to, message_visible_to, outbox_messages_filtered
from .services import outbox_enqueue
from .staff import (
    StaffActionRefused,
    outbox_message_cancel,
    outbox_message_eml,
    outbox_message_envelope,
    outbox_message_retry,
    outbox_message_send_now,
)

logger = logging.getLogger(__name__)


@login_required
def events(request: HttpRequest) -> HttpResponse:
    owner = request.GET.get("user", "").strip() if request.user.is_staff else ""
    page = Paginator(events_visible_to(user=request.user, owner_code=owner), 50).get_page(
        request.GET.get("page")
    )
    rows = [(event, explain(event.explanation, event.params)) for event in page]
    query = urlencode({"user": owner}) if owner else ""
    return render(
        request,
        "outbox/events.html",
        {"page": page, "rows": rows, "owner": owner, "query": query},
    )


def _message_version(message: OutgoingMessage) -> str:
    return f"{message.state}:{message.attempts}:{message.updated_at.isoformat()}"


@login_required
def message_status(request: HttpRequest, pk: int) -> HttpResponse:
    message = message_visible_to(user=request.user, pk=pk)
    explanation = explain(message.explanation, message.explanation_params)
    return render(
        request,
        "outbox/message.html",
        {
            "message": message,
            "explanation": explanation if message.explanation else None,
            "version": _message_version(message),
            "can_cancel": message.user_id == request.user.pk
            and message.state == MessageState.QUEUED,
        },
    )


@require_POST
@login_required
def message_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """The sender cancels their own queued message, e.g. one held for later (issue 12, item 6);
    an invoice's message cancelled gives the invoice back. Anyone else's message: 404."""
    message = get_object_or_404(OutgoingMessage, pk=pk, user=request.user)
    try:
        outbox_message_cancel(message=message)
    except StaffActionRefused as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, _("The message was cancelled; it will not be sent."))
    return redirect("outbox:message", pk=pk)


@require_GET
@login_required
def message_status_json(request: HttpRequest, pk: int) -> JsonResponse:
    """What static/js/live.js polls: the page's parts are fetched again when `version` moves."""
    message = message_visible_to(user=request.user, pk=pk)
    return JsonResponse(
        {
            "state": message.state,
            "attempts": message.attempts,
            "final": message.is_final,
            "version": _message_version(message),
        }
    )


@require_POST
@login_required
def test_email(request: HttpRequest) -> HttpResponse:
    """Send a test e-mail to the user's own address through the worker (issue 3, point 5)."""
    user = request.user
    if not user.email:
        messages.error(
            request, _("Enter your e-mail on the card first: the test e-mail is sent there.")
        )
        return redirect("card:card")
    try:
        # The company's "test_email" mail template in the user's language (mail_templates).
        subject, body = mail_template_render(
            kind=MailTemplateKind.TEST_EMAIL,
            language=translation.get_language(),
            context=mail_test_context(user=user, company=company_get()),
        )
        message = outbox_enqueue(
            user=user, to=[user.email], subject=subject, body_text=body, purpose="test_email"
        )
    except (SenderConfigError, ValidationError) as error:
        messages.error(request, getattr(error, "message", None) or "; ".join(error.messages))
        return redirect("card:card")
    return redirect("outbox:message", pk=message.pk)


@staff_required
def mail_catcher(request: HttpRequest) -> HttpResponse:
    """What the local mail catcher received (development only): see a mail arrive. Staff only:
    it shows everyone's mail (issue 11, item 8)."""
    if not settings.DEBUG:
        raise Http404
    return render(
        request,
        "outbox/catcher.html",
        {"caught": caught_messages(limit=100), "version": caught_version()},
    )


@require_GET
@staff_required
def mail_catcher_status(request: HttpRequest) -> JsonResponse:
    """What static/js/live.js polls on the catcher's page (development only, staff only)."""
    if not settings.DEBUG:
        raise Http404
    return JsonResponse({"version": caught_version(), "final": False})


# -- the staff outbox (issue 12, item 5) ------------------------------------------------------
@require_GET
@staff_required
def staff_outbox(request: HttpRequest) -> HttpResponse:
    """Every user's outgoing messages, filtered and paged. Bad filters are explained, not 500."""
    form = OutboxFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    messages_ = outbox_messages_filtered(
        state=filters.get("state", ""),
        user_code=filters.get("user", ""),
        job=filters.get("job"),
        since=filters.get("since"),
        until=filters.get("until"),
        text=filters.get("text", ""),
    )
    page = Paginator(messages_, 50).get_page(request.GET.get("page"))
    query = filter_query(request, form)
    return render(request, "outbox/staff_list.html", {"form": form, "page": page, "query": query})


@require_GET
@staff_required
def staff_message(request: HttpRequest, pk: int) -> HttpResponse:
    message = get_object_or_404(OutgoingMessage.objects.select_related("user", "job"), pk=pk)
    try:
        mail_from, recipients = outbox_message_envelope(message)
        headers = list(email.message_from_bytes(outbox_message_eml(message)).items())
        build_error = ""
    except Exception:  # an attachment file gone, a damaged snapshot: say so, don't 500
        logger.exception("message %s: cannot be rebuilt", pk)
        mail_from, recipients, headers = message.envelope_from, (), []
        build_error = True
    events_ = [(event, explain(event.explanation, event.params)) for event in message.events.all()]
    return render(
        request,
        "outbox/staff_message.html",
        {
            "message": message,
            "explanation": explain(message.explanation, message.explanation_params)
            if message.explanation
            else None,
            "mail_from": mail_from,
            "recipients": recipients,
            "headers": headers,
            "build_error": build_error,
            "events": events_,
            "inbound": message.inbound_mail.all(),
        },
    )


@require_GET
@staff_required
def staff_message_eml(request: HttpRequest, pk: int) -> HttpResponse:
    """The raw message as a download: an attachment of type message/rfc822 (nosniff is on), so
    no browser renders its HTML part as a page of this site."""
    message = get_object_or_404(OutgoingMessage, pk=pk)
    try:
        raw = outbox_message_eml(message)
    except Exception:  # an attachment file gone, a damaged snapshot: explained, not a 500
        logger.exception("message %s: cannot be rebuilt for download", pk)
        messages.error(request, _("The message cannot be rebuilt from what is stored."))
        return redirect("outbox:staff_message", pk=pk)
    response = HttpResponse(raw, content_type="message/rfc822")
    response["Content-Disposition"] = f'attachment; filename="message-{message.pk}.eml"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


_ACTIONS = {
    "retry": (outbox_message_retry, gettext_lazy("The message is queued again.")),
    "send_now": (outbox_message_send_now, gettext_lazy("The message was handed to the worker.")),
    "cancel": (outbox_message_cancel, gettext_lazy("The message was cancelled.")),
}


@require_POST
@staff_required
def staff_message_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    if action not in _ACTIONS:
        raise Http404
    message = get_object_or_404(OutgoingMessage, pk=pk)
    service, done = _ACTIONS[action]
    try:
        service(message=message)
    except StaffActionRefused as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, done)
    return redirect("outbox:staff_message", pk=pk)
