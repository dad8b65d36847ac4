"""Numbers a request names (ticked invoices and customers, the previewed customer) read through
form fields: a value that is not a whole number of the ids' range (`²`, `Ⅻ`, `1e3`, 30 digits)
is a validation error, never a ValueError or a database overflow (issue 11, item 12)."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from outbox.attachments import attachment_filename
from outbox.services import send_after_clean

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


class AddressListField(forms.CharField):
    """Addresses separated by commas, semicolons or line breaks, each checked (a CR or LF inside
    an address is refused: no header injection through the composer)."""

    widget = forms.TextInput

    def to_python(self, value) -> list[str]:
        text = super().to_python(value) or ""
        addresses = [a.strip() for a in re.split(r"[,;\r\n]+", text) if a.strip()]
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(
                    _("“%(address)s” is not a valid e-mail address."),
                    params={"address": address[:100]},
                ) from None
        return addresses


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class AttachmentsField(forms.FileField):
    """Several files from one input: at most ATTACHMENTS_MAX_FILES, none empty. Their names
    and types are made safe where they are stored (outbox.attachments); the size limit depends
    on the sender's server and is checked where the message is queued (outbox_enqueue)."""

    widget = MultipleFileInput

    def clean(self, data, initial=None) -> list:
        files = [f for f in (data if isinstance(data, list | tuple) else [data]) if f]
        if len(files) > settings.ATTACHMENTS_MAX_FILES:
            raise ValidationError(
                _("Attach at most %(count)s files to one message."),
                params={"count": settings.ATTACHMENTS_MAX_FILES},
            )
        for upload in files:
            if not upload.size:
                raise ValidationError(
                    _("“%(name)s” is empty: nothing to attach."),
                    params={"name": attachment_filename(upload.name)},
                )
            super().clean(upload, initial)
        return files


class SendAtField(forms.DateTimeField):
    """An optional "send at" (an HTML datetime-local input), read in the active time zone: the
    user's (accounts.middleware). A local time that does not exist or is ambiguous (a DST
    change) is Django's own form error, never a 500; a time long past or too far ahead is
    refused by send_after_clean. A past minute or less, or empty, gives None: send now."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("label", _("Send at"))
        super().__init__(**kwargs)

    def clean(self, value):
        return send_after_clean(super().clean(value))


def _send_at_help() -> str:
    return _("Leave empty to send now. Your time zone: %(zone)s.") % {
        "zone": timezone.get_current_timezone_name()
    }


class SendAtForm(forms.Form):
    """ "Send at" of a bulk job (the invoice list's and a letter's send buttons)."""

    send_at = SendAtField()


class InvoiceComposeForm(forms.Form):
    """The composer: who gets the invoice, and its subject and body (plain text), and files
    to attach besides the PDF."""

    to = AddressListField(label=_("To"), required=True)
    cc = AddressListField(label=_("Cc"), required=False)
    bcc = AddressListField(label=_("Bcc"), required=False)
    subject = forms.CharField(label=_("Subject"), max_length=900)
    body = forms.CharField(label=_("Message"), widget=forms.Textarea(attrs={"rows": 10}))
    attachments = AttachmentsField(label=_("Attach files"), required=False)
    send_at = SendAtField()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["send_at"].help_text = _send_at_help()

    def clean_subject(self) -> str:
        subject = self.cleaned_data["subject"]
        if any(ch in subject for ch in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
            raise ValidationError(_("The subject may not contain line breaks."))
        return subject


class CustomerComposeForm(InvoiceComposeForm):
    """The same composer for a letter to one customer: no PDF, the same fields and checks."""


class CustomerComposePrefillForm(forms.Form):
    """What prefills the customer composer: a stored letter (?letter=<pk>) rendered for the
    customer, or an earlier message to send again (?again=<pk>)."""

    letter = _id_field(required=False)
    again = _id_field(required=False)


class CustomerSearchForm(forms.Form):
    q = forms.CharField(label=_("Name or e-mail"), required=False, max_length=200)
