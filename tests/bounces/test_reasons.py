"""Why a recipient failed (issue 16, item 1): the reason from the server's words first, then the
status (bounces/reasons.py). The corpus-wide agreement with Sisimai is in test_corpus.py."""

from __future__ import annotations

import pytest

from bounces.parse import BounceRecipient
from bounces.reasons import REASONS, classify, explanation_key
from smtp_settings.explain import CATALOGUE


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason"),
    [
        (
            "5.1.1",
            "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown",
            "user_unknown",
        ),
        (
            "5.0.0",
            "550 Requested action not taken: mailbox unavailable (mailbox full)",
            "mailbox_full",
        ),
        ("5.2.2", "", "mailbox_full"),
        ("5.1.2", "Host or domain name not found. Name service error", "host_unknown"),
        (
            "5.7.1",
            "554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org",
            "blocked",
        ),
        (
            "5.7.26",
            "550-5.7.26 Unauthenticated email is not accepted due to DMARC policy",
            "blocked",
        ),
        ("5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering", "spam"),
        ("4.4.7", "", "expired"),
        ("5.3.4", "552 5.3.4 Message size exceeds fixed maximum message size", "message_too_big"),
        ("5.2.1", "550 5.2.1 The email account that you tried to reach is disabled", "suspended"),
        ("5.0.0", "550 something nobody recognises", "system"),
        ("", "", "rejected"),
    ],
)
def test_classify(status, diagnostic, reason):
    assert classify(status=status, diagnostic=diagnostic, permanent=True) == reason


def test_a_recipient_carries_its_reason():
    recipient = BounceRecipient(
        address="a@b.example", permanent=True, status="5.2.2", diagnostic="552 Mailbox full"
    )
    assert recipient.reason == "mailbox_full"


def test_every_reason_has_an_explanation_in_the_catalogue():
    for reason in REASONS:
        assert explanation_key(reason) in CATALOGUE, reason
