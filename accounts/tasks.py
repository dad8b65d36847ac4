"""Celery tasks of accounts: keep Microsoft 365 sign-ins healthy."""

from __future__ import annotations

from celery import shared_task

from . import microsoft365


@shared_task
def microsoft365_refresh() -> dict[str, int]:
    """Periodic (beat): refresh every connection; a refusal becomes an Event for its user."""
    return microsoft365.refresh_all()
