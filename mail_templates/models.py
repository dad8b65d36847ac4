"""A company's own subject and body for one kind of mail in one language (issue 12, item 2).

A row exists only where staff changed the shipped default (mail_templates.kinds): "reset to
default" deletes it, so a corrected default reaches every company that kept it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from accounts.models import Company, no_control_chars


class MailTemplateKind(models.TextChoices):
    INVOICE = "invoice", _("Invoice mail")
    LETTER = "letter", _("New letter")
    TEST_EMAIL = "test_email", _("Test e-mail")


class MailTemplate(models.Model):
    company = models.ForeignKey(
        Company,
        on_delete=models.CASCADE,
        related_name="mail_templates",
        verbose_name=_("company"),
    )
    kind = models.CharField(_("kind"), max_length=20, choices=MailTemplateKind.choices)
    language = models.CharField(_("language"), max_length=10, choices=settings.LANGUAGES)
    subject = models.CharField(_("subject"), max_length=200, validators=[no_control_chars])
    body = models.TextField(_("body"))
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("changed by"),
    )
    updated_at = models.DateTimeField(_("changed"), auto_now=True)

    class Meta:
        verbose_name = _("mail template")
        verbose_name_plural = _("mail templates")
        ordering = ["kind", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "kind", "language"],
                name="mail_template_once_per_company_kind_language",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.language})"
