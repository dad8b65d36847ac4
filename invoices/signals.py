"""Keep an invoice's send state in step with its message (outbox.signals)."""

from django.contrib.contenttypes.models import ContentType
from django.dispatch import receiver
from django.utils import timezone

from outbox.models import MessageState, OutgoingMessage
from outbox.signals import message_state_changed

from .models import Invoice, SendState

_STATES = {
    MessageState.SENT: SendState.SENT,
    MessageState.FAILED: SendState.FAILED,
    MessageState.CANCELLED: SendState.UNSENT,
}


@receiver(message_state_changed, sender=OutgoingMessage)
def invoice_follows_its_message(sender, *, message: OutgoingMessage, state: str, **kwargs) -> None:
    # By id, not get_for_model(): a long-lived worker must not trust an id it cached once.
    if message.related_type_id is None:
        return
    if ContentType.objects.get_for_id(message.related_type_id).model_class() is not Invoice:
        return
    new_state = _STATES.get(state)
    if new_state is None:
        return
    fields = {"send_state": new_state}
    if new_state == SendState.SENT:
        fields["sent_at"] = timezone.now()
    Invoice.objects.filter(pk=message.related_id).update(**fields)
