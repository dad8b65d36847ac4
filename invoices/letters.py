"""Letters to customers: rendering a letter's templates in a restricted context, and its form.

The template sees plain strings only — `customer.name`, `customer.address`, `customer.emails`
(joined) — never a model instance, so no placeholder can walk to other data.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError
from django.template import Context, Engine
from django.utils import translation
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .models import Customer, Letter

# A bare engine: the built-in tags and filters, no loaders (an {% include %} finds nothing), no
# installed tag libraries, no autoescape (the letter is plain text).
_ENGINE = Engine(autoescape=False, libraries={}, loaders=[])


def letter_context(customer: Customer) -> dict:
    """What a letter's placeholders may use: plain strings, no ORM object."""
    return {
        "customer": {
            "name": str(customer.name or ""),
            "address": str(customer.address or ""),
            "emails": ", ".join(str(email) for email in (customer.emails or [])),
        }
    }


# {% debug %} would print the server's loaded modules into a customer's letter.
_FORBIDDEN = re.compile(r"{%-?\s*debug\b")


def _render(source: str, context: dict) -> str:
    if _FORBIDDEN.search(source):
        raise ValidationError(
            gettext("The template has an error: %(error)s") % {"error": "{% debug %}"},
            code="template",
        )
    try:
        return _ENGINE.from_string(source).render(Context(context, autoescape=False))
    # A user's template: a syntax error, an {% include %}, a filter failing on its value…
    except Exception as error:
        raise ValidationError(
            gettext("The template has an error: %(error)s") % {"error": error},
            code="template",
        ) from None


def render_letter(letter: Letter, customer: Customer) -> tuple[str, str]:
    """(subject, body) of `letter` for `customer`, in the customer's language.

    Raises ValidationError({"subject"|"body": message}) for a template error or a subject
    with a line break.
    """
    context = letter_context(customer)
    with translation.override(customer.language or None):
        try:
            subject = _render(letter.subject, context).strip()
        except ValidationError as error:
            raise ValidationError({"subject": error}) from None
        try:
            body = _render(letter.body, context)
        except ValidationError as error:
            raise ValidationError({"body": error}) from None
    if "\r" in subject or "\n" in subject:
        raise ValidationError(
            {
                "subject": ValidationError(
                    gettext(
                        "The subject may not contain line breaks (the customer's address has "
                        "several lines: use it in the body)."
                    ),
                    code="line_break",
                )
            }
        )
    return subject, body


def sample_customer() -> Customer:
    """An unsaved customer to try a letter's templates on (with a multi-line address)."""
    return Customer(
        name=gettext("Sample customer Ltd"),
        emails=["first@customer.example", "second@customer.example"],
        language=translation.get_language() or "en",
        address="Przykładowa 1\n00-001 Warszawa",
    )


class LetterForm(forms.ModelForm):
    class Meta:
        model = Letter
        fields = ["subject", "body"]
        widgets = {"body": forms.Textarea(attrs={"rows": 14})}
        help_texts = {
            "body": _(
                "Plain text. Placeholders: {{ customer.name }}, {{ customer.address }}, "
                "{{ customer.emails }}."
            )
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["body"].strip = False  # plain text: its leading and trailing lines count

    def clean_body(self) -> str:
        return self.cleaned_data["body"].replace("\r\n", "\n")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        trial = Letter(subject=cleaned.get("subject", ""), body=cleaned.get("body", ""))
        render_letter(trial, sample_customer())  # its ValidationError lands on the field
        return cleaned
