"""The user card form (S2.2); the mail sender part is smtp_settings.forms.SenderProfileForm."""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from .models import User, header_text, no_control_chars


def no_control_chars_decoded(value: str) -> None:
    """`no_control_chars` on the text a header shows: the email package decodes RFC 2047
    encoded words when a header is set, so "=?utf-8?q?Anna=0D=0ABcc=3A_x?=" is a line break
    (and an injected Bcc) once it is in From."""
    try:
        decoded = header_text(value)
    except ValueError:  # whatever the email package cannot read is not sent either
        raise ValidationError(no_control_chars.message, code="invalid") from None
    no_control_chars(decoded)


class CardForm(forms.ModelForm):
    class Meta:
        model = User
        fields = [
            "name",
            "office_phone",
            "phone",
            "email",
            "bcc",
            "reply_to",
            "signature",
            "time_zone",
        ]
        widgets = {"signature": forms.Textarea(attrs={"rows": 4})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ["name", "email", "bcc", "reply_to"]:  # the fields that reach headers
            self.fields[name].validators.append(no_control_chars_decoded)
        self.fields["time_zone"].required = False

    def clean_time_zone(self) -> str:
        """Not sent (an older form, a script): the card keeps its time zone."""
        return self.cleaned_data["time_zone"] or self.instance.time_zone or settings.TIME_ZONE

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip()
