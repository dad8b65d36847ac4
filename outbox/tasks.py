"""Celery tasks: ids in, one service call; the retry policy is declared here."""

from __future__ import annotations

from celery import shared_task

from smtp_settings.errors import TransientSendError

from .services import outbox_send, outbox_sweep, retry_delay


@shared_task(bind=True, acks_late=True, max_retries=None)
def send_message(self, message_id: int) -> str:
    """Deliver one message. Transient failures come back later; the row counts the attempts."""
    try:
        return outbox_send(message_id=message_id)
    except TransientSendError as error:
        raise self.retry(countdown=retry_delay(self.request.retries + 1), exc=error) from None


@shared_task
def sweep() -> int:
    """Periodic (beat): return claims abandoned by a worker that died mid-send."""
    return outbox_sweep()
