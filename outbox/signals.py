"""Signals: other apps learn what became of a message without outbox knowing them."""

from django.dispatch import Signal

# Sent when a message is sent, failed, cancelled or queued again: sender=OutgoingMessage,
# message=, state=.
message_state_changed = Signal()
