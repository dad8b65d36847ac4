"""The staff outbox's filter form: what staff may narrow the list by, checked like any input."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import MessageState


class OutboxFilterForm(forms.Form):
    state = forms.ChoiceField(
        label=_("State"), required=False, choices=[("", _("any")), *MessageState.choices]
    )
    user = forms.CharField(label=_("User"), required=False, max_length=150)
    job = forms.IntegerField(label=_("Job"), required=False, min_value=1)
    since = forms.DateField(
        label=_("From date"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        label=_("To date"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    text = forms.CharField(
        label=_("Subject or recipient"), required=False, max_length=200, strip=True
    )
