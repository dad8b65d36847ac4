"""Pages of one customer: the list with search, the customer with its history (every message
about it and its invoices), and the composer for a letter to it (issue 12, items 1 and 3).

Customers and invoices are the company's: every logged-in user sees them (README "Mass
mailing"). A message in the history shows to everyone when it was made, by whom and its state;
its recipients, subject, reply and explanation are its sender's and staff's, as on the
invoice page (outbox.selectors.message_visible_to)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from directo_mail.paging import filter_query
from outbox.selectors import message_visible_to

from .forms import CustomerComposeForm, CustomerComposePrefillForm, CustomerSearchForm
from .letters import letter_errors, render_letter
from .models import Customer
from .selectors import (
    customer_history,
    customer_history_invoices,
    customers_filtered,
    letters_all,
)
from .services import customer_send_one
from .views import composer_context, composer_send, composer_sender, history_rows

CUSTOMERS_PER_PAGE = 50
HISTORY_PER_PAGE = 50


@require_GET
@login_required
def customer_list(request: HttpRequest) -> HttpResponse:
    form = CustomerSearchForm(request.GET)
    text = form.cleaned_data["q"].strip() if form.is_valid() else ""
    page = Paginator(customers_filtered(text=text), CUSTOMERS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "invoices/customers.html",
        {"form": form, "page": page, "query": filter_query(request, form)},
    )


@require_GET
@login_required
def customer_detail(request: HttpRequest, pk: int) -> HttpResponse:
    customer = get_object_or_404(Customer, pk=pk)
    page = Paginator(customer_history(customer=customer), HISTORY_PER_PAGE).get_page(
        request.GET.get("page")
    )
    history = history_rows(request, page, invoices=customer_history_invoices(messages=page))
    return render(
        request,
        "invoices/customer.html",
        {
            "customer": customer,
            "page": page,
            "history": history,
            "invoices": customer.invoices.order_by("-issue_date", "-number")[:20],
        },
    )


def _prefill(request: HttpRequest, customer: Customer) -> tuple[dict, str | None]:
    """The composer's initial fields: the customer's addresses that did not bounce (none when
    the customer opted out of letters); then a stored letter rendered for the customer
    (?letter=), or the message to send again (?again=, only one the user may read, about this
    customer; else 404)."""
    bounced = customer.bounced_emails
    initial = {"to": ", ".join(a for a in customer.emails if a.lower() not in bounced)}
    if customer.letters_opted_out_at:  # left out: the user types an address on purpose
        initial["to"] = ""
    choice = CustomerComposePrefillForm(request.GET)
    if not choice.is_valid():
        return initial, None
    if choice.cleaned_data["again"]:
        message = message_visible_to(user=request.user, pk=choice.cleaned_data["again"])
        if (message.related_type_id, message.related_id) != (
            ContentType.objects.get_for_model(Customer).pk,
            str(customer.pk),
        ):
            raise Http404("not a message about this customer")
        initial.update(
            to=", ".join(message.to),
            cc=", ".join(message.cc),
            bcc=", ".join(message.bcc),
            subject=message.subject,
            body=message.body_text,
        )
    elif choice.cleaned_data["letter"]:
        letter = get_object_or_404(letters_all(), pk=choice.cleaned_data["letter"])
        try:
            subject, body = render_letter(letter, customer)
        except ValidationError as error:
            return initial, " ".join(letter_errors(error))
        initial.update(subject=subject, body=body)
    return initial, None


@require_http_methods(["GET", "POST"])
@login_required
def customer_write(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Write a letter": the invoice's composer without the PDF, sent through the user's own
    effective sender (whoever's letter or message prefilled it) in every mode; one mail, so
    mass mailing's gate (S1.2) does not apply."""
    customer = get_object_or_404(Customer, pk=pk)
    sender, sender_error = composer_sender(user=request.user)
    initial, letter_error = _prefill(request, customer)
    form = CustomerComposeForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid() and sender is not None:
        sent, sender_error = composer_send(
            form, lambda **mail: customer_send_one(user=request.user, customer=customer, **mail)
        )
        if sent:
            messages.success(
                request,
                _("The message to %(customer)s is queued for sending; its state is below.")
                % {"customer": customer.name},
            )
            return redirect("invoices:customer", pk=customer.pk)
    context = composer_context(
        form=form, sender=sender, sender_error=sender_error, customer=customer
    )
    return render(
        request,
        "invoices/customer_write.html",
        context
        | {
            "customer": customer,
            "letters": letters_all()[:200],
            "letter_error": letter_error,
            "chosen_letter": request.GET.get("letter", ""),
        },
    )
