"""Django admin for mail templates: the same check as the staff editor before saving."""

from django import forms
from django.contrib import admin

from directo_mail.placeholders import TemplateError

from .models import MailTemplate
from .selectors import mail_template_check


class MailTemplateAdminForm(forms.ModelForm):
    class Meta:
        model = MailTemplate
        fields = ["company", "kind", "language", "subject", "body"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            mail_template_check(
                kind=cleaned["kind"],
                language=cleaned["language"],
                subject=cleaned["subject"],
                body=cleaned["body"].replace("\r\n", "\n"),
            )
        except TemplateError as error:
            raise forms.ValidationError(error.error_dict) from None
        return cleaned


@admin.register(MailTemplate)
class MailTemplateAdmin(admin.ModelAdmin):
    form = MailTemplateAdminForm
    list_display = ["kind", "language", "company", "updated_by", "updated_at"]
    list_filter = ["kind", "language"]
    readonly_fields = ["updated_by", "updated_at"]

    def save_model(self, request, obj, form, change) -> None:
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
