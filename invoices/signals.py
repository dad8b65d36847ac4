"""Keep an invoice's send state in step with its message (outbox.signals)."""

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models.functions import Cast
from django.dispatch import receiver
from django.utils import timezone
from django.utils.translation import gettext as _

from outbox.compiled import RowUpdate
from outbox.models import MessageState, OutgoingMessage
from outbox.signals import (
    message_bounced,
    message_retry_requested,
    message_state_changed,
    sweep_reconcile,
)
from outbox.staff import StaffActionRefused

from .models import Customer, Invoice, SendState

_STATES = {
    MessageState.SENT: SendState.SENT,
    MessageState.FAILED: SendState.FAILED,
    MessageState.CANCELLED: SendState.UNSENT,
}


def _related_model(message: OutgoingMessage) -> type | None:
    """The model of what the message is about. By the stored id, not get_for_model(): a
    long-lived worker must not trust a content type id it cached once."""
    if message.related_type_id is None or not message.related_id:
        return None
    return ContentType.objects.get_for_id(message.related_type_id).model_class()


def _related(message: OutgoingMessage) -> Invoice | Customer | None:
    """The invoice or customer the message is about, or None."""
    model = _related_model(message)
    if model not in (Invoice, Customer):
        return None
    return model.objects.filter(pk=message.related_id).first()


@receiver(message_bounced, sender=OutgoingMessage)
def bounce_marks_invoice_and_customer(
    sender, *, message: OutgoingMessage, addresses: list[str], **kwargs
) -> None:
    """S7.4: the invoice shows "bounced"; the customer's address is flagged for later jobs."""
    related = _related(message)
    if related is None:
        return
    if isinstance(related, Invoice):
        Invoice.objects.filter(pk=related.pk).update(send_state=SendState.BOUNCED)
        customer = related.customer
    else:
        customer = related
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    known = {e.lower() for e in customer.emails}
    today = timezone.now().date().isoformat()
    flagged = {a: today for a in addresses if a.lower() in known}
    if flagged:
        customer.bounced_emails = {**customer.bounced_emails, **flagged}
        customer.save(update_fields=["bounced_emails"])


@receiver(message_state_changed, sender=OutgoingMessage)
def invoice_follows_its_message(sender, *, message: OutgoingMessage, state: str, **kwargs) -> None:
    if _related_model(message) is not Invoice:
        return
    new_state = _STATES.get(state)
    if new_state is None:
        return
    if new_state == SendState.SENT:  # every mail of a job: the statement is compiled once
        _INVOICE_SENT.run(
            {"send_state": new_state, "sent_at": timezone.now()}, {"pk": int(message.related_id)}
        )
    else:
        Invoice.objects.filter(pk=message.related_id).update(send_state=new_state)


_INVOICE_SENT = RowUpdate(Invoice, sets=("send_state", "sent_at"), where="{pk} = %s")


@receiver(message_retry_requested, sender=OutgoingMessage)
def invoice_claimed_by_retry(sender, *, message: OutgoingMessage, **kwargs) -> None:
    """Staff retry an invoice's failed message: the invoice is claimed again (failed → queued)
    by one conditional UPDATE in the retry's transaction. If it was sent again meanwhile (the
    composer, a later bulk job) it is no longer "failed", and the retry is refused, so the
    invoice does not go twice."""
    if _related_model(message) is not Invoice:
        return
    if not Invoice.objects.filter(pk=message.related_id, send_state=SendState.FAILED).update(
        send_state=SendState.QUEUED, job=message.job_id
    ):
        raise StaffActionRefused(
            _(
                "This invoice was sent again meanwhile (or is being sent), so this old message "
                "is not retried: the invoice would go twice."
            )
        )


@receiver(sweep_reconcile, sender=OutgoingMessage)
def invoices_reconcile(sender, **kwargs) -> int:
    """Invoices still "sending" (queued) although their message ended: given that message's
    state. Since the message's final state and the invoice's commit together
    (outbox.services._deliver, _fail) no crash leaves such a pair; this repairs any older one
    and anything written behind the services' back. An invoice claimed by a job still being
    built, or whose last message is not its claim's (another job's), is left alone; each
    repair is one conditional UPDATE on the state it read, so a new claim is never undone."""
    about = OutgoingMessage.objects.filter(
        related_type=ContentType.objects.get_for_model(Invoice),
        related_id=Cast(models.OuterRef("pk"), models.CharField()),
    )
    last = about.order_by("-pk")
    stuck = (
        Invoice.objects.filter(send_state=SendState.QUEUED)
        .filter(models.Q(job__isnull=True) | models.Q(job__prepared=True))
        .exclude(models.Exists(about.filter(state__in=(MessageState.QUEUED, MessageState.SENDING))))
        .annotate(
            last_state=models.Subquery(last.values("state")[:1]),
            last_job=models.Subquery(last.values("job_id")[:1]),
            last_sent_at=models.Subquery(last.values("sent_at")[:1]),
        )
        .filter(last_state__in=list(_STATES))
        .values_list("pk", "job_id", "last_state", "last_job", "last_sent_at")
    )
    repaired = 0
    for pk, job_id, state, message_job_id, sent_at in stuck:
        if job_id != message_job_id:
            continue
        fields = {"send_state": _STATES[state]}
        if state == MessageState.SENT:
            fields["sent_at"] = sent_at
        repaired += Invoice.objects.filter(pk=pk, send_state=SendState.QUEUED, job=job_id).update(
            **fields
        )
    return repaired
