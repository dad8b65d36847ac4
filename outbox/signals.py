"""Signals: other apps learn what became of a message without outbox knowing them."""

from django.dispatch import Signal

# Sent when a message is sent, failed, cancelled or queued again: sender=OutgoingMessage,
# message=, state=.
message_state_changed = Signal()

# Sent when a message that went out came back undelivered for good (a hard bounce):
# sender=OutgoingMessage, message=, addresses= (the recipients that bounced, lower case).
message_bounced = Signal()
