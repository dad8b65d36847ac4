"""Writes: staff save a company's template of a kind and language, or reset it to the default."""

from __future__ import annotations

from django.db import transaction

from accounts.models import Company, User

from .models import MailTemplate
from .selectors import mail_template_check, mail_template_language


@transaction.atomic
def mail_template_save(
    *, company: Company, kind: str, language: str, subject: str, body: str, user: User
) -> MailTemplate:
    """Store the company's template; one that does not render for the kind's sample record is
    refused (TemplateError keyed by field), so a broken template never reaches a customer's
    mail from here."""
    language = mail_template_language(language)
    mail_template_check(kind=kind, language=language, subject=subject, body=body)
    template, _created = MailTemplate.objects.update_or_create(
        company=company,
        kind=kind,
        language=language,
        defaults={"subject": subject, "body": body, "updated_by": user},
    )
    return template


def mail_template_reset(*, company: Company, kind: str, language: str) -> bool:
    """Back to the shipped default: the company's row goes. True if there was one."""
    deleted, _by_model = MailTemplate.objects.filter(
        company=company, kind=kind, language=mail_template_language(language)
    ).delete()
    return bool(deleted)
