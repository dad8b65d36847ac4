"""`manage.py bulk_send --user USER (--unsent | --invoices N,N,...) [--wait] [--json]`."""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from accounts.models import User
from invoices.models import Invoice
from invoices.services import MassMailingLocked, invoices_send
from outbox.models import JobState
from outbox.services import bulk_job_progress


class Command(BaseCommand):
    help = "Send invoices with their PDFs as a bulk job; prints the job id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="code of the sending user")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--unsent", action="store_true", help="every unsent invoice")
        which.add_argument("--invoices", help="invoice numbers, comma-separated")
        parser.add_argument(
            "--include-bounced",
            action="store_true",
            help="send also to customer addresses that bounced before (skipped by default)",
        )
        parser.add_argument("--wait", action="store_true", help="wait for the job to finish")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument("--timeout", type=float, default=3600, help="seconds --wait waits")

    def handle(self, *args, **options) -> None:
        user = User.objects.get_for_command(options["user"])
        invoice_ids = None
        if options["invoices"]:
            numbers = [n.strip() for n in options["invoices"].split(",") if n.strip()]
            found = dict(Invoice.objects.filter(number__in=numbers).values_list("number", "pk"))
            missing = [n for n in numbers if n not in found]
            if missing:
                raise CommandError(
                    _("Unknown invoices: %(numbers)s") % {"numbers": ", ".join(missing)}
                )
            invoice_ids = list(found.values())
        try:
            job = invoices_send(
                user=user,
                invoice_ids=invoice_ids,
                unsent=options["unsent"],
                include_bounced=options["include_bounced"],
            )
        except MassMailingLocked as error:
            raise CommandError(error.message) from None
        progress = bulk_job_progress(job=job)
        if options["wait"]:
            deadline = time.monotonic() + options["timeout"]
            while progress["state"] == JobState.RUNNING and time.monotonic() < deadline:
                time.sleep(0.5)
                job.refresh_from_db()
                progress = bulk_job_progress(job=job)
        if options["json"]:
            self.stdout.write(json.dumps(progress))
        else:
            self.stdout.write(
                f"job {job.pk}: {progress['total']} invoices, sent {progress['sent']}, "
                f"failed {progress['failed']}, remaining {progress['remaining']}, "
                f"{progress['seconds']} s"
            )
        if options["wait"] and progress["state"] == JobState.RUNNING:
            raise CommandError(_("The job is still running."))
