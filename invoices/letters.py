"""Letters to customers: rendering a letter with the sandboxed placeholder language, who may
change one, and its form.

A letter sees plain strings only — `customer.name`, `customer.address`, `customer.emails`
(joined) — never a model instance, so no placeholder can walk to other data. The language
(directo_mail.placeholders) has no tags: a letter stored for the old Django-template renderer
that uses `{% … %}` or another name fails with a message naming it, on its page and when sent.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils import translation
from django.utils.translation import gettext

from directo_mail.placeholders import TemplateError, placeholders_list, template_render
from mail_templates.models import MailTemplateKind
from mail_templates.selectors import mail_template_source

from .models import Customer, Letter

PLACEHOLDERS = ("customer.name", "customer.address", "customer.emails")


def letter_context(customer: Customer) -> dict[str, str]:
    """What a letter's placeholders may use: plain strings, no ORM object."""
    return {
        "customer.name": str(customer.name or ""),
        "customer.address": str(customer.address or ""),
        "customer.emails": ", ".join(str(email) for email in (customer.emails or [])),
    }


def letter_editable_by(*, letter: Letter, user) -> bool:
    """Its author and staff may change, send (and in the admin delete) a letter; every user may
    read it (letters are the company's)."""
    return bool(user.is_staff or (letter.created_by_id and letter.created_by_id == user.pk))


def _render(source: str, context: dict[str, str], customer: Customer) -> str:
    try:
        return template_render(source, context)
    except TemplateError as error:
        if error.code != "output_too_long":
            raise
        # The same template fits for other customers: name the one whose data is too long.
        raise TemplateError(
            gettext("For the customer “%(customer)s”: %(error)s")
            % {"customer": customer.name[:100], "error": error.message},
            code=error.code,
        ) from None


def render_letter(letter: Letter, customer: Customer) -> tuple[str, str]:
    """(subject, body) of `letter` for `customer`: plain text, never HTML-escaped.

    Raises ValidationError({"subject"|"body": message}) for a template error, a text past the
    output bound, or a subject with a line break.
    """
    context = letter_context(customer)
    try:
        subject = _render(letter.subject, context, customer).strip()
    except ValidationError as error:
        raise ValidationError({"subject": error}) from None
    try:
        body = _render(letter.body, context, customer)
    except ValidationError as error:
        raise ValidationError({"body": error}) from None
    # Every line break of str.splitlines() (VT, FF, FS, NEL, U+2028…): the email package
    # refuses each one in a header, which would fail the message in the worker unexplained.
    if len(subject.splitlines()) > 1:
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


def letter_errors(error: ValidationError) -> list[str]:
    """A render error as "Subject: …" / "Body: …" lines, for a page or a flash message."""
    lines = []
    for field, messages in error.message_dict.items():
        label = Letter._meta.get_field(field).verbose_name if field in ("subject", "body") else ""
        lines += [f"{str(label).capitalize()}: {m}" if label else m for m in messages]
    return lines


def letter_render_error(letter: Letter) -> ValidationError | None:
    """Why `letter` does not render for the sample customer, or None when it does."""
    try:
        render_letter(letter, sample_customer())
    except ValidationError as error:
        return error
    return None


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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None and not self.is_bound:
            # A new letter starts with the company's "letter" mail template in the page's
            # language, placeholders as written (they are filled per customer when sent).
            source = mail_template_source(
                kind=MailTemplateKind.LETTER, language=translation.get_language()
            )
            self.initial.setdefault("subject", source.subject)
            self.initial.setdefault("body", source.body)
        self.fields["body"].strip = False  # plain text: its leading and trailing lines count
        self.fields["body"].help_text = gettext(
            "Plain text. Placeholders: %(placeholders)s. Filters: |upper, |lower, |title, "
            '|capfirst, |default:"text".'
        ) % {"placeholders": placeholders_list(PLACEHOLDERS)}

    def clean_body(self) -> str:
        return self.cleaned_data["body"].replace("\r\n", "\n")

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        trial = Letter(subject=cleaned.get("subject", ""), body=cleaned.get("body", ""))
        render_letter(trial, sample_customer())  # its ValidationError lands on the field
        return cleaned
