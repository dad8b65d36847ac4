"""Reads: a user's messages and events (staff see everyone's)."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import User

from .models import Event, OutgoingMessage


def events_visible_to(*, user: User, owner_code: str = "") -> QuerySet[Event]:
    events = Event.objects.select_related("user", "message").prefetch_related("message__related")
    if not user.is_staff:
        return events.filter(user=user)
    return events.filter(user__code=owner_code) if owner_code else events


def message_visible_to(*, user: User, pk: int) -> OutgoingMessage:
    """A message its sender or staff may see; 404 for anyone else (no hint it exists)."""
    messages = OutgoingMessage.objects.select_related("user")
    if not user.is_staff:
        messages = messages.filter(user=user)
    return get_object_or_404(messages, pk=pk)


def outbox_messages_filtered(
    *,
    state: str = "",
    user_code: str = "",
    job: int | None = None,
    since=None,
    until=None,
    text: str = "",
) -> QuerySet[OutgoingMessage]:
    """Staff's outbox list: every user's messages, newest first, narrowed by the filters given.
    `text` matches the subject or a recipient (To, CC, BCC are JSON lists: searched as text)."""
    messages = OutgoingMessage.objects.select_related("user", "job")
    if state:
        messages = messages.filter(state=state)
    if user_code:
        messages = messages.filter(user__code__iexact=user_code)
    if job:
        messages = messages.filter(job_id=job)
    if since:
        messages = messages.filter(created_at__date__gte=since)
    if until:
        messages = messages.filter(created_at__date__lte=until)
    if text:
        messages = messages.filter(
            Q(subject__icontains=text)
            | Q(to__icontains=text)
            | Q(cc__icontains=text)
            | Q(bcc__icontains=text)
        )
    return messages
