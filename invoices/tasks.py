"""Celery tasks of bulk invoice sending: ids in, one service call."""

from __future__ import annotations

from celery import shared_task

from .services import invoices_job_prepare, invoices_render_pdfs


@shared_task(name="invoices.tasks.prepare_job", acks_late=True)
def prepare_job(job_id: int) -> int:
    """Build a job's invoice messages chunk by chunk; safe to run again after a crash."""
    return invoices_job_prepare(job_id=job_id)


@shared_task(name="invoices.tasks.render_pdfs", acks_late=True)
def render_pdfs(invoice_ids: list[int]) -> int:
    """Render the PDFs of issued invoices (invoices_issued); a kept one is not rendered again."""
    return invoices_render_pdfs(invoice_ids=invoice_ids)
