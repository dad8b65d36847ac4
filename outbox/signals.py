"""Signals: other apps learn what became of a message without outbox knowing them."""

from django.dispatch import Signal

# Sent when a message is sent, failed, cancelled or queued again: sender=OutgoingMessage,
# message=, state=.
message_state_changed = Signal()

# Sent when a message that went out came back undelivered for good (a hard bounce):
# sender=OutgoingMessage, message=, addresses= (the recipients that bounced, lower case).
message_bounced = Signal()

# Sent inside a staff retry's transaction, once the failed message is queued again and before
# it is handed to the worker: sender=OutgoingMessage, message=. A receiver that finds the
# business object sent again meanwhile (by another message) raises outbox.staff
# StaffActionRefused, which rolls the retry back, so the object never goes twice.
message_retry_requested = Signal()

# Sent by every sweep (outbox_sweep), outside any transaction: sender=OutgoingMessage. A
# receiver repairs what should follow a message's final state and does not (e.g. an invoice
# still "sending" although its message ended, left by a crash between two commits) and
# returns how many rows it repaired.
sweep_reconcile = Signal()
