"""`manage.py send_document --user USER --invoice NUMBER [--to ADDRESS …] [--send-at ISO-8601]
[--wait] [--json]`: what the composer does, from a shell (issue 12, item 8)."""

from __future__ import annotations

import json
import time
import zoneinfo
from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from accounts.models import User
from invoices.models import Invoice
from invoices.services import invoice_compose_defaults, invoice_send_one
from outbox.models import OutgoingMessage
from outbox.services import send_after_clean
from smtp_settings.explain import explain
from smtp_settings.resolve import SenderConfigError


class Command(BaseCommand):
    help = (
        "Send one invoice with its PDF through the user's sender (any mode), as the composer "
        "does; prints the message id, or with --wait --json its final state."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="code of the sending user")
        parser.add_argument("--invoice", required=True, help="the invoice's number")
        parser.add_argument(
            "--to",
            action="append",
            default=[],
            metavar="ADDRESS",
            help="a recipient (repeat for more); default: the customer's addresses that did "
            "not bounce",
        )
        parser.add_argument(
            "--send-at",
            metavar="ISO-8601",
            help="hold the message until then, e.g. 2026-05-04T09:30 (in the user's time zone) "
            "or 2026-05-04T09:30+02:00",
        )
        parser.add_argument("--wait", action="store_true", help="wait until sent or failed")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--timeout", type=float, default=600, help="seconds --wait waits")

    def handle(self, *args, **options) -> None:
        user = User.objects.get_for_command(options["user"])
        invoice = Invoice.objects.select_related("customer").filter(number=options["invoice"])
        invoice = invoice.first()
        if invoice is None:
            raise CommandError(_("Unknown invoices: %(numbers)s") % {"numbers": options["invoice"]})
        send_after = _send_at(options["send_at"], user=user) if options["send_at"] else None
        defaults = invoice_compose_defaults(invoice=invoice, user=user)
        to = options["to"] or [a for a in defaults["to"].split(", ") if a]
        try:
            message = invoice_send_one(
                user=user,
                invoice=invoice,
                to=to,
                subject=defaults["subject"],
                body=defaults["body"],
                send_after=send_after,
            )
        except SenderConfigError as error:
            raise CommandError(str(error.message)) from None
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from None
        if options["wait"]:  # --timeout counts from the time it is due
            held = (send_after - timezone.now()).total_seconds() if send_after else 0
            deadline = time.monotonic() + max(held, 0) + options["timeout"]
            while not message.is_final:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
                message.refresh_from_db()
        result = _state(message)
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(f"message {message.pk}: {result['state']}")
        if options["wait"] and not message.is_final:
            raise CommandError(_("The message is not sent yet."))


def _send_at(text: str, *, user: User) -> datetime | None:
    """--send-at read as ISO 8601; without an offset, in the user card's time zone. A time
    that does not exist there or is ambiguous (a DST change), or one send_after_clean refuses,
    is a CommandError saying why."""
    try:
        moment = parse_datetime(text.strip())
    except ValueError:  # well formed but impossible: 2026-02-30
        moment = None
    if moment is None:
        raise CommandError(
            _("--send-at: “%(value)s” is not a date and time such as 2026-05-04T09:30.")
            % {"value": text[:60]}
        )
    if timezone.is_naive(moment):
        try:
            zone = zoneinfo.ZoneInfo(user.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # a name this system lost
            zone = timezone.get_default_timezone()
        # Both folds give the same instant only if the time is neither skipped nor repeated.
        early, late = (moment.replace(fold=f, tzinfo=zone) for f in (0, 1))
        if early.utcoffset() != late.utcoffset():
            raise CommandError(
                _(
                    "--send-at: %(value)s does not exist or is ambiguous in the time zone "
                    "%(zone)s (a clock change); give the offset, e.g. %(value)s+01:00."
                )
                % {"value": moment.isoformat(), "zone": user.time_zone}
            )
        moment = early
    try:
        return send_after_clean(moment)
    except ValidationError as error:
        raise CommandError("--send-at: " + " ".join(error.messages)) from None


def _state(message: OutgoingMessage) -> dict:
    message.refresh_from_db()
    invoice = Invoice.objects.filter(pk=message.related_id).first()
    explanation = (
        explain(message.explanation, message.explanation_params)["title"]
        if message.explanation
        else ""
    )
    return {
        "message": message.pk,
        "state": message.state,
        "to": message.to,
        "invoice": invoice.number if invoice else None,
        "invoice_state": invoice.send_state if invoice else None,
        "possibly_sent_twice": message.possibly_duplicated,
        "send_after": message.send_after.isoformat() if message.send_after else None,
        "last_reply": message.last_reply,
        "explanation": explanation,
    }
