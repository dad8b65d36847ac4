"""Staff pages: every kind × language of mail template, and the editor with its preview on a
real record (an invoice, a customer, a user) or on the sample one."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from accounts.decorators import staff_required
from accounts.models import User
from directo_mail.placeholders import TemplateError
from invoices.letters import letter_context
from invoices.mail import invoice_mail_context
from invoices.models import Customer, Invoice
from smtp_settings.selectors import company_get

from .forms import MailTemplateForm
from .kinds import KINDS, mail_test_context
from .models import MailTemplateKind
from .selectors import (
    mail_template_render_text,
    mail_template_sample,
    mail_template_source,
    mail_templates_overview,
)
from .services import mail_template_reset, mail_template_save


@require_GET
@staff_required
def template_list(request: HttpRequest) -> HttpResponse:
    company = company_get()
    labels, languages = dict(MailTemplateKind.choices), dict(settings.LANGUAGES)
    rows = [
        {"template": row, "kind": labels[row.kind], "language": languages[row.language]}
        for row in mail_templates_overview(company=company)
    ]
    return render(request, "mail_templates/list.html", {"rows": rows, "company": company})


def _record_context(
    kind: str, record: str, *, user: User, language: str
) -> tuple[dict[str, str] | None, str]:
    """(the placeholders' values of the real record staff named, its name) or (None, why not).
    Empty: the sample record."""
    record = record.strip()
    if not record:
        return mail_template_sample(kind=kind, language=language), _("a sample record")
    if kind == MailTemplateKind.INVOICE:
        invoice = Invoice.objects.select_related("customer").filter(number=record).first()
        if invoice is None:
            return None, _("There is no invoice with the number “%(record)s”.") % {"record": record}
        return invoice_mail_context(invoice=invoice, user=user, company=company_get()), str(
            invoice.number
        )
    if kind == MailTemplateKind.LETTER:
        customer = Customer.objects.filter(name__iexact=record).order_by("pk").first()
        if customer is None:
            return None, _("There is no customer named “%(record)s”.") % {"record": record}
        return letter_context(customer), customer.name
    chosen = User.objects.filter(code=record).first()
    if chosen is None:
        return None, _("There is no user with the code “%(code)s”.") % {"code": record}
    return mail_test_context(user=chosen, company=company_get()), chosen.code


@require_http_methods(["GET", "POST"])
@staff_required
def template_edit(request: HttpRequest, kind: str, lang: str) -> HttpResponse:
    """GET: the template (the company's or the default) previewed on ?record= or the sample.
    POST action=preview: the text being edited previewed, nothing saved; action=save: saved if
    it renders for the sample record; action=reset: back to the shipped default."""
    if kind not in KINDS or lang not in dict(settings.LANGUAGES):
        raise Http404
    company = company_get()
    source = mail_template_source(kind=kind, language=lang, company=company)
    action = request.POST.get("action", "preview")
    if request.method == "POST" and action == "reset":
        if company is not None and mail_template_reset(company=company, kind=kind, language=lang):
            messages.success(request, _("The template is back to the default."))
        return redirect("mail_templates:edit", kind=kind, lang=lang)
    form = MailTemplateForm(
        request.POST or None,
        kind=kind,
        language=lang,
        initial={
            "subject": source.subject,
            "body": source.body,
            "record": request.GET.get("record", ""),
        },
    )
    if request.method == "POST":
        valid = form.is_valid()
        if valid and action == "save":
            if company is None:
                form.add_error(None, _("Enter the company in the system settings first."))
            else:
                data = form.cleaned_data
                try:
                    mail_template_save(
                        company=company,
                        kind=kind,
                        language=lang,
                        subject=data["subject"],
                        body=data["body"],
                        user=request.user,
                    )
                except TemplateError as error:
                    form.add_error(None, error)
                else:
                    messages.success(request, _("The template is saved."))
                    return redirect("mail_templates:edit", kind=kind, lang=lang)
        subject = form.data.get("subject", "")
        body = form.data.get("body", "").replace("\r\n", "\n")
        record = form.data.get("record", "")
    else:
        subject, body, record = source.subject, source.body, request.GET.get("record", "")
    preview = preview_error = None
    context, record_name = _record_context(kind, record[:200], user=request.user, language=lang)
    if context is None:
        preview_error = [record_name]
    else:
        try:
            rendered_subject, rendered_body = mail_template_render_text(
                subject=subject, body=body, context=context
            )
            preview = {"subject": rendered_subject, "body": rendered_body, "record": record_name}
        except TemplateError as error:
            preview_error = [
                f"{form.fields[field].label}: {message}" if field in form.fields else message
                for field, messages_ in error.message_dict.items()
                for message in messages_
            ]
    return render(
        request,
        "mail_templates/edit.html",
        {
            "form": form,
            "kind": kind,
            "kind_label": MailTemplateKind(kind).label,
            "purpose": KINDS[kind].purpose,
            "language": lang,
            "language_label": dict(settings.LANGUAGES)[lang],
            "source": source,
            "preview": preview,
            "preview_error": preview_error,
        },
    )
