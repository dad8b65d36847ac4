"""The card e-mail's verification link (issue 11, item 3): nobody sends From an address through
the platform relay without proving they receive mail at it.

The link carries a token signed with SECRET_KEY (django.core.signing, its own salt) that names
the user, the address and the user's verification state when it was made, and expires after
EMAIL_VERIFICATION_MAX_AGE seconds. It is refused when forged or expired, when the card's
e-mail is no longer that address, and once used: confirming changes the state it names.

Opening it needs no login: the token itself is the proof (it reached that mailbox), and the
mail may well be read on a phone or in another browser. Only a POST from the page it opens
confirms, so a mail scanner that follows links (as many companies' filters do) cannot verify
an address on its own.

The link is mailed with the platform's own sender (smtp_settings.resolve.platform_sender): never
to the card's BCC, and counted like any relay mail, plus EMAIL_VERIFICATION_MAILS_PER_HOUR/_DAY.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User

SALT = "accounts.verification.email"  # as when it lived in accounts: links already mailed work

INVALID = "invalid"
EXPIRED = "expired"
ADDRESS_CHANGED = "address_changed"
USED = "used"


class VerificationError(Exception):
    """The link cannot verify anything; `message` says why, in the active language."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.message = {
            INVALID: _(
                "This verification link is not valid. Open the link exactly as it was mailed, "
                "or send a new one from your user card."
            ),
            EXPIRED: _("This verification link has expired. Send a new one from your user card."),
            ADDRESS_CHANGED: _(
                "This verification link was sent for an e-mail address that is no longer the "
                "one on the user card. Send a new link from the card."
            ),
            USED: _(
                "This verification link has already been used. Nothing more to do if the card "
                "says the e-mail is verified; otherwise send a new link from the card."
            ),
        }[code]
        super().__init__(self.message)


@dataclass(frozen=True)
class Verification:
    """What a valid link verifies."""

    user: User
    address: str


def _state(user: User) -> str:
    """Changes whenever an address is verified: a used link names an older state."""
    return user.email_verified_at.isoformat() if user.email_verified_at else ""


def verification_token(user: User) -> str:
    """A token for the user's current card e-mail."""
    payload = {"u": user.pk, "e": user.email, "s": _state(user)}
    return signing.dumps(payload, salt=SALT, compress=True)


def verification_check(token: str, *, for_update: bool = False) -> Verification:
    """The user and address `token` verifies; raises VerificationError."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=settings.EMAIL_VERIFICATION_MAX_AGE)
    except signing.SignatureExpired:
        raise VerificationError(EXPIRED) from None
    except signing.BadSignature:
        raise VerificationError(INVALID) from None
    if not isinstance(payload, dict) or not {"u", "e", "s"} <= payload.keys():
        raise VerificationError(INVALID)
    users = User.objects.select_for_update() if for_update else User.objects
    user = users.filter(pk=payload["u"], is_active=True).first()
    if user is None:
        raise VerificationError(INVALID)
    if not user.email or user.email != payload["e"]:
        raise VerificationError(ADDRESS_CHANGED)
    if _state(user) != payload["s"]:
        raise VerificationError(USED)
    return Verification(user=user, address=payload["e"])


@transaction.atomic
def email_verification_confirm(*, token: str) -> Verification:
    """Mark the address of a valid token verified, once (the user's row is locked meanwhile)."""
    verification = verification_check(token, for_update=True)
    user = verification.user
    user.email_verified_address = verification.address
    user.email_verified_at = timezone.now()
    user.save(update_fields=["email_verified_address", "email_verified_at"])
    return verification


def email_verification_send(*, user: User, link_for: Callable[[str], str]):
    """Mail the link for the user's card e-mail (`link_for(token)` makes it absolute).

    Returns the OutgoingMessage. Raises ValidationError when there is nothing to verify, and
    outbox.limits.LimitReached past the verification or relay limits (nothing is sent then).
    """
    from outbox.services import outbox_enqueue
    from smtp_settings.resolve import platform_sender
    from smtp_settings.selectors import company_get, platform_data

    if not user.email:
        raise ValidationError(_("Enter your e-mail on the card and save it first."))
    if user.email_verified:
        raise ValidationError(_("Your e-mail is already verified."))
    company = company_get()
    expires = timezone.localtime(
        timezone.now() + datetime.timedelta(seconds=settings.EMAIL_VERIFICATION_MAX_AGE)
    )
    body = _(
        "Hello,\n\n"
        "%(name)s (user %(code)s%(company)s) asked to send mail from the address %(email)s "
        "through the platform's mail server.\n\n"
        "If this is your address and you agree, open this link and confirm:\n"
        "%(link)s\n\n"
        "The link is valid until %(expires)s and can be used once.\n\n"
        "If you did not ask for this, ignore this e-mail: without the link, no mail is sent "
        "from your address.\n"
    ) % {
        "name": user.name or user.code,
        "code": user.code,
        "company": f", {company.name}" if company else "",
        "email": user.email,
        "link": link_for(verification_token(user)),
        "expires": expires.strftime("%Y-%m-%d %H:%M %Z"),
    }
    return outbox_enqueue(
        user=user,
        to=[user.email],
        subject=_("Confirm your e-mail address for sending"),
        body_text=body,
        sender=platform_sender(platform_data()),
        purpose="verification",
    )
