"""Reads: a company's template of a kind and language (or the shipped default), rendered.

`mail_template_render` is what every mail built from a template calls: the invoice mail
(composer and bulk jobs), the test e-mail. Values are plain strings named by the kind's
placeholders (directo_mail.placeholders: no object, no tag, bounded output); the result is
plain text, never escaped, so anything showing it as HTML escapes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import translation
from django.utils.translation import gettext

from accounts.models import Company
from directo_mail.placeholders import TemplateError, template_render
from smtp_settings.selectors import company_get

from .kinds import KINDS
from .models import MailTemplate, MailTemplateKind

_UNSET: Any = object()


@dataclass(frozen=True)
class MailTemplateSource:
    """The subject and body staff edit: the company's own, or the shipped default."""

    kind: str
    language: str
    subject: str
    body: str
    customised: bool
    updated_by: str = ""
    updated_at: datetime | None = None


def mail_template_language(language: str | None) -> str:
    """`language` when it is one of settings.LANGUAGES, else the site's default language."""
    return language if language in dict(settings.LANGUAGES) else settings.LANGUAGE_CODE


def mail_template_default(*, kind: str, language: str) -> tuple[str, str]:
    """The shipped (subject, body) of `kind`, translated into `language`."""
    with translation.override(mail_template_language(language)):
        return KINDS[kind].default()


def mail_template_source(
    *, kind: str, language: str, company: Company | None = _UNSET
) -> MailTemplateSource:
    """The template of `kind` in `language`: the company's row, or the shipped default."""
    language = mail_template_language(language)
    if company is _UNSET:
        company = company_get()
    row = None
    if company is not None:
        row = (
            MailTemplate.objects.select_related("updated_by")
            .filter(company=company, kind=kind, language=language)
            .first()
        )
    if row is not None:
        return MailTemplateSource(
            kind,
            language,
            row.subject,
            row.body,
            customised=True,
            updated_by=row.updated_by.code if row.updated_by else "",
            updated_at=row.updated_at,
        )
    subject, body = mail_template_default(kind=kind, language=language)
    return MailTemplateSource(kind, language, subject, body, customised=False)


def mail_template_render_text(
    *, subject: str, body: str, context: dict[str, str]
) -> tuple[str, str]:
    """(subject, body) rendered with `context`; a TemplateError names the field ("subject" or
    "body") and the problem, in the active language. A subject that would hold a line break
    (a multi-line value) is refused: the mail could not be built with it."""
    try:
        rendered_subject = template_render(subject, context).strip()
    except TemplateError as error:
        raise TemplateError({"subject": error}) from None
    try:
        rendered_body = template_render(body, context)
    except TemplateError as error:
        raise TemplateError({"body": error}) from None
    # Every line break of str.splitlines(): the email package refuses each one in a header.
    if len(rendered_subject.splitlines()) > 1:
        raise TemplateError(
            {
                "subject": TemplateError(
                    gettext(
                        "The subject may not contain line breaks (a placeholder's value has "
                        "several lines: use it in the body)."
                    ),
                    code="line_break",
                )
            }
        )
    return rendered_subject, rendered_body


def mail_template_render(
    *,
    kind: str,
    language: str,
    context: dict[str, str],
    company: Company | None = _UNSET,
    sources: dict | None = None,
) -> tuple[str, str]:
    """(subject, body) of the company's `kind` template in `language` for `context`.

    `sources` is a dict the caller keeps while it renders many mails (a chunk of a job): each
    template is then read once for them all, not once a mail.

    Raises TemplateError (a ValidationError keyed by "subject" / "body") when the template does
    not render for these values: an unknown placeholder, a text past the output bound.
    """
    if sources is None:
        source = mail_template_source(kind=kind, language=language, company=company)
    else:
        key = (kind, language, getattr(company, "pk", company))
        if key not in sources:
            sources[key] = mail_template_source(kind=kind, language=language, company=company)
        source = sources[key]
    return mail_template_render_text(subject=source.subject, body=source.body, context=context)


def mail_template_sample(*, kind: str, language: str) -> dict[str, str]:
    """The made-up record `kind` is tried on before a template is saved."""
    with translation.override(mail_template_language(language)):
        return KINDS[kind].sample()


def mail_template_check(*, kind: str, language: str, subject: str, body: str) -> None:
    """Raise TemplateError unless the template renders for the kind's sample record."""
    mail_template_render_text(
        subject=subject, body=body, context=mail_template_sample(kind=kind, language=language)
    )


def mail_template_error_text(error: ValidationError) -> str:
    """A render error on one line ("Subject: …; Body: …"), for a failed message's reason."""
    labels = {"subject": gettext("Subject"), "body": gettext("Body")}
    if not hasattr(error, "error_dict"):
        return " ".join(error.messages)
    return "; ".join(
        f"{labels.get(field, field)}: {' '.join(messages)}"
        for field, messages in error.message_dict.items()
    )


def mail_templates_overview(*, company: Company | None) -> list[MailTemplateSource]:
    """Every kind × language, the company's own where it has one (the staff list)."""
    rows = {}
    if company is not None:
        rows = {
            (row.kind, row.language): row
            for row in MailTemplate.objects.filter(company=company).select_related("updated_by")
        }
    overview = []
    for kind in MailTemplateKind.values:
        for language, _name in settings.LANGUAGES:
            row = rows.get((kind, language))
            overview.append(
                MailTemplateSource(
                    kind,
                    language,
                    row.subject if row else "",
                    "",
                    customised=row is not None,
                    updated_by=row.updated_by.code if row and row.updated_by else "",
                    updated_at=row.updated_at if row else None,
                )
            )
    return overview
