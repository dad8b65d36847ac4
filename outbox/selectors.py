"""Reads: a user's messages and events (staff see everyone's)."""

from __future__ import annotations

from django.db.models import QuerySet
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
