"""The staff editor's form: a template's subject and body, and the record to preview it on."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from directo_mail.placeholders import FILTERS, TemplateError, placeholders_list

from .kinds import KINDS
from .models import MailTemplate
from .selectors import mail_template_check


class MailTemplateForm(forms.Form):
    subject = forms.CharField(label=_("Subject"), max_length=200)
    body = forms.CharField(
        label=_("Body"),
        strip=False,  # plain text: its leading and trailing lines count
        max_length=settings.TEMPLATE_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 14}),
    )
    record = forms.CharField(label=_("Preview on"), required=False, max_length=200)

    def __init__(self, *args, kind: str, language: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kind, self.language = kind, language
        self.fields["subject"].validators += MailTemplate._meta.get_field("subject").validators
        self.fields["body"].help_text = gettext(
            "Plain text. Placeholders: %(placeholders)s. Filters: %(filters)s."
        ) % {
            "placeholders": placeholders_list(KINDS[kind].placeholders),
            "filters": ", ".join(f"|{name}" for name in FILTERS),
        }
        self.fields["record"].label = KINDS[kind].record_label
        self.fields["record"].help_text = gettext("Leave empty to preview on a sample record.")

    def clean_body(self) -> str:
        return self.cleaned_data["body"].replace("\r\n", "\n")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:  # tried on the sample record: a template that cannot render is never saved
            mail_template_check(
                kind=self.kind,
                language=self.language,
                subject=cleaned["subject"],
                body=cleaned["body"],
            )
        except TemplateError as error:
            raise forms.ValidationError(error.error_dict) from None
        return cleaned
