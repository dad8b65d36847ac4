"""Numbers a request names (ticked invoices and customers, the previewed customer) read through
form fields: a value that is not a whole number of the ids' range (`²`, `Ⅻ`, `1e3`, 30 digits)
is a validation error, never a ValueError or a database overflow (issue 11, item 12)."""

from __future__ import annotations

from django import forms

# Primary keys are BigAutoField: positive and within a signed 64-bit integer.
MAX_ID = 2**63 - 1


def _id_field(*, required: bool = True) -> forms.IntegerField:
    return forms.IntegerField(required=required, min_value=1, max_value=MAX_ID)


class IdListField(forms.Field):
    """Every value of a repeated parameter (`invoice=1&invoice=7`) as an id."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[int]:
        return [_id_field().clean(item) for item in value or []]


class InvoiceSelectionForm(forms.Form):
    invoice = IdListField(required=False)


class CustomerSelectionForm(forms.Form):
    customer = IdListField(required=False)


class LetterPreviewForm(forms.Form):
    customer = _id_field(required=False)
