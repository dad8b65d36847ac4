"""Pages: the Events module ("Zdarzenia"), a message's delivery status, the test e-mail."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.decorators import staff_required
from smtp_settings.explain import explain
from smtp_settings.resolve import SenderConfigError

from .catcher import caught_messages
from .selectors import events_visible_to, message_visible_to
from .services import outbox_enqueue


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


@login_required
def message_status(request: HttpRequest, pk: int) -> HttpResponse:
    message = message_visible_to(user=request.user, pk=pk)
    explanation = explain(message.explanation, message.explanation_params)
    return render(
        request,
        "outbox/message.html",
        {"message": message, "explanation": explanation if message.explanation else None},
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
        return redirect("accounts:card")
    try:
        message = outbox_enqueue(
            user=user,
            to=[user.email],
            subject=_("Test e-mail: your mail sender works"),
            body_text=_("This is a test e-mail. If you can read it, your mail sender works.\n"),
            purpose="test_email",
        )
    except (SenderConfigError, ValidationError) as error:
        messages.error(request, getattr(error, "message", None) or "; ".join(error.messages))
        return redirect("accounts:card")
    return redirect("outbox:message", pk=message.pk)


@staff_required
def mail_catcher(request: HttpRequest) -> HttpResponse:
    """What the local mail catcher received (development only): see a mail arrive. Staff only:
    it shows everyone's mail (issue 11, item 8)."""
    if not settings.DEBUG:
        raise Http404
    return render(request, "outbox/catcher.html", {"caught": caught_messages(limit=100)})
