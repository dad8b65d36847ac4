"""Letters' one-click unsubscribe (RFC 8058): the signed link, the headers and body line a letter
carries, and the opt-out the link's POST records.

Only letters carry it: invoices are transactional (RFC 8058 §1: the header is for bulk mail),
so they carry no link and an opted-out customer still gets them.

The token is the customer's and the letter's ids signed with the secret key under a salt of
its own (django.core.signing): it cannot be made for another customer, and it does not expire,
because people click the links of old letters, and all it can ever do is opt that one customer
out of letters.
"""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.encoding import iri_to_uri
from django.utils.translation import gettext

from outbox.models import BulkJob, MessageState, OutgoingMessage
from outbox.services import bulk_job_progress
from outbox.signals import message_state_changed

from .models import Customer, Letter, LetterDelivery

_SALT = "directo_mail.invoices.unsubscribe"
# RFC 8058 §3.1: the body a mailbox provider POSTs to the List-Unsubscribe URL.
ONE_CLICK = "List-Unsubscribe=One-Click"


def unsubscribe_token(*, customer_id: int, letter_id: int) -> str:
    """`<customer>-<letter>:<signature>`: names the customer (and, for the record, the letter)."""
    return signing.Signer(salt=_SALT).sign(f"{customer_id}-{letter_id}")


def unsubscribe_token_read(token: str) -> tuple[int, int] | None:
    """(customer id, letter id) of a token we made, or None for a forged or altered one."""
    try:
        value = signing.Signer(salt=_SALT).unsign(token)
    except signing.BadSignature:
        return None
    customer, _, letter = value.partition("-")
    # isdigit() alone admits "²", which int() refuses: ASCII digits only.
    if not all(part.isascii() and part.isdigit() for part in (customer, letter)):
        return None
    return int(customer), int(letter)


def unsubscribe_url(*, customer_id: int, letter_id: int) -> str:
    """The absolute link, on PUBLIC_BASE_URL (never a request's Host header), in ASCII."""
    token = unsubscribe_token(customer_id=customer_id, letter_id=letter_id)
    path = reverse("invoices:unsubscribe", kwargs={"token": token})
    return iri_to_uri(settings.PUBLIC_BASE_URL + path)


def letter_unsubscribe(*, letter: Letter, customer: Customer, company: str) -> tuple[str, dict]:
    """The line that ends the letter's text, in the customer's language, and the message's
    headers: List-Unsubscribe with the https link only (RFC 8058 §3.1; a mailto: we could not
    process is left out) and List-Unsubscribe-Post for the one-click POST."""
    url = unsubscribe_url(customer_id=customer.pk, letter_id=letter.pk)
    with translation.override(customer.language):
        line = gettext("To receive no more letters from %(company)s, open this link: %(url)s") % {
            "company": company,
            "url": url,
        }
    return line, {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": ONE_CLICK}


def customer_letters_opt_out(*, customer_id: int, letter_id: int) -> Customer | None:
    """Opt the customer out of letters (idempotent: the first time is kept) and cancel their
    letters still waiting in the queue, so a running job sends them nothing more. Sends no mail
    (a confirmation would let anyone with a link mail-bomb). None if the customer is gone."""
    with transaction.atomic():
        customer = Customer.objects.select_for_update().filter(pk=customer_id).first()
        if customer is None:
            return None
        if customer.letters_opted_out_at is None:
            customer.letters_opted_out_at = timezone.now()
            customer.letters_opted_out_letter = Letter.objects.filter(pk=letter_id).first()
            # update(), not save(): save() would also rewrite the bounced addresses.
            Customer.objects.filter(pk=customer.pk).update(
                letters_opted_out_at=customer.letters_opted_out_at,
                letters_opted_out_letter=customer.letters_opted_out_letter,
            )
        waiting = list(
            OutgoingMessage.objects.filter(
                pk__in=LetterDelivery.objects.filter(customer_id=customer.pk).values("message_id"),
                state=MessageState.QUEUED,
            )
        )
        # The worker claims queued → sending by the same kind of conditional UPDATE: of the
        # two, one wins; a letter already being sent is not called back.
        OutgoingMessage.objects.filter(
            pk__in=[m.pk for m in waiting], state=MessageState.QUEUED
        ).update(state=MessageState.CANCELLED, updated_at=timezone.now())
        for message in waiting:
            message_state_changed.send(
                OutgoingMessage, message=message, state=MessageState.CANCELLED
            )
        for job in BulkJob.objects.filter(pk__in={m.job_id for m in waiting if m.job_id}):
            bulk_job_progress(job=job)  # finished, if that was all it had left
    return customer


def customers_letters_resubscribe(*, customer_ids: list[int]) -> int:
    """Staff clear the opt-out (the customer asked for letters again). Returns how many."""
    return Customer.objects.filter(pk__in=customer_ids, letters_opted_out_at__isnull=False).update(
        letters_opted_out_at=None, letters_opted_out_letter=None
    )
