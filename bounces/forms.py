"""The staff inbound-mail list's filter form."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import IntakeState


class InboundFilterForm(forms.Form):
    state = forms.ChoiceField(
        label=_("State"), required=False, choices=[("", _("any")), *IntakeState.choices]
    )
    matched = forms.ChoiceField(
        label=_("Matched"),
        required=False,
        choices=[("", _("any")), ("yes", _("matched to a message")), ("no", _("not matched"))],
    )
    text = forms.CharField(
        label=_("Subject, sender or reason"), required=False, max_length=200, strip=True
    )
