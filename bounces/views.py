"""Staff pages of the inbound mail (issue 12, item 5): every mail the intake kept, matched or
not, with why, and the raw mail shown as escaped text or downloaded as an attachment."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from accounts.decorators import staff_required
from directo_mail.paging import filter_query

from .forms import InboundFilterForm
from .models import InboundMail
from .selectors import inbound_mail_filtered, inbound_mail_raw_text


@require_GET
@staff_required
def inbound_list(request: HttpRequest) -> HttpResponse:
    form = InboundFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    mails = inbound_mail_filtered(
        state=filters.get("state", ""),
        matched=filters.get("matched", ""),
        text=filters.get("text", ""),
    )
    page = Paginator(mails, 50).get_page(request.GET.get("page"))
    query = filter_query(request, form)
    return render(request, "bounces/list.html", {"form": form, "page": page, "query": query})


@require_GET
@staff_required
def inbound_detail(request: HttpRequest, pk: int) -> HttpResponse:
    mail = get_object_or_404(InboundMail.objects.select_related("message", "message__user"), pk=pk)
    return render(
        request, "bounces/detail.html", {"mail": mail, "raw": inbound_mail_raw_text(mail)}
    )


@require_GET
@staff_required
def inbound_raw(request: HttpRequest, pk: int) -> HttpResponse:
    """The raw bytes as received, as a download: an attachment of type message/rfc822 with
    nosniff, so an HTML bounce is never rendered as a page of this site."""
    mail = get_object_or_404(InboundMail, pk=pk)
    response = HttpResponse(bytes(mail.raw or b""), content_type="message/rfc822")
    response["Content-Disposition"] = f'attachment; filename="inbound-{mail.pk}.eml"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
