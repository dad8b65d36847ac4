"""Celery tasks: ids in, one service call; the retry policy is declared here."""

from __future__ import annotations

from celery import shared_task

from smtp_settings.errors import TransientSendError

from .services import outbox_send, outbox_send_batch, outbox_sweep, retry_delay


@shared_task(bind=True, acks_late=True, max_retries=None)
def send_message(self, message_id: int) -> str:
    """Deliver one message. Transient failures come back later; the row counts the attempts."""
    try:
        return outbox_send(message_id=message_id)
    except TransientSendError as error:
        raise self.retry(countdown=retry_delay(self.request.retries + 1), exc=error) from None


@shared_task(acks_late=True)
def send_batch(message_ids: list[int]) -> dict[str, int]:
    """Deliver a bulk job's batch over one connection; each message is claimed on its own."""
    return outbox_send_batch(message_ids=message_ids)


@shared_task
def sweep() -> int:
    """Periodic (beat): return claims abandoned by a worker that died mid-send, dispatch lost
    tasks and held messages whose time has come."""
    return outbox_sweep()
