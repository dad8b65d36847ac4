"""The invoice mail's subject and body: the company's "invoice" mail template (mail_templates)
in the customer's language, filled with the invoice's values as plain strings.

Used by the composer's prefill and by bulk invoice jobs, so both send the same words. The
values are strings only (never an Invoice), so no placeholder can walk to other data.
"""

from __future__ import annotations

from django.utils import formats, translation
from django.utils.html import linebreaks

from accounts.models import Company, User
from mail_templates.models import MailTemplateKind
from mail_templates.selectors import mail_template_render
from smtp_settings.selectors import company_get

from .models import Invoice


def invoice_mail_context(
    *, invoice: Invoice, user: User | None, company: Company | None
) -> dict[str, str]:
    """What the invoice mail's placeholders may use; amounts formatted in the customer's
    language, dates as YYYY-MM-DD (as the invoice mail always had them)."""
    with translation.override(invoice.customer.language):
        total = formats.localize(invoice.total_gross)
    return {
        "invoice.number": str(invoice.number),
        "invoice.total": str(total),
        "invoice.currency": str(invoice.currency),
        "invoice.issue_date": invoice.issue_date.isoformat(),
        "invoice.due_date": invoice.due_date.isoformat(),
        "customer.name": str(invoice.customer.name),
        "company.name": str(company.name) if company is not None else "",
        "user.name": str(user.name or "") if user is not None else "",
    }


_UNSET = object()


def invoice_mail_render(
    *,
    invoice: Invoice,
    user: User | None,
    shipped: bool = False,
    company: Company | None = _UNSET,
    sources: dict | None = None,
) -> tuple[str, str]:
    """(subject, plain-text body) of `invoice`'s mail sent by `user`: the company's template,
    or with `shipped` the shipped default. Raises TemplateError (keyed by "subject" / "body")
    when the template does not render for this invoice. A job's chunk passes the `company` it
    read and a `sources` dict (mail_template_render), so neither is read again a mail."""
    if company is _UNSET:
        company = company_get()
    return mail_template_render(
        sources=sources,
        kind=MailTemplateKind.INVOICE,
        language=invoice.customer.language,
        context=invoice_mail_context(invoice=invoice, user=user, company=company),
        company=None if shipped else company,  # no company: no row, the default
    )


def mail_html(text: str) -> str:
    """The HTML part of a plain-text mail: the same text escaped, paragraphs and line breaks
    kept; nothing a template writes can become markup."""
    return f"<html><body>\n{linebreaks(text, autoescape=True)}\n</body></html>\n"
