"""The sending error tree (house style 2).

SendError → TransientSendError (retried with backoff) and PermanentSendError (failed now, an
Event). Each carries the server's raw reply and an `Explanation` key from
`smtp_settings.explain`, rendered in the reader's language when shown. SenderConfigError
(smtp_settings.resolve) stands apart: a configuration is never retried.
"""

from __future__ import annotations


class SendError(Exception):
    """Delivery failed. `reply` is the server's raw answer (never holds a secret)."""

    transient = False
    # The whole message had gone to the server when the connection failed, before its reply:
    # the server may have taken it, so sending it again may deliver it twice.
    maybe_delivered = False

    def __init__(self, reply: str, *, explanation: str, params: dict | None = None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.explanation = explanation  # a key of smtp_settings.explain.CATALOGUE
        self.params = params or {}


class TransientSendError(SendError):
    """Worth another try later: network trouble, timeouts, 4xx replies."""

    transient = True


class PermanentSendError(SendError):
    """Will fail again as it is: 5xx replies, authentication, TLS and certificate errors."""
