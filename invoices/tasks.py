"""Celery tasks of bulk invoice sending: ids in, one service call."""

from __future__ import annotations

from celery import shared_task

from .services import invoices_job_prepare


@shared_task(name="invoices.tasks.prepare_job", acks_late=True)
def prepare_job(job_id: int) -> int:
    """Build a job's invoice messages chunk by chunk; safe to run again after a crash."""
    return invoices_job_prepare(job_id=job_id)
