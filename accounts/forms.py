"""The user card form (S2.2); the mail sender part is smtp_settings.forms.SenderProfileForm."""

from django import forms

from .models import User


class CardForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["name", "office_phone", "phone", "email", "bcc", "reply_to", "signature"]
        widgets = {"signature": forms.Textarea(attrs={"rows": 4})}

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip()
